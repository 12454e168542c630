"""Astro-style weight regularisation, checked on the real output of the rounded weights."""

import pytest
import torch

from freeact_export.config import QuantSpec
from freeact_export.quantize.astro import astro_weight, expected_error
from freeact_export.quantize.quantizers import dequantize, quantize

SPECS = [QuantSpec(4, True, "channel"), QuantSpec(4, True, "group", 32)]


def _layer(rank: int, seed: int = 0):
    """Activations on a `rank`-dim subspace of 128 channels; one weight outlier per row."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4000, rank, dtype=torch.float64, generator=gen) @ torch.randn(rank, 128, dtype=torch.float64,
                                                                               generator=gen)
    w = torch.randn(64, 128, dtype=torch.float64, generator=gen) * 0.02
    w[torch.arange(64), torch.randint(0, 128, (64,), generator=gen)] = 0.3
    return x, w


def _output_error(x, w, approx):
    return float((x @ (approx - w).T).pow(2).mean() / (x @ w.T).pow(2).mean())


@pytest.mark.parametrize("spec", SPECS)
def test_rounded_regularised_weights_give_a_smaller_output_error(spec):
    x, w = _layer(rank=96)
    w2 = astro_weight(w, x.T @ x / len(x), spec)
    assert _output_error(x, w, w2) < 1e-3  # the layer's output is kept ...
    assert w2.abs().amax(dim=1).mean() < 0.8 * w.abs().amax(dim=1).mean()  # ... its outliers shrink ...
    rtn = _output_error(x, w, dequantize(quantize(w, spec), spec, torch.float64))
    ours = _output_error(x, w, dequantize(quantize(w2, spec), spec, torch.float64))
    assert ours < 0.7 * rtn  # ... and rounding costs less


def test_outliers_on_channels_the_activations_never_reach_are_removed():
    x, w = _layer(rank=128)
    x[:, :8] = 0.0  # channels 0..7 carry nothing
    w = torch.randn(64, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.02
    w[:, 3] = 0.5  # every row's outlier sits on a dead channel: free to shrink
    w2 = astro_weight(w, x.T @ x / len(x), SPECS[0])
    assert float(w2[:, 3].abs().max()) < 0.25  # more than halved within the step budget
    assert _output_error(x, w, w2) < 1e-4


def test_expected_error_is_the_uniform_rounding_model():
    """At W' = W only the noise term remains: Σ_i Δ_i² / 12 · tr(H), written out for one row."""
    w = torch.tensor([[0.7, -0.1, 0.2, 0.0]], dtype=torch.float64)
    h = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    step = 0.7 / 7
    want = step**2 / 12 * 10.0 / float(w @ h @ w.T)
    assert float(expected_error(w, w, h, SPECS[0])) == pytest.approx(want, rel=1e-12)
