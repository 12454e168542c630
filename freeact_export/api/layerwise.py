"""Quantize one decoder layer at a time: calibrate a layer, plan its groups, move to the next.

The composition of calibrate/layerwise.py (statistics per layer) and quantize/planner.py's
Planner (groups planned as they arrive); what the layers are loaded from is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from freeact_export.calibrate.layerwise import calibrate_layerwise
from freeact_export.calibrate.massive import MassiveTokens
from freeact_export.calibrate.run import CalibrationRecord
from freeact_export.config import CalibSpec, FreeActSpec, WeightOptions
from freeact_export.plan import Plan
from freeact_export.quantize.planner import Planner, torch_weights
from freeact_export.token_types import TokenTypes


def plan_layer_by_layer(model: torch.nn.Module, windows: np.ndarray, token_types: TokenTypes, calib: CalibSpec,
                        method: str, bits: str, *, seed: int = 0, freeact: FreeActSpec | None = None,
                        rounding: WeightOptions = WeightOptions(), checkpoint: str | Path | None = None,
                        propagate: str = "fp", load: Callable[[int], None] = lambda index: None,
                        release: Callable[[int], None] = lambda index: None, progress: bool = True
                        ) -> tuple[Plan, MassiveTokens, dict[str, int]]:
    """The plan of `model` built layer by layer, the massive-activation counts and the per-type token counts.

    checkpoint: learned groups are saved under checkpoint/layer-NNNN/ (one settings file per
    layer, since each layer's statistics key its own groups), so a stopped run resumes.
    propagate: "fp" (each layer calibrates on the floating-point model's activations: the plan
    equals the whole-model path's) or "quantized" (on the outputs of the layers quantized so far).
    """
    planner = Planner(method, bits, token_types.num_types, seed, progress=False, freeact=freeact, rounding=rounding)
    weights = torch_weights(model)
    counts: dict[str, int] = {}
    if checkpoint is not None:
        Path(checkpoint).mkdir(exist_ok=True)

    def plan_layer(index: int, record: CalibrationRecord) -> tuple[list, object]:
        if not counts:
            counts.update(record.type_token_counts())
        before = len(planner.groups)
        folder = None if checkpoint is None else Path(checkpoint) / f"layer-{index:04d}"
        planner.plan_groups(weights, record, first_index=before, checkpoint=folder)
        return planner.groups[before:], planner.act_spec

    massive = calibrate_layerwise(model, windows, token_types, calib, plan_layer, propagate, load, release,
                                  progress)
    return planner.plan(token_types.to_text()), massive, counts
