"""Quantize one decoder layer at a time: calibrate a layer, plan its groups, move to the next.

The composition of calibrate/layerwise.py's LayerStream (statistics per layer), quantize/planner.py's
Planner (groups planned as they arrive) and, for quantized propagation, simulate's with_groups;
what the layers are loaded from is the caller's (lazy_weights.LazyModel for a model on disk).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from freeact_export.calibrate.layerwise import LayerStream
from freeact_export.calibrate.massive import MassiveTokens
from freeact_export.calibrate.run import check_type_counts
from freeact_export.config import CalibSpec, FreeActSpec, WeightOptions
from freeact_export.distributed import Ranks
from freeact_export.errors import UserError
from freeact_export.mapped import spill as mapped_spill
from freeact_export.plan import Plan
from freeact_export.quantize.planner import Planner, torch_weights
from freeact_export.simulate.fake_quant import with_groups
from freeact_export.token_types import TokenTypes

PROPAGATION = ("fp", "quantized")


def plan_layer_by_layer(model: torch.nn.Module, windows: np.ndarray, token_types: TokenTypes, calib: CalibSpec,
                        method: str, bits: str, *, seed: int = 0, freeact: FreeActSpec | None = None,
                        rounding: WeightOptions = WeightOptions(), checkpoint: str | Path | None = None,
                        propagate: str = "fp", load: Callable[[int], None] = lambda index: None,
                        release: Callable[[int], None] = lambda index: None, progress: bool = True,
                        ranks: Ranks | None = None, spill: Path | None = None
                        ) -> tuple[Plan, MassiveTokens, dict[str, int]]:
    """The plan of `model` built layer by layer, the massive-activation counts and the per-type token counts.

    checkpoint: learned groups are saved under checkpoint/layer-NNNN/ (one settings file per
    layer, since each layer's statistics key its own groups), so a stopped run resumes.
    propagate: "fp" (each layer calibrates on the floating-point model's activations: the plan
    equals the whole-model path's) or "quantized" (on the outputs of the layers quantized so far).
    ranks: split windows and groups across processes (freeact_export.distributed); every rank
    returns the whole plan (the massive-activation counts are rank 0's only). Checkpoints go to
    checkpoint/layer-NNNN-rank-R-of-N/, so a stopped run resumes with the same number of ranks.
    spill: a folder where each layer's weight codes go once it is planned; the plan maps them from
    there (freeact_export.mapped), so they are not resident (7 GB for an 8B model).
    """
    if propagate not in PROPAGATION:
        raise ValueError(f"propagate must be one of {PROPAGATION} (got {propagate})")
    if ranks is not None and len(windows) < ranks.world:
        raise UserError(f"{len(windows)} calibration windows for {ranks.world} processes; run fewer processes "
                        "or calibrate on more windows")
    planner = Planner(method, bits, token_types.num_types, seed, progress=False, freeact=freeact, rounding=rounding)
    weights = torch_weights(model)
    if checkpoint is not None:
        Path(checkpoint).mkdir(exist_ok=True)
    stream = LayerStream(model, windows, token_types, calib, load, release, ranks)
    counts = stream.type_token_counts()
    check_type_counts(token_types, counts, calib)  # as the whole-model path checks, before the slow part
    first = 0  # the model's index of the layer's first group (it seeds the group's learning)
    for index in tqdm(range(len(stream)), desc=f"layers ({method})", unit="layer", disable=not progress):
        record, outputs = stream.calibrate(index)
        folder = None if checkpoint is None else Path(checkpoint) / f"layer-{index:04d}"
        if ranks is None:
            planner.plan_groups(weights, record, first_index=first, checkpoint=folder, release=True)
        else:
            mine = [j for j, owner in enumerate(stream.owners) if owner == ranks.rank]
            own = dataclasses.replace(record, groups=[record.groups[j] for j in mine])
            folder = None if folder is None else folder.with_name(f"{folder.name}-rank-{ranks.rank}-of-{ranks.world}")
            sizes = len(planner.groups), len(planner.learned), planner.resumed
            planner.plan_groups(weights, own, checkpoint=folder, release=True, indices=[first + j for j in mine])
            planner.share(ranks, *sizes, [g.name for g in record.groups])
        layer_groups = planner.groups[first:]
        first += len(record.groups)
        if propagate == "quantized":
            prefix = f"{stream.prefix}.{index}."
            outputs = stream.run(index, with_groups(stream.layers[index], prefix, layer_groups,
                                                        planner.act_spec, stream.context))
        if spill is not None:
            mapped = iter(mapped_spill([lin.codes for g in layer_groups for lin in g.linears],
                                       Path(spill) / f"layer-{index:04d}.codes"))
            for lin in (lin for g in layer_groups for lin in g.linears):
                lin.codes = next(mapped)
        stream.advance(index, outputs)
    plan = planner.plan(token_types.to_text())
    if ranks is not None:
        plan.info.update(processes=ranks.world, checkpoint_learn_s=None)  # the checkpoints' times are per rank
    return plan, stream.finish(), counts
