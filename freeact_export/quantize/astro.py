"""Astro-style activation-guided weight regularisation for weight-only quantization.

Astro (Chen et al., 2026) reshapes the weights before quantization: a layer has many weight
matrices with (almost) the same output on real activations, and among them it picks one with
small outliers where activations are large, at no inference cost; GPTQ runs on the result.
No code was published and the paper is not available offline, so this is our formulation of
that idea, written as the expected output error of round-to-nearest on the new weight W':

    L(W') = tr((W' − W) H (W' − W)ᵀ)  +  Σ_i Σ_g Δ_ig² / 12 · Σ_{j∈g} H_jj
            (keep the layer's output)     (rounding noise of step Δ_ig = max_{j∈g} |W'_ij| / qmax,
                                           weighted by the activation energy of the channels it hits)

relative to tr(W H Wᵀ), with H = E[x xᵀ] from calibration. Lowering a row's (or group's)
largest weight shrinks the step of every weight beside it; the first term moves the change
into directions the activations do not reach. Minimised with Adam; the result is quantized by
round-to-nearest ("astro") or GPTQ ("astro+gptq").
"""

from __future__ import annotations

import torch

from freeact_export.config import QuantSpec
from freeact_export.quantize.quantizers import code_range

STEPS = 150
LR = 1e-2  # first step size, in units of each row's largest |weight| (cosine decay to 0)


def _rounding_noise(weight: torch.Tensor, hessian_diag: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Σ_i Σ_g Δ_ig² / 12 · Σ_{j∈g} H_jj (differentiable in `weight`)."""
    n, d = weight.shape
    group = spec.group_size if spec.granularity == "group" else d
    qmax = code_range(spec.bits, spec.symmetric)[1]
    step = weight.reshape(n, d // group, group).abs().amax(dim=2) / qmax  # [n, groups]
    return (step.pow(2) / 12 * hessian_diag.reshape(d // group, group).sum(dim=1)).sum()


def expected_error(weight: torch.Tensor, original: torch.Tensor, hessian: torch.Tensor,
                   spec: QuantSpec) -> torch.Tensor:
    """L(W') above, relative to tr(W H Wᵀ)."""
    delta = weight - original
    keep = (delta @ hessian * delta).sum()
    return (keep + _rounding_noise(weight, torch.diagonal(hessian), spec)) / (original @ hessian * original).sum()


def astro_weight(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec,
                 steps: int = STEPS) -> torch.Tensor:
    """W' minimising expected_error, float64 [n, d]; W itself where nothing lowers it."""
    if spec.granularity not in ("channel", "group") or not spec.symmetric:
        raise ValueError("Astro-style regularisation expects symmetric per-channel or per-group weights")
    original = weight.float()
    h = hessian.float()
    h_diag = torch.diagonal(h)
    norm = float((original @ h * original).sum())
    row_scale = original.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    change = torch.zeros_like(original, requires_grad=True)  # W' = W + change · row_scale
    optimizer = torch.optim.Adam([change], lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        optimizer.zero_grad()
        current = original + change * row_scale
        with torch.no_grad():  # the keep term's gradient 2 (W' − W) H, in one matmul instead of autograd's three
            pull = 2 * (current - original) @ h
        ((pull * current).sum() + _rounding_noise(current, h_diag, spec)).div(norm).backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        result = original + change * row_scale
        if expected_error(result, original, h, spec) >= expected_error(original, original, h, spec):
            return weight.double()
    return result.double()
