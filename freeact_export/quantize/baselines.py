"""Transforms of the baseline methods, computed from calibration statistics.

Each returns (kind, tensors) for plan.GroupPlan: the online activation transform whose
inverse-transpose the planner folds into the weights.
  rtn          no transform
  smoothquant  s_j = max|X_j|^α / max|W_j|^(1-α), α = 0.5 (Xiao et al.)
  quarot       diag(random ±1) · Hadamard, online (QuaRot-style rotation of each group input)
  smoothrot    smoothquant's s with α = 0.5, then the randomised Hadamard (SmoothRot)
"""

from __future__ import annotations

import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.errors import UserError
from freeact_export.transforms.hadamard import hadamard_supported, random_signs

SMOOTH_ALPHA = 0.5
_SMOOTH_FLOOR = 1e-5


def smoothing_factors(stats: list[TypeStats], weights: list[torch.Tensor], alpha: float = SMOOTH_ALPHA) -> torch.Tensor:
    """Per-input-channel s (float64 [d]) balancing activation and weight ranges."""
    act = torch.stack([s.absmax for s in stats]).amax(dim=0).double().clamp(min=_SMOOTH_FLOOR)
    wmax = torch.cat([w.detach() for w in weights]).abs().amax(dim=0).double().clamp(min=_SMOOTH_FLOOR)
    return (act**alpha / wmax ** (1 - alpha)).clamp(min=_SMOOTH_FLOOR)


def _hadamard_signs(group_name: str, d: int, seed: int) -> torch.Tensor:
    if not hadamard_supported(d):
        raise UserError(f"group {group_name}: no Hadamard matrix of order {d} is constructible; "
                        "use a method without rotation for this model")
    return random_signs(d, seed)


def baseline_transform(method: str, group_name: str, stats: list[TypeStats], weights: list[torch.Tensor],
                       seed: int) -> tuple[str, dict[str, torch.Tensor]]:
    d = weights[0].shape[1]
    if method == "rtn":
        return "identity", {}
    if method == "smoothquant":
        return "identity", {"smooth": smoothing_factors(stats, weights)}
    if method == "quarot":
        return "hadamard", {"signs": _hadamard_signs(group_name, d, seed)}
    if method == "smoothrot":
        return "hadamard", {"smooth": smoothing_factors(stats, weights), "signs": _hadamard_signs(group_name, d, seed)}
    raise ValueError(f"not a baseline transform: {method}")


BASELINES = ("rtn", "smoothquant", "quarot", "smoothrot")
