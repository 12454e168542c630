"""Methods whose transform is computed from calibration statistics: rtn, smoothquant, quarot, smoothrot."""

from __future__ import annotations

import torch

from freeact_export.quantize.baselines import baseline_transform
from freeact_export.quantize.methods import GroupInput, GroupTransform, Method, register


def statistics_planner(name: str):
    """plan_group of a transform baselines.baseline_transform computes from statistics (no learning, no clip)."""
    def plan_group(group: GroupInput) -> GroupTransform:
        kind, tensors = baseline_transform(name, group.name, group.stats, group.weights, group.seed)
        tensors["clip"] = torch.ones(group.num_types)
        return GroupTransform(kind, tensors)

    return plan_group


for _rank, _name in enumerate(("rtn", "smoothquant", "quarot", "smoothrot")):
    register(Method(_name, _rank, statistics_planner(_name)))
