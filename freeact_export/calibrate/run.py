"""The calibration pass: sample windows, run the model, collect per-type stats per group."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from freeact_export.calibrate.groups import LinearGroup, find_linear_groups
from freeact_export.calibrate.massive import MassiveTokens
from freeact_export.calibrate.stats import GroupRecorder, TypeContext, TypeStats
from freeact_export.config import CalibSpec
from freeact_export.errors import UserError
from freeact_export.models import bos_context_id
from freeact_export.module_surgery import swap_module
from freeact_export.preflight import require_context
from freeact_export.token_types import TokenTypes

if TYPE_CHECKING:
    from freeact_export.assets import Corpus


@dataclasses.dataclass
class CalibrationRecord:
    """Statistics per group and token type; the input of every planner."""

    token_types: TokenTypes
    groups: list[LinearGroup]
    stats: dict[str, list[TypeStats]]
    spec: CalibSpec
    massive: MassiveTokens

    def type_token_counts(self) -> dict[str, int]:
        """Calibration tokens per token type (every group saw the same tokens)."""
        stats = self.stats[self.groups[0].name]
        return {name: stats[k].count for k, name in enumerate(self.token_types.names)}


def parse_type_rules(types: str) -> TokenTypes:
    """The --types rules, or UserError naming the offending part."""
    try:
        return TokenTypes.parse(types)
    except ValueError as err:
        raise UserError(str(err)) from None


def corpus_calibration_windows(tokenizer, corpus: Corpus, spec: CalibSpec, context_folder: Path | None) -> np.ndarray:
    """The calibration windows of a corpus's calibration split (docs/evaluation.md), after checking that a
    window (with its BOS context token, where the tokenizer adds one) fits the model's context."""
    bos = bos_context_id(tokenizer)
    require_context(context_folder, spec.seqlen, bos is not None, "calibration windows", "--calib-seqlen")
    token_ids = tokenizer(corpus.calib_text, add_special_tokens=False).input_ids
    return calibration_windows(token_ids, spec, bos)


def calibration_windows(token_ids: list[int], spec: CalibSpec, bos_id: int | None) -> np.ndarray:
    """[windows, seqlen (+1 with BOS)] int64 at uniform random offsets of the calibration text."""
    if len(token_ids) <= spec.seqlen:
        raise UserError(f"the calibration text has {len(token_ids)} tokens, not more than one window of "
                        f"{spec.seqlen}; lower the calibration seqlen or give a longer corpus")
    gen = np.random.default_rng(spec.seed)
    starts = gen.integers(0, len(token_ids) - spec.seqlen, size=spec.windows)
    ids = np.stack([np.asarray(token_ids[s:s + spec.seqlen], dtype=np.int64) for s in starts])
    if bos_id is not None:
        ids = np.concatenate([np.full((spec.windows, 1), bos_id, dtype=np.int64), ids], axis=1)
    return ids


def calibrate(model: torch.nn.Module, windows: np.ndarray, token_types: TokenTypes, spec: CalibSpec,
              progress: bool = True) -> CalibrationRecord:
    """Run every window through the model and collect each group's input statistics."""
    device = next(model.parameters()).device
    groups = find_linear_groups(model, torch.from_numpy(windows[:1, :16]).to(device))
    context = TypeContext(token_types.num_types)
    massive = MassiveTokens()
    keep = math.ceil(spec.samples_per_type / len(windows))
    recorders = {}
    for index, group in enumerate(groups):
        first = model.get_submodule(group.linears[0])
        recorders[group.name] = GroupRecorder(first, context, keep, seed=spec.seed * 100_003 + index)
        swap_module(model, group.linears[0], recorders[group.name])
    try:
        with torch.inference_mode():
            for row in tqdm(windows, desc="calibration", unit="window", disable=not progress):
                ids = torch.from_numpy(row[None, :]).to(device)
                context.types = token_types.assign(ids).reshape(-1).cpu()
                model(input_ids=ids, use_cache=False)
                massive.add_window(ids[0].cpu(), [rec.tap.last_token_absmax for rec in recorders.values()])
    finally:
        for group in groups:
            swap_module(model, group.linears[0], recorders[group.name].linear)
    stats = {name: rec.tap.stats for name, rec in recorders.items()}
    return checked_record(token_types, groups, stats, spec, massive)


def checked_record(token_types: TokenTypes, groups: list[LinearGroup], stats: dict[str, list[TypeStats]],
                   spec: CalibSpec, massive: MassiveTokens) -> CalibrationRecord:
    """The record, once every token type has enough calibration tokens (UserError naming it if not)."""
    first_stats = stats[groups[0].name]
    check_type_counts(token_types, {name: first_stats[k].count for k, name in enumerate(token_types.names)}, spec)
    return CalibrationRecord(token_types, groups, stats, spec, massive)


def check_type_counts(token_types: TokenTypes, counts: dict[str, int], spec: CalibSpec) -> None:
    """UserError naming the first token type with fewer than spec.min_tokens calibration tokens."""
    for name in token_types.names:
        if counts[name] < spec.min_tokens:
            raise UserError(f"token type '{name}' has {counts[name]} calibration tokens, fewer than "
                            f"{spec.min_tokens}; change the rule ({token_types.to_text()}) "
                            "or calibrate on more windows")
