"""FreeAct's masked transform: exact when a type avoids the other types' dedicated dimensions,
with an error that grows with the energy leaking there; the general variant's per-type factors:
exact where they differ from the shared ones only outside a type's row space; learning lowers
the objective."""

import dataclasses

import numpy as np
import pytest
import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import FreeActSpec, QuantSpec
from freeact_export.quantize.freeact import ACT_CLIP_GRID, kron_dims, learn_freeact, type_masks
from freeact_export.transforms.apply import kron_apply, type_matrices, typed_activation_side
from freeact_export.transforms.hadamard import random_orthogonal

D1, D2 = 4, 8
D = D1 * D2


def _two_type_activations(leak: float, gen: torch.Generator):
    """Type-0 and type-1 activations whose transformed coordinates are confined to known blocks.

    Built in the transformed basis (z = x P) and mapped back with P⁻¹, so the test controls
    exactly how much energy type 0 puts into type 1's dedicated block.
    """
    p1, p2 = random_orthogonal(D1, 0), random_orthogonal(D2, 1)
    p_inv1, p_inv2 = torch.linalg.inv(p1), torch.linalg.inv(p2)
    z0 = torch.randn(200, D, dtype=torch.float64, generator=gen)
    z1 = torch.randn(200, D, dtype=torch.float64, generator=gen)
    dedicated_1 = torch.arange(D - 4, D)   # type 1's block
    dedicated_0 = torch.arange(0, 4)       # type 0's block
    z0[:, dedicated_1] *= leak
    z1[:, dedicated_0] = 0.0
    to_x = lambda z: kron_apply(z, p_inv1, p_inv2)  # noqa: E731  x = z P⁻¹
    return (p1, p2), (to_x(z0), to_x(z1)), (dedicated_0, dedicated_1)


def _masked_error(leak: float) -> float:
    gen = torch.Generator().manual_seed(0)
    (p1, p2), (x0, x1), (ded0, ded1) = _two_type_activations(leak, gen)
    masks = torch.ones(2, D, dtype=torch.float64)
    masks[0, ded1] = 0.0  # type 0 drops type 1's block
    masks[1, ded0] = 0.0
    w = torch.randn(6, D, dtype=torch.float64, generator=gen)
    w_folded = kron_apply(w, torch.linalg.inv(p1).T, torch.linalg.inv(p2).T)  # W P⁻ᵀ: one shared weight
    errors = []
    for k, x in enumerate((x0, x1)):
        approx = (kron_apply(x, p1, p2) * masks[k]) @ w_folded.T
        errors.append(torch.linalg.norm(approx - x @ w.T) / torch.linalg.norm(x @ w.T))
    return float(max(errors))


def test_masked_transform_is_exact_without_leakage():
    assert _masked_error(0.0) < 1e-6


def test_error_grows_with_leaked_energy():
    errors = [_masked_error(leak) for leak in (0.0, 0.01, 0.1, 0.5, 1.0)]
    assert errors == sorted(errors) and errors[-1] > 0.1


def test_masks_dedicate_blocks_where_one_type_dominates():
    energy = torch.ones(2, 64, dtype=torch.float64)
    energy[1, 10:12] = 100.0  # type 1 lives in dims 10, 11
    energy[0, 40:42] = 100.0
    masks = type_masks(energy, fraction=2 / 64)
    assert set(torch.nonzero(masks[0] == 0).flatten().tolist()) == {10, 11}
    assert set(torch.nonzero(masks[1] == 0).flatten().tolist()) == {40, 41}
    assert torch.equal(type_masks(energy[:1], 2 / 64), torch.ones(1, 64, dtype=torch.float64))


def test_masks_skip_dimensions_where_another_type_leaks():
    energy = torch.ones(2, 64, dtype=torch.float64)
    energy[1, 10:12] = 100.0  # type 1 dominates dims 10, 11 ...
    energy[0, 10:12] = 0.5  # ... but type 0 keeps half its mean energy there: zeroing it is an error
    energy[0, 20] = 1e-3
    energy[1, 20] = 2.0  # dim 20: type 0 keeps 0.1 % of its mean energy: safe to dedicate to type 1
    masks = type_masks(energy, fraction=2 / 64, max_leak=0.05)
    assert set(torch.nonzero(masks[0] == 0).flatten().tolist()) == {20}  # fewer than r where nothing else is safe


def test_kron_dims_are_balanced_factors():
    assert kron_dims(576) == (24, 24) and kron_dims(1536) == (32, 48) and kron_dims(4096) == (64, 64)


@pytest.mark.parametrize("single_type", [True, False])
def test_learning_lowers_the_objective(single_type):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, D, generator=gen)
    x[:, 3] *= 20.0  # an outlier channel: what smoothing and rotation are for
    w = torch.randn(24, D, generator=gen)
    stats = []
    for part in (x[:200], x[200:]):
        s = TypeStats.empty(D)
        s.add(part, keep=len(part), generator=gen)
        stats.append(s)
    tensors, weight_clip, info = learn_freeact("g", stats, [w], QuantSpec(4, True, "channel"),
                                               QuantSpec(4, True, "token"), FreeActSpec(steps=60, lr=1e-2),
                                               single_type, seed=0)
    assert info["objective_after"] < info["objective_before"]
    assert weight_clip.shape == (24, 1) and torch.all(weight_clip <= 1)
    assert tensors["clip"].shape == (2,)
    kept = info["kept_dims_per_type"]
    assert len(kept) == (1 if single_type else 2)
    assert ("masks" in tensors) == (min(kept) < D)  # stored exactly when the masked branch won



def _per_type_error(leak: float) -> float:
    """Relative output error of type-1 tokens whose factors differ from the shared ones where the type
    has (almost) no energy: x viewed [D1, D2] lives in columns < 3, plus `leak` elsewhere."""
    gen = torch.Generator().manual_seed(1)
    p1, p2 = random_orthogonal(D1, 0).double(), random_orthogonal(D2, 1).double()
    grid = torch.randn(50, D1, D2, dtype=torch.float64, generator=gen)
    grid[:, :, 3:] *= leak
    x = grid.reshape(50, D)
    # A_2 = P_2 + E with E's rows >= 3 only: X A = X P for every X confined to columns < 3.
    e = torch.zeros(D2, D2, dtype=torch.float64)
    e[3:] = torch.randn(D2 - 3, D2, dtype=torch.float64, generator=gen)
    tensors = {"kron_1": p1, "kron_2": p2, "type_kron_1": torch.stack([p1, p1]),
               "type_kron_2": torch.stack([p2, p2 + e])}
    w = torch.randn(6, D, dtype=torch.float64, generator=gen)
    w_folded = kron_apply(w, torch.linalg.inv(p1).T, torch.linalg.inv(p2).T)  # one shared weight: W P⁻ᵀ
    approx = typed_activation_side(x, torch.ones(50, dtype=torch.long), "kronecker", tensors) @ w_folded.T
    dense = x @ type_matrices("kronecker", tensors, 2, D)[1] @ w_folded.T  # the analysis path agrees
    assert torch.allclose(approx, dense, atol=1e-9)
    return float(torch.linalg.norm(approx - x @ w.T) / torch.linalg.norm(x @ w.T))


def test_per_type_factors_are_exact_on_the_types_row_space():
    assert _per_type_error(0.0) < 1e-6


def test_per_type_factor_error_grows_with_energy_outside_the_row_space():
    errors = [_per_type_error(leak) for leak in (0.0, 0.01, 0.1, 1.0)]
    assert errors == sorted(errors) and errors[-1] > 0.1


def _ordinary_and_sinks(seed: int) -> tuple[list[TypeStats], torch.Tensor]:
    """Two types' statistics (ordinary tokens; rank-2, massive sinks, every token kept) and a weight."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(300, D, generator=gen)
    sinks = torch.randn(40, 2, generator=gen) @ torch.randn(2, D, generator=gen) * 30.0
    w = torch.randn(24, D, generator=gen)
    stats = []
    for part in (x, sinks):
        s = TypeStats.empty(D)
        s.add(part, keep=len(part), generator=gen)
        stats.append(s)
    return stats, w


def test_general_variant_learns_per_type_factors_for_a_low_rank_type():
    stats, w = _ordinary_and_sinks(0)
    args = ("g", stats, [w], QuantSpec(4, True, "channel"), QuantSpec(4, True, "token"),
            FreeActSpec(steps=200, lr=3e-2, type_weighting="equal", clip_start="none"), False)
    tensors, _, info = learn_freeact(*args, seed=0, per_type=True)
    shared, _, shared_info = learn_freeact(*args, seed=0)  # same seed: the same first half and batches
    assert info["per_type_factors"] and "masks" not in tensors
    assert tensors["type_kron_1"].shape == (2, D1, D1) and tensors["type_kron_2"].shape == (2, D2, D2)
    assert info["objective_after"] < shared_info["objective_after"] < info["objective_before"]
    assert "type_kron_1" not in shared and not shared_info["per_type_factors"]


@pytest.mark.parametrize("branch_steps, weighting", [(1, "tokens"), (100, "equal")])
def test_branch_after_every_shared_step_falls_back_to_the_shared_result(branch_steps, weighting):
    """With branch_steps the shared transform learns all `steps` first, exactly as without any branch
    (same seed, same batches); the per-type branch is kept only where it ends lower, so the result is
    never worse than the shared learning alone, and where the branch loses it is that learning."""
    stats, w = _ordinary_and_sinks(1)
    shared = FreeActSpec(steps=100, lr=3e-2, clip_start="none", type_weighting=weighting, dedicated_fraction=0.0)
    args = ("g", stats, [w], QuantSpec(4, True, "channel"), QuantSpec(4, True, "token"))
    general, _, info = learn_freeact(*args, dataclasses.replace(shared, branch_steps=branch_steps), False,
                                     seed=0, per_type=True)
    alone, _, alone_info = learn_freeact(*args, shared, False, seed=0)
    assert info["objective_after"] <= alone_info["objective_after"]
    if not info["per_type_factors"]:
        assert info["objective_after"] == alone_info["objective_after"]
        assert all(torch.equal(general[k], alone[k]) for k in ("smooth", "kron_1", "kron_2", "clip"))
    if branch_steps == 100:  # enough steps for the low-rank sinks' own factors to pay, as in the test above
        assert info["per_type_factors"] and info["objective_after"] < alone_info["objective_after"]


def test_clip_start_searches_weight_rows_and_activation_clips():
    """With no learning steps the result is the starting point: the searched weight clip of each row of
    W diag(s) (P1 ⊗ P2)⁻ᵀ (QuaRot's rule, written here in float64 with np.kron), activation clips from the
    grid, and an objective below the unclipped start's on heavy-tailed data."""
    gen = torch.Generator().manual_seed(0)
    heavy = lambda *shape: torch.randn(*shape, generator=gen) * torch.randn(*shape, generator=gen).exp()  # noqa: E731
    x, w = heavy(400, D), heavy(24, D)
    stats = []
    for part in (x[:300], x[300:]):
        s = TypeStats.empty(D)
        s.add(part, keep=len(part), generator=gen)
        stats.append(s)
    args = ("g", stats, [w], QuantSpec(4, True, "channel"), QuantSpec(4, True, "token"))
    searched, clip, info = learn_freeact(*args, FreeActSpec(steps=0), False, seed=0)
    _, unclipped, start = learn_freeact(*args, FreeActSpec(steps=0, clip_start="none"), False, seed=0)
    assert torch.allclose(unclipped, torch.full_like(unclipped, 0.9933), atol=1e-4)
    s, p = searched["smooth"].double().numpy(), np.kron(searched["kron_1"].double(), searched["kron_2"].double())
    folded = (w.double().numpy() * s) @ np.linalg.inv(p).T
    best = []
    for row in folded:
        errors = [np.sum(np.abs(np.clip(np.round(row / (f * np.abs(row).max() / 7)), -8, 7)
                                * (f * np.abs(row).max() / 7) - row) ** 2.4) for f in 1 - np.arange(80) / 100]
        best.append(min(1 - np.argmin(errors) / 100, 0.9933))
    assert np.mean(np.abs(clip[:, 0].numpy() - np.array(best)) < 1e-4) >= 0.9  # float32 near-ties aside
    assert all(min(abs(float(c) - g) for g in (*ACT_CLIP_GRID[1:], 0.9933)) < 1e-4 for c in searched["clip"])
    assert info["objective_before"] < start["objective_before"]
