"""Plan stage: calibration record + weights + method → Plan (data only)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from freeact_export.calibrate.run import CalibrationRecord
from freeact_export.config import FREEACT_PRESETS, FreeActSpec, QuantSpec, WeightOptions, bits_preset
from freeact_export.distributed import Ranks
from freeact_export.errors import UserError
from freeact_export.plan import GroupPlan, LinearPlan, Plan
from freeact_export.quantize.astro import astro_weight
from freeact_export.quantize.checkpoint import LearnedGroups
from freeact_export.quantize.gptq import factor_hessian, gptq_quantize, transformed_hessian
from freeact_export.quantize.methods import GroupInput, GroupTransform, lookup, method_names, registry
from freeact_export.quantize.quantizers import quantize
from freeact_export.transforms.apply import weight_side

# Every registered method (quantize/methods/), then each with +gptq.
METHODS = method_names()
LEARNED = tuple(name for name, m in registry().items() if m.learned)
# FreeAct's general per-type variant: the most accurate W4A4 transform (README, accuracy);
# +gptq composes with it.
DEFAULT_METHOD = "freeact-general"


# A linear's (weight [out, in], bias [out] or None) by name: where the planner reads weights, so
# the PyTorch and ONNX frontends feed it the same way.
WeightSource = Callable[[str], tuple[torch.Tensor, torch.Tensor | None]]


def torch_weights(model: torch.nn.Module) -> WeightSource:
    def read(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        linear = model.get_submodule(name)
        return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()

    return read


def quantize_weights(names, linears, kind: str, tensors: dict, spec: QuantSpec,
                     clip: torch.Tensor | None = None, hessian: torch.Tensor | None = None,
                     astro: torch.Tensor | None = None, act_order: bool = False) -> list[LinearPlan]:
    """Fold the transform into each weight (float64) and quantize it; scales kept in float32.

    Args:
        clip: learned clipping per output channel of the stacked consumers [sum of out, 1] (GPTQ
            with spec.clip_search searches instead).
        hessian: E[x̃ x̃ᵀ] of the transformed activations: quantize with GPTQ instead of RTN.
        astro: E[x̃ x̃ᵀ] for Astro-style regularisation of each folded weight before quantizing.
        act_order: GPTQ's column order by decreasing Hessian diagonal.
    """
    plans, row = [], 0
    factor = None if hessian is None else factor_hessian(hessian, act_order)  # once for q, k, v (gate, up)
    for name, (weight, bias) in zip(names, linears, strict=True):
        folded = weight_side(weight, kind, tensors)
        if astro is not None:
            folded = astro_weight(folded, astro, spec)
        rows = folded.shape[0]
        row_clip = None if clip is None else clip[row:row + rows]
        if hessian is not None and spec.clip_search:
            # GPTQ with the clip search searches where a method learned a clip too: the learned clip
            # was fitted to round-to-nearest, and GPTQ's error feedback pays for a smaller step
            # (freeact-general+gptq W4A8, 8 windows: 19.18 with the learned clip, 18.54 searched).
            row_clip = None
        q = quantize(folded, spec, row_clip) if hessian is None else \
            gptq_quantize(folded, factor, spec, row_clip, act_order)
        row += rows
        bias = None if bias is None else bias.float().clone()
        plans.append(LinearPlan(name, q.codes, q.scale.float(), q.zero, bias))
    return plans


def _stored(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transform tensors as the plan stores them: float32 (signs and masks are exact in it)."""
    return {k: v.float().contiguous() for k, v in tensors.items()}


def check_rounding(bits: str, rounding: WeightOptions, inputs: Iterable[tuple[str, int]]) -> None:
    """Refuse, in one line, weight options that a layer's input width cannot take (a group size that does
    not divide it), before any long work; `inputs`: (layer or group name, input features)."""
    for name, in_features in inputs:
        try:
            bits_preset(bits, in_features, rounding)
        except ValueError as err:
            raise UserError(f"{err} ({name}); choose a size that divides every linear layer's input, or leave "
                            "--group-size out for the protocol's groups") from None


def learned_groups(folder: str | Path, record: CalibrationRecord, method: str, bits: str, seed: int,
                   freeact: FreeActSpec, weights: WeightOptions = WeightOptions()) -> LearnedGroups:
    """The checkpoint of `method`'s learned groups: keyed by what a learned group depends on, the
    settings and the statistics (each group's and type's mean energy tells another model or
    corpus apart). +gptq only changes how the learned transform's weights are rounded."""
    learning = freeact.to_dict()
    if not learning["branch_steps"] or method.startswith("flatquant"):  # the schedules it does not change:
        del learning["branch_steps"]  # checkpoints from before the field existed stay valid
    settings = {"method": method.partition("+")[0], "bits": bits, "seed": seed, "learning": learning,
                "calibration": record.spec.to_dict(), "types": record.token_types.to_text(),
                "groups": [g.name for g in record.groups]}
    learning_rounding = dataclasses.replace(weights, act_order=False)  # GPTQ's order changes no learning
    if learning_rounding != WeightOptions():  # the learning rounds weights as they will be: a folder per rounding
        settings["weights"] = learning_rounding.to_dict()
    energy = [float(s.second_moment.diagonal().sum()) / max(s.count, 1) for g in record.groups
              for s in record.stats[g.name]]
    return LearnedGroups(folder, settings, energy)


class Planner:
    """Plans groups as their statistics arrive (all at once, or one decoder layer at a time) and
    assembles the Plan; a group's result depends only on its statistics, weights, settings and
    its index in the model (which seeds its learning).

    Args:
        freeact: learning settings for "freeact" / "flatquant" (default: the cpu preset).
        rounding: the weight quantizer's options (clip search, code range, GPTQ's act-order,
            W4A16's group size).
    """

    def __init__(self, method: str, bits: str, num_types: int, seed: int = 0, progress: bool = True,
                 freeact: FreeActSpec | None = None, rounding: WeightOptions = WeightOptions()):
        self.method, self.bits, self.seed, self.progress, self.rounding = method, bits, seed, progress, rounding
        self.base, self.gptq = lookup(method)
        self.num_types = num_types
        self.freeact = FREEACT_PRESETS["cpu"] if freeact is None else freeact
        self.groups: list[GroupPlan] = []
        self.learned: list[dict] = []
        self.act_spec = None
        self.resumed = 0
        self.checkpoints: list[LearnedGroups] = []

    def plan_groups(self, weights: WeightSource, record: CalibrationRecord, first_index: int = 0,
                    checkpoint: str | Path | None = None, release: bool = False,
                    indices: list[int] | None = None) -> None:
        """Plan every group of `record` (the model's groups from `first_index` on, or at `indices`).

        checkpoint: a folder where learned groups are saved as they finish and read back when a
        run with the same settings is started again (learned methods only).
        release: drop each group's statistics from `record` once it is planned (a big model's
            layer holds gigabytes of them; a record planned again by other methods keeps its own).
        """
        indices = list(range(first_index, first_index + len(record.groups))) if indices is None else indices
        check_rounding(self.bits, self.rounding, ((g.name, g.in_features) for g in record.groups))
        saved = None
        if checkpoint is not None and self.base.learned:
            saved = learned_groups(checkpoint, record, self.method, self.bits, self.seed, self.freeact,
                                   self.rounding)
            self.checkpoints.append(saved)
        for local, group in enumerate(tqdm(record.groups, desc=f"plan ({self.method})", unit="group",
                                           disable=not self.progress)):
            self.groups.append(self._plan_group(weights, record, group, indices[local], saved, release))

    def _plan_group(self, weights: WeightSource, record: CalibrationRecord, group, index: int,
                    saved: LearnedGroups | None, release: bool = False) -> GroupPlan:
        linears = [weights(name) for name in group.linears]
        weight_spec, self.act_spec = bits_preset(self.bits, group.in_features, self.rounding)
        stats = record.stats[group.name]
        task = GroupInput(group.name, stats, [w for w, _ in linears], weight_spec, self.act_spec, self.freeact,
                          self.seed * 1_000_003 + index, self.num_types)
        kept = None if saved is None else saved.load(index, group.name)
        self.resumed += kept is not None
        if kept is not None:
            result = GroupTransform("kronecker", *kept)
        else:
            start = time.perf_counter()
            result = self.base.plan_group(task)
            if saved is not None:
                saved.save(index, result.tensors, result.weight_clip, result.info,
                           learn_s=time.perf_counter() - start)
        if result.info is not None:
            self.learned.append(result.info)
        kind, tensors = result.kind, _stored(result.tensors)
        hessian = transformed_hessian(stats, kind, tensors) if self.gptq or self.base.astro_weights else None
        if release:  # before GPTQ's factorisation: a 14336-wide input's moments are 1.6 GB per type
            del record.stats[group.name], stats, task
        return GroupPlan(group.name, group.in_features, kind, tensors,
                         quantize_weights(group.linears, linears, kind, tensors, weight_spec, result.weight_clip,
                                          hessian if self.gptq else None,
                                          hessian if self.base.astro_weights else None,
                                          self.rounding.act_order), weight_spec)

    def share(self, ranks: Ranks, groups_from: int, learned_from: int, resumed_from: int, order: list[str]) -> None:
        """Across ranks (freeact_export.distributed): the groups every rank planned since the given
        counts, in the model's `order` on every rank, with their learning records."""
        infos = self.learned[learned_from:]
        mine = [(g, infos[i] if infos else None) for i, g in enumerate(self.groups[groups_from:])]
        every = {g.name: (g, info) for g, info in ranks.share(mine)}
        self.resumed = resumed_from + sum(ranks.share([self.resumed - resumed_from]))
        self.groups[groups_from:] = [every[name][0] for name in order]
        self.learned[learned_from:] = [every[name][1] for name in order if every[name][1] is not None]

    def plan(self, token_types: str) -> Plan:
        """The Plan of every group planned so far, in the order planned."""
        info = {"seed": self.seed, "weights": self.rounding.to_dict()}
        if self.learned:
            info.update(freeact=self.freeact.to_dict(), learning=self.learned)
        if self.checkpoints:  # a resumed run's planning time covers only the groups learned in it
            info["groups_from_checkpoint"] = self.resumed
            times = [c.loaded_learn_s for c in self.checkpoints]  # None where a group has no time
            info["checkpoint_learn_s"] = None if None in times else round(sum(times), 1)
        return Plan(self.method, self.bits, self.act_spec, token_types, self.groups, info=info)


def build_plan(weights: WeightSource, record: CalibrationRecord, method: str, bits: str, seed: int = 0,
               progress: bool = True, freeact: FreeActSpec | None = None,
               checkpoint: str | Path | None = None, rounding: WeightOptions = WeightOptions()) -> Plan:
    """Compute every group's transform and quantized weights with `method` (Planner, all groups at once)."""
    planner = Planner(method, bits, record.token_types.num_types, seed, progress, freeact, rounding)
    planner.plan_groups(weights, record, 0, checkpoint)
    return planner.plan(record.token_types.to_text())
