import pytest
import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import QuantSpec
from freeact_export.quantize.gptq import gptq_quantize, transformed_hessian
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
