import numpy as np
import pytest
import torch

from freeact_export.calibrate.run import CalibrationRecord
from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import CalibSpec, QuantSpec
from freeact_export.evaluate.difficulty import plan_difficulty
from freeact_export.plan import GroupPlan, Plan
from freeact_export.token_types import TokenTypes


def _record_and_plan(x: torch.Tensor, kind: str, tensors: dict) -> tuple[CalibrationRecord, Plan]:
    stats = TypeStats.empty(x.shape[1])
    stats.add(x, keep=0, generator=torch.Generator())
    record = CalibrationRecord(TokenTypes(), [], {"g": [stats]}, CalibSpec(), None)
    group = GroupPlan("g", x.shape[1], kind, {**tensors, "clip": torch.ones(1)}, [], QuantSpec())
    return record, Plan("m", "w4a4", None, "single", [group])


def _signed_columns(rms: list[float], tokens: int, seed: int) -> torch.Tensor:
    """Tokens whose channel j is ±rms[j] with random signs: channel j's RMS over tokens is exactly rms[j]."""
    signs = torch.randint(0, 2, (tokens, len(rms)), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return signs.double() * torch.tensor(rms, dtype=torch.float64)


def _sylvester(n: int) -> np.ndarray:
    """The Sylvester Hadamard matrix of order n (a power of two), built here from [[1, 1], [1, -1]]."""
    h = np.ones((1, 1))
    while len(h) < n:
        h = np.kron(np.array([[1.0, 1.0], [1.0, -1.0]]), h)
    return h


def test_difficulty_closed_forms_and_invariances():
    # Channel norms (1, 1, 1, 3): mean 3/2, sample std sqrt((3 * 1/4 + 9/4) / 3) = 1, so std / mean = 2/3.
    x = _signed_columns([1.0, 1.0, 1.0, 3.0], 200, 0)
    before, after = plan_difficulty(*_record_and_plan(x, "identity", {}))["g"]["other"]
    assert before == after and before == pytest.approx(2 / 3, rel=1e-12)
    # Same value whatever the channel order, the overall scale and the number of tokens.
    moved = _signed_columns([3.0, 1.0, 1.0, 1.0], 50, 1) * 1e3
    assert plan_difficulty(*_record_and_plan(moved, "identity", {}))["g"]["other"][0] == pytest.approx(2 / 3, rel=1e-12)
    # One live channel among n = 16: norms (c, 0, ..., 0) give sample std c / sqrt(n), mean c / n, so sqrt(n) = 4;
    # any ±1 Hadamard rotation (whatever signs) spreads it evenly, c / 4 per channel, so 0 after.
    spike = _signed_columns([5.0] + [0.0] * 15, 300, 2)
    signs = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(3)).double() * 2 - 1
    before, after = plan_difficulty(*_record_and_plan(spike, "hadamard", {"signs": signs}))["g"]["other"]
    assert before == pytest.approx(4.0, rel=1e-12) and after == pytest.approx(0.0, abs=1e-12)


def test_difficulty_after_a_rotation_matches_the_rotated_tokens():
    """After: computed from second moments by the module; here from the rotated tokens themselves, in NumPy."""
    x = torch.randn(1000, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:, 0] *= 30  # one outlier channel
    x[:, 5] += 2.0  # and a channel with a mean
    signs = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1)).double() * 2 - 1
    before, after = plan_difficulty(*_record_and_plan(x, "hadamard", {"signs": signs}))["g"]["other"]

    def spread(tokens: np.ndarray) -> float:
        norms = np.sqrt(np.mean(tokens**2, axis=0))
        return float(np.std(norms, ddof=1) / np.mean(norms))

    data = x.numpy()
    assert before == pytest.approx(spread(data), rel=1e-10)
    assert after == pytest.approx(spread(data * signs.numpy() @ _sylvester(16) / 4), rel=1e-10)
    assert after < 0.2 * before


def test_hadamard_flattens_an_outlier_channel_and_scaling_alone_does_not_count():
    x = torch.randn(1000, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:, 0] *= 30
    _, rotated = plan_difficulty(*_record_and_plan(x, "hadamard", {"signs": torch.ones(16)}))["g"]["other"]
    before, scaled = plan_difficulty(*_record_and_plan(x, "identity", {"smooth": torch.full((16,), 7.0)}))["g"][
        "other"]
    assert rotated < 0.2 * before
    assert abs(scaled - before) < 1e-9


def test_masked_dimensions_are_left_out():
    x = torch.ones(100, 16, dtype=torch.float64)  # perfectly flat channel norms
    masks = torch.ones(1, 16)
    masks[0, :4] = 0
    _, after = plan_difficulty(*_record_and_plan(x, "identity", {"masks": masks}))["g"]["other"]
    assert after == 0.0  # the zeros of the mask would otherwise read as a spread of 0.60 (sample std)
