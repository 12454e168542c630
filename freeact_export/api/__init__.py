"""The one floor of entry points: everything a user or the CLI calls (the CLI imports nothing else).

    torch_in   evaluate, calibrate_model, plan_model, quantize           (a PyTorch model)
    export     export                                                    (a PyTorch model → ONNX)
    onnx_in    rewrite_onnx (`freeact-export MODEL.onnx`), check         (an ONNX model)
    deploy     build_engine, bundle, triton, serve                       (engines, bundles, Triton)
    Ranks, finish                                                        (several processes: torchrun)

Each returns a record (a plain dict ready for JSON). The other names give the CLI the settings it
offers as choices and defaults, and the checks it runs before long work, so that it holds no
knowledge of the stages. Names are imported when first used: `freeact-export --help` and a bad
argument stay fast, and nothing heavy (torch, transformers) loads before the CLI has set up the
environment those libraries read at import.
"""

from __future__ import annotations

import importlib

_SOURCES = {
    "freeact_export.api.torch_in": ("DEVICES", "RUNTIMES", "Calibrated", "calibrate_model", "corpus_windows",
                                    "evaluate", "plan_model", "quantize", "resolve_device", "write_json"),
    "freeact_export.api.export": ("export",),
    "freeact_export.api.onnx_in": ("check", "rewrite_onnx"),
    "freeact_export.api.deploy": ("build_engine", "bundle", "serve", "triton"),
    "freeact_export.api.settings": ("calibration_settings", "checked", "learning_settings", "rewrite_output",
                                    "rounding_settings"),
    "freeact_export.assets": ("MODELS", "resolve_model"),
    "freeact_export.config": ("BITS_PRESETS", "CALIB_PRESETS", "FREEACT_PRESETS", "CalibSpec", "EvalSpec",
                              "ExportSpec", "WeightOptions"),
    "freeact_export.distributed": ("Ranks", "finish"),
    "freeact_export.errors": ("UserError",),
    "freeact_export.files": ("check_new_output", "interrupted_message", "interruptible"),
    "freeact_export.preflight": ("require_room", "writing"),
    "freeact_export.quantize.planner": ("DEFAULT_METHOD", "LEARNED", "METHODS"),
    "freeact_export.runtime.trt_engine": ("BuildSpec", "ProfileSpec"),
    "freeact_export.token_types": ("DEFAULT_TYPES",),
}
_WHERE = {name: module for module, names in _SOURCES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'freeact_export.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return __all__
