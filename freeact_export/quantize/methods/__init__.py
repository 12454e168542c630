"""The registry of quantization methods: each method registers how it plans one group.

A method is one module in this package that calls `register(Method(...))` when imported; the
planner finds them all (`registry()` imports every module here) and never names a method itself.
`<method>+gptq` exists for every method: GPTQ rounds its folded weights instead of round-to-nearest.

A method's `plan_group` receives a GroupInput (the group's calibration statistics and weights, the
bit setting's quantizers, its learning settings and seed) and returns a GroupTransform: the online
activation transform (plan.GroupPlan's kind and tensors) with, for learned methods, a clip per
output channel for the folded weights and a record of the learning.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable

import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import FreeActSpec, QuantSpec

GPTQ_SUFFIX = "+gptq"


@dataclasses.dataclass(frozen=True)
class GroupInput:
    """What a method plans one group from."""

    name: str
    stats: list[TypeStats]  # one per token type
    weights: list[torch.Tensor]  # the consumers' weights [out, in], in the group's order
    weight_spec: QuantSpec
    act_spec: QuantSpec | None  # None: W4A16
    learning: FreeActSpec
    seed: int  # this group's: the run's seed and the group's index
    num_types: int


@dataclasses.dataclass(frozen=True)
class GroupTransform:
    """One group's plan before its weights are quantized."""

    kind: str  # plan.TRANSFORM_KINDS
    tensors: dict[str, torch.Tensor]
    weight_clip: torch.Tensor | None = None  # [sum of out, 1] clip ratios for the folded weights
    info: dict | None = None  # the learning's record (learned methods)


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        rank: its place in listings (--help, tables), lowest first.
        learned: plans by optimisation: its groups can be kept in a checkpoint and resumed.
        astro_weights: reshapes each folded weight (Astro-style) with the activations' second moment
            before rounding.
    """

    name: str
    rank: int
    plan_group: Callable[[GroupInput], GroupTransform]
    learned: bool = False
    astro_weights: bool = False


_REGISTRY: dict[str, Method] = {}
_loaded = False


def register(method: Method) -> Method:
    if method.name in _REGISTRY or GPTQ_SUFFIX in method.name:
        raise ValueError(f"method {method.name!r} is registered already or has a reserved name")
    _REGISTRY[method.name] = method
    return method


def registry() -> dict[str, Method]:
    """Every method, by name, in rank order (imports this package's modules once)."""
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
    return dict(sorted(_REGISTRY.items(), key=lambda item: item[1].rank))


def method_names() -> tuple[str, ...]:
    """Every method, then each with +gptq: the names --method takes."""
    names = tuple(registry())
    return (*names, *(f"{n}{GPTQ_SUFFIX}" for n in names))


def lookup(name: str) -> tuple[Method, bool]:
    """(the method, whether GPTQ rounds its weights) for a --method value.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    base, plus, rest = name.partition("+")
    methods = registry()
    if base not in methods or (plus and f"+{rest}" != GPTQ_SUFFIX):
        raise ValueError(f"unknown method {name}; choose one of {', '.join(method_names())}")
    return methods[base], bool(plus)
