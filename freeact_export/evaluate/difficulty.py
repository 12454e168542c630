"""Quantization difficulty (SmoothRot): spread of the per-channel L2 norms of a group's activations.

Computed from calibration second moments, before and after a plan's transform: the channel
norms of x̃_k = x T_k (transforms.apply.type_matrices) are sqrt(diag(T_kᵀ M_k T_k) / N_k). A flat
profile means per-token quantization loses little to outlier channels. SmoothRot uses the std
of the norms; we divide it by their mean (coefficient of variation) so that smoothing's mere
rescaling of the activations does not count as progress, take norms per token (RMS) so types
with different token counts compare, and leave out a type's masked dimensions (exact zeros,
never quantized).
"""

from __future__ import annotations

import torch

from freeact_export.calibrate.run import CalibrationRecord
from freeact_export.plan import Plan
from freeact_export.transforms.apply import type_matrices


def _channel_rms(second_moment: torch.Tensor, count: int) -> torch.Tensor:
    return (torch.diagonal(second_moment).clamp(min=0) / max(count, 1)).sqrt()


def _spread(norms: torch.Tensor) -> float:
    return float(norms.std() / norms.mean().clamp(min=1e-30))


def plan_difficulty(record: CalibrationRecord, plan: Plan) -> dict[str, dict[str, tuple[float, float]]]:
    """{group: {type: (before, after)}} for every group of the plan."""
    result = {}
    names = record.token_types.names
    for group in plan.groups:
        stats = record.stats[group.name]
        mats = type_matrices(group.transform, group.tensors, len(stats), group.in_features)
        masks = group.tensors.get("masks")
        per_type = {}
        for k, s in enumerate(stats):
            before = _channel_rms(s.second_moment, s.count)
            after = _channel_rms(mats[k].T @ s.second_moment @ mats[k], s.count)
            if masks is not None:  # masked dimensions are exact zeros, not quantized: leave them out
                after = after[masks[k] > 0]
            per_type[names[k]] = (_spread(before), _spread(after))
        result[group.name] = per_type
    return result


def plot_difficulty(difficulty: dict[str, dict], path, title: str) -> None:
    """One panel per group kind (q/k/v, o, gate/up, down) and type: difficulty against layer index.

    Args:
        difficulty: {method: plan_difficulty(...)}; "before" is drawn once from the first method.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(difficulty.values()))
    kinds = sorted({name.split(".")[-1] for name in first}, key=lambda k: list(first).index(
        next(n for n in first if n.endswith(k))))
    types = list(next(iter(first.values())))
    fig, axes = plt.subplots(len(types), len(kinds), figsize=(4 * len(kinds), 3.2 * len(types)), squeeze=False)
    for row, type_name in enumerate(types):
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            groups = [n for n in first if n.endswith(kind)]
            layers = range(len(groups))
            ax.plot(layers, [first[g][type_name][0] for g in groups], "k--", label="before")
            for method, diff in difficulty.items():
                ax.plot(layers, [diff[g][type_name][1] for g in groups], label=method)
            ax.set_yscale("log")
            ax.set_title(f"{kind.split('+')[0].removesuffix('_proj')}… / type {type_name}", fontsize=9)
            ax.set_xlabel("layer")
            if col == 0:
                ax.set_ylabel("std / mean of channel norms")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
