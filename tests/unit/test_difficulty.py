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


def test_difficulty_is_the_coefficient_of_variation_of_channel_norms():
    x = torch.randn(1000, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:, 0] *= 30  # one outlier channel
    record, plan = _record_and_plan(x, "identity", {})
    norms = x.pow(2).mean(0).sqrt()
    before, after = plan_difficulty(record, plan)["g"]["other"]
    assert before == after
    assert abs(before - float(norms.std() / norms.mean())) < 1e-9


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
    assert after == 0.0  # the zeros of the mask would otherwise read as a spread of 0.58
