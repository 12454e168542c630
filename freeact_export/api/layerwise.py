"""Quantize one decoder layer at a time: calibrate a layer, plan its groups, move to the next.

The composition of calibrate/layerwise.py's LayerStream (statistics per layer), quantize/planner.py's
Planner (groups planned as they arrive) and, for quantized propagation, simulate's with_groups;
what the layers are loaded from is the caller's (lazy_weights.LazyModel for a model on disk).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from freeact_export.calibrate.layerwise import LayerStream
from freeact_export.calibrate.massive import MassiveTokens
from freeact_export.calibrate.run import checked_record
from freeact_export.config import CalibSpec, FreeActSpec, WeightOptions
from freeact_export.plan import Plan
from freeact_export.quantize.planner import Planner, torch_weights
from freeact_export.simulate.fake_quant import with_groups
from freeact_export.token_types import TokenTypes

PROPAGATION = ("fp", "quantized")


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
    if propagate not in PROPAGATION:
        raise ValueError(f"propagate must be one of {PROPAGATION} (got {propagate})")
    planner = Planner(method, bits, token_types.num_types, seed, progress=False, freeact=freeact, rounding=rounding)
    weights = torch_weights(model)
    if checkpoint is not None:
        Path(checkpoint).mkdir(exist_ok=True)
    stream = LayerStream(model, windows, token_types, calib, load, release)
    counts: dict[str, int] = {}
    for index in tqdm(range(len(stream)), desc=f"layers ({method})", unit="layer", disable=not progress):
        record, outputs = stream.calibrate(index)
        if index == 0:  # every type has its tokens (the whole-model path checks the same)
            checked_record(token_types, record.groups, record.stats, calib, stream.massive)
            counts = record.type_token_counts()
        first = len(planner.groups)
        folder = None if checkpoint is None else Path(checkpoint) / f"layer-{index:04d}"
        planner.plan_groups(weights, record, first_index=first, checkpoint=folder, release=True)
        if propagate == "quantized":
            prefix = f"{stream.prefix}.{index}."
            outputs = stream.run(index, with_groups(stream.layers[index], prefix, planner.groups[first:],
                                                        planner.act_spec, stream.context))
        stream.advance(index, outputs)
    return planner.plan(token_types.to_text()), stream.finish(), counts
