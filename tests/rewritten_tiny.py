"""A rewritten tiny model (export → calibrate → plan → plugin and portable graphs), for deploy tests."""

from __future__ import annotations

from pathlib import Path

from freeact_export import api
from freeact_export.api import rewrite_onnx
from freeact_export.config import CalibSpec, ExportSpec, FreeActSpec
from tiny_models import save_tiny_model

CALIB = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)


def rewritten_tiny(root: Path, corpus: Path, arch: str = "llama", method: str = "rtn", bits: str = "w4a4",
                   kv_cache: bool = False) -> Path:
    """The folder `freeact-export MODEL.onnx` writes, for a tiny random-weight model."""
    hf = save_tiny_model(arch, root / f"{arch}-hf")
    api.export(str(hf), root / f"{arch}-onnx", ExportSpec(kv_cache=kv_cache, external_data="never"))
    out = root / f"{arch}-{method}-{bits}"
    rewrite_onnx(str(root / f"{arch}-onnx"), out, corpus=str(corpus), method=method, bits=bits,
                 types="sink=pos:3", calib=CALIB, freeact=FreeActSpec(steps=6), progress=False)
    return out
