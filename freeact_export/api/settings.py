"""The settings a command's flags make: presets with the flags that override them, checked together.

Every function returns the object the entry points take (None where the preset applies as it is)
and turns a setting's validation error into one UserError line, so the CLI only passes flags on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from freeact_export.config import CALIB_PRESETS, FREEACT_PRESETS, CalibSpec, FreeActSpec, WeightOptions
from freeact_export.errors import UserError
from freeact_export.quantize.planner import LEARNED


def checked(factory, *args, **fields):
    """Build a settings object; its validation errors become one-line user errors."""
    try:
        return factory(*args, **fields)
    except ValueError as err:
        raise UserError(str(err)) from None


def calibration_settings(preset: str, windows: int | None = None, seqlen: int | None = None) -> CalibSpec | None:
    """The preset's calibration data with --calib-windows / --calib-seqlen applied (None: the preset's own)."""
    if windows is None and seqlen is None:
        return None
    base = CALIB_PRESETS[preset]
    return checked(dataclasses.replace, base, windows=base.windows if windows is None else windows,
                   seqlen=base.seqlen if seqlen is None else seqlen)


def learning_settings(method: str, preset: str, **overrides) -> FreeActSpec | None:
    """The preset's learning settings with the given ones applied (None values are not given).

    Raises:
        UserError: a setting is given to a method that learns nothing (it would be silently ignored).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    learning = {k: v for k, v in given.items() if k != "checkpoint"}
    if given and method.removesuffix("+gptq") not in LEARNED:
        flags = [f"--{k.replace('_', '-')}" for k in given]
        raise UserError(f"{', '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} to the learned methods "
                        f"({', '.join(LEARNED)}, with or without +gptq) and --method {method} learns nothing; "
                        f"drop {'it' if len(flags) == 1 else 'them'} or choose a learned method")
    return checked(dataclasses.replace, FREEACT_PRESETS[preset], **learning) if learning else None


def rounding_settings(method: str, bits: str, clip_search: bool | None = None, code_range: str | None = None,
                      act_order: bool | None = None, group_size: int | None = None) -> WeightOptions:
    """The weight rounding options with the given ones applied (None: the default).

    Raises:
        UserError: --act-order without GPTQ, or --group-size for a setting whose weights are per channel.
    """
    if act_order and not method.endswith("+gptq"):
        raise UserError(f"--act-order orders GPTQ's columns and --method {method} rounds without GPTQ; "
                        f"use --method {method.removesuffix('+gptq')}+gptq or drop --act-order")
    if group_size is not None and bits != "w4a16":
        raise UserError(f"--group-size applies to --bits w4a16; {bits} weights are per output channel "
                        "(docs/evaluation.md)")
    given = {"clip_search": clip_search, "code_range": code_range, "act_order": act_order, "group_size": group_size}
    return checked(WeightOptions, **{k: v for k, v in given.items() if v is not None})


def rewrite_output(model: str, method: str, bits: str) -> str:
    """Where `freeact-export MODEL.onnx` writes without -o: beside the model, named after it and the settings."""
    path = Path(model)
    stem = path.stem if path.suffix == ".onnx" else path.name
    return str(path.parent / f"{stem}-{method}-{bits}")
