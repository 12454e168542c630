import dataclasses

import pytest
import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import QuantSpec
from freeact_export.quantize.gptq import gptq_quantize, transformed_hessian
from freeact_export.quantize.planner import quantize_weights
from freeact_export.quantize.quantizers import dequantize, quantize
from freeact_export.transforms.hadamard import hadamard

SPECS = [QuantSpec(4, True, "channel"), QuantSpec(4, True, "group", 16), QuantSpec(4, False, "channel")]


@pytest.mark.parametrize("spec", SPECS)
def test_identity_hessian_reduces_to_round_to_nearest(spec):
    w = torch.randn(12, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = gptq_quantize(w, torch.eye(64, dtype=torch.float64), spec)
    ref = quantize(w, spec)
    assert torch.equal(got.codes, ref.codes)
    assert torch.allclose(got.scale, ref.scale)


@pytest.mark.parametrize("spec", SPECS)
def test_gptq_lowers_output_error_on_correlated_inputs(spec):
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(64, 64, dtype=torch.float64, generator=gen)
    x = torch.randn(2000, 64, dtype=torch.float64, generator=gen) @ mix  # strongly correlated channels
    w = torch.randn(24, 64, dtype=torch.float64, generator=gen)
    h = x.T @ x / len(x)
    out_err = lambda q: torch.linalg.norm(x @ (w - dequantize(q, spec, torch.float64)).T)  # noqa: E731
    assert out_err(gptq_quantize(w, h, spec)) < 0.8 * out_err(quantize(w, spec))


def test_transformed_hessian_matches_explicit_transformed_activations():
    gen = torch.Generator().manual_seed(2)
    d = 36
    xs = [torch.randn(300, d, generator=gen, dtype=torch.float64) * 2, torch.randn(50, d, generator=gen,
                                                                                 dtype=torch.float64)]
    stats = []
    for x in xs:
        s = TypeStats.empty(d)
        s.add(x, keep=0, generator=gen)
        stats.append(s)
    smooth = torch.rand(d, dtype=torch.float64, generator=gen) + 0.5
    signs = torch.randint(0, 2, (d,), generator=gen).double() * 2 - 1
    masks = torch.ones(2, d, dtype=torch.float64)
    masks[0, :3] = 0
    masks[1, -3:] = 0
    tensors = {"smooth": smooth, "signs": signs, "masks": masks}
    explicit = [((x / smooth) * signs @ hadamard(d)) * masks[k] for k, x in enumerate(xs)]
    reference = sum(e.T @ e for e in explicit) / 350
    assert torch.allclose(transformed_hessian(stats, "hadamard", tensors), reference, atol=1e-10)


def _obq_reference(w, h, col_scale, order, lo=-8, hi=7):
    """Optimal Brain Quantization as first written (Frantar & Alistarh, 2022), float64: quantize the
    columns one at a time in `order`, spread each one's error over the columns still free through
    H⁻¹, then remove the column from H⁻¹ by Gaussian elimination. No Cholesky, no blocks; the damping
    is GPTQ's (1 % of the mean diagonal)."""
    w = w.clone()
    h = h + 0.01 * torch.diagonal(h).mean() * torch.eye(len(h), dtype=torch.float64)
    h_inv = torch.linalg.inv(h)
    codes = torch.zeros_like(w)
    for q in order:
        c = torch.clamp(torch.round(w[:, q] / col_scale[:, q]), lo, hi)
        codes[:, q] = c
        err = (w[:, q] - c * col_scale[:, q]) / h_inv[q, q]
        w -= err[:, None] * h_inv[q][None, :]
        h_inv = h_inv - torch.outer(h_inv[:, q], h_inv[q]) / h_inv[q, q]
    return codes


def _correlated(seed, n, d):
    gen = torch.Generator().manual_seed(seed)
    energy = torch.logspace(-1, 1, d, dtype=torch.float64)[torch.randperm(d, generator=gen)]  # unequal columns
    x = torch.randn(3000, d, dtype=torch.float64, generator=gen) @ torch.randn(d, d, dtype=torch.float64,
                                                                              generator=gen) * energy
    return torch.randn(n, d, dtype=torch.float64, generator=gen), x.T @ x / len(x)


STATIC_SCALES = [(QuantSpec(4, True, "channel"), False), (QuantSpec(4, True, "channel"), True),
                 (QuantSpec(4, True, "channel", code_range="full", clip_search=True), False),
                 (QuantSpec(4, True, "channel", code_range="full", clip_search=True), True),
                 (QuantSpec(4, True, "group", 16), True)]  # groups without act-order: scales from updated weights


@pytest.mark.parametrize(("spec", "act_order"), STATIC_SCALES)
def test_gptq_equals_optimal_brain_quantization(spec, act_order):
    """Codes equal OBQ's with the same static scales, in the natural or the act-order column order."""
    w, h = _correlated(4, 20, 64)
    got = gptq_quantize(w, h, spec, act_order=act_order)
    scales = quantize(w, spec).scale
    assert torch.equal(got.scale, scales)  # fixed up front, from the unmodified weight
    col_scale = scales.repeat_interleave(spec.group_size, dim=1) if spec.group_size else scales.expand_as(w)
    order = torch.argsort(torch.diagonal(h), descending=True).tolist() if act_order else range(64)
    assert torch.equal(got.codes.double(), _obq_reference(w, h, col_scale, order))


def _output_error(w, h, q, spec):
    """E‖x (W - Q)ᵀ‖² over the calibration activations: tr((W - Q) H (W - Q)ᵀ)."""
    diff = w - dequantize(q, spec, torch.float64)
    return float(torch.trace(diff @ h @ diff.T))


def test_act_order_lowers_the_output_error_where_column_energies_differ():
    spec = QuantSpec(4, True, "channel")
    worse = 0
    for seed in range(6):
        w, h = _correlated(10 + seed, 24, 64)
        worse += (_output_error(w, h, gptq_quantize(w, h, spec, act_order=True), spec)
                  > _output_error(w, h, gptq_quantize(w, h, spec), spec))
    assert worse <= 1


@pytest.mark.parametrize("spec", [QuantSpec(4, True, "channel"), QuantSpec(4, True, "group", 16)])
def test_act_order_with_an_identity_hessian_is_round_to_nearest(spec):
    w = torch.randn(12, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    searched = dataclasses.replace(spec, clip_search=True)
    got = gptq_quantize(w, torch.eye(64, dtype=torch.float64), searched, act_order=True)
    assert torch.equal(got.codes, quantize(w, searched).codes)


def test_gptq_with_the_clip_search_searches_in_place_of_a_learned_clip():
    gen = torch.Generator().manual_seed(6)
    w, h = _correlated(6, 16, 32)
    learned = torch.rand(16, 1, dtype=torch.float64, generator=gen) * 0.3 + 0.6
    spec = QuantSpec(4, True, "channel", clip_search=True)
    got = quantize_weights(["a"], [(w, None)], "identity", {}, spec, clip=learned, hessian=h)[0]
    assert torch.equal(got.codes, gptq_quantize(w, h, spec).codes)  # searched, not learned
    rtn = quantize_weights(["a"], [(w, None)], "identity", {}, spec, clip=learned)[0]
    assert torch.equal(rtn.codes, quantize(w, spec, learned).codes)  # round-to-nearest keeps the learned clip


@pytest.mark.parametrize("case", ["hadamard", "kronecker-masks", "per-type-factors"])
def test_transformed_hessian_equals_the_dense_per_type_formula(case):
    """Σ_k M_k Tᵀ D S_k D T M_k / N with every matrix written out densely (torch.kron, diag) in float64."""
    gen = torch.Generator().manual_seed(3)
    d, counts = 96, (50, 7)
    stats = []
    for n in counts:
        x = torch.randn(n, d, dtype=torch.float64, generator=gen) * torch.linspace(0.1, 5, d, dtype=torch.float64)
        stats.append(TypeStats(n, x.T @ x, x.abs().amax(0).float(), torch.zeros(0, d)))
    smooth = torch.rand(d, generator=gen) + 0.5
    a, b = torch.randn(8, 8, generator=gen), torch.randn(12, 12, generator=gen)
    if case == "hadamard":
        signs = torch.where(torch.rand(d, generator=gen) > 0.5, 1.0, -1.0)
        kind, tensors = "hadamard", {"signs": signs, "smooth": smooth}
        mats = [torch.diag(signs.double()) @ hadamard(d)] * 2
        masks = torch.ones(2, d, dtype=torch.float64)
    elif case == "kronecker-masks":
        masks = (torch.rand(2, d, generator=gen) > 0.2).float()
        kind, tensors = "kronecker", {"kron_1": a, "kron_2": b, "smooth": smooth, "masks": masks}
        mats = [torch.kron(a.double(), b.double())] * 2
    else:
        ta, tb = torch.randn(2, 8, 8, generator=gen), torch.randn(2, 12, 12, generator=gen)
        kind, tensors = "kronecker", {"kron_1": a, "kron_2": b, "type_kron_1": ta, "type_kron_2": tb,
                                      "smooth": smooth}
        mats = [torch.kron(ta[k].double(), tb[k].double()) for k in range(2)]
        masks = torch.ones(2, d, dtype=torch.float64)
    scale = torch.diag(1 / smooth.double())
    expected = sum(torch.diag(masks[k].double()) @ (scale @ mats[k]).T @ s.second_moment @ (scale @ mats[k])
                   @ torch.diag(masks[k].double()) for k, s in enumerate(stats)) / sum(counts)
    got = transformed_hessian(stats, kind, tensors)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
