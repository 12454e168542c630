"""Plan stage: calibration record + weights + method → Plan (data only)."""

from __future__ import annotations

import torch
from tqdm import tqdm

from freeact_export.calibrate.run import CalibrationRecord
from freeact_export.config import QuantSpec, bits_preset
from freeact_export.plan import GroupPlan, LinearPlan, Plan
from freeact_export.quantize.baselines import BASELINES, baseline_transform
from freeact_export.quantize.quantizers import quantize
from freeact_export.transforms.apply import weight_side

METHODS = BASELINES


def quantize_weights(names, linears, kind: str, tensors: dict, spec: QuantSpec) -> list[LinearPlan]:
    """Fold the transform into each weight (float64) and quantize it; scales kept in float32."""
    plans = []
    for name, linear in zip(names, linears, strict=True):
        folded = weight_side(linear.weight.detach(), kind, tensors)
        q = quantize(folded, spec)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        plans.append(LinearPlan(name, q.codes, q.scale.float(), q.zero, bias))
    return plans


def _stored(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transform tensors as the plan stores them: float32 (signs and masks are exact in it)."""
    return {k: v.float().contiguous() for k, v in tensors.items()}


def build_plan(model: torch.nn.Module, record: CalibrationRecord, method: str, bits: str, seed: int = 0,
               progress: bool = True) -> Plan:
    """Compute every group's transform and quantized weights with `method`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method}; choose one of {', '.join(METHODS)}")
    num_types = record.token_types.num_types
    groups, act_spec = [], None
    for index, group in enumerate(tqdm(record.groups, desc=f"plan ({method})", unit="group", disable=not progress)):
        linears = [model.get_submodule(name) for name in group.linears]
        weight_spec, act_spec = bits_preset(bits, group.in_features)
        kind, tensors = baseline_transform(method, group.name, record.stats[group.name],
                                           [lin.weight for lin in linears], seed * 1_000_003 + index)
        tensors = _stored(tensors)
        tensors["clip"] = torch.ones(num_types)
        groups.append(GroupPlan(group.name, group.in_features, kind, tensors,
                                quantize_weights(group.linears, linears, kind, tensors, weight_spec), weight_spec))
    return Plan(method, bits, act_spec, record.token_types.to_text(), groups, info={"seed": seed})
