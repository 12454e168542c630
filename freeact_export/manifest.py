"""manifest.json of plan folders and rewritten folders: what they were made for, and their files' hashes.

    {"format": "freeact-export plan" | "freeact-export rewritten folder", "schema_version": 1,
     "freeact_export": "0.1.0",
     "model": {"architecture": "LlamaForCausalLM", "num_layers": 30, "num_groups": 120,
               "groups": [{"name": ..., "in_features": 576,
                           "linears": [{"name": ..., "weight_shape": [576, 576]}, ...]}, ...]},
     "files": {"plan.json": {"bytes": 1234, "sha256": "..."}, ...}}

Writers call `write` last, inside their atomic_path block, so a folder is never complete without it.
Readers call `verify` before reading anything else: a file changed after it was written (a plan cut
short, a graph swapped for the float model) is refused with one line naming it, instead of giving
a figure for something other than what was quantized. The model facts let a plan refuse a model
it was not made for (simulate/fit.py) before any module is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from freeact_export import __version__
from freeact_export.errors import UserError
from freeact_export.machine import sha256


class PlanLike(Protocol):
    """What the manifest reads of a plan.Plan (the plan module builds on this one, not the reverse)."""

    model: dict
    groups: list

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
PLAN_KIND, REWRITTEN_KIND = "plan", "rewritten folder"
REMEDY = {PLAN_KIND: "write it again with 'freeact-export quantize ... -o DIR'",
          REWRITTEN_KIND: "write the folder again with 'freeact-export MODEL.onnx -o DIR'"}
_WHAT = {PLAN_KIND: "the plan", REWRITTEN_KIND: "the folder"}


def model_facts(plan: PlanLike) -> dict:
    """The model a plan was made for: plan.model's architecture and layer count, and every layer's shape."""
    return {"architecture": plan.model.get("architecture"), "num_layers": plan.model.get("num_layers"),
            "num_groups": len(plan.groups),
            "groups": [{"name": g.name, "in_features": g.in_features,
                        "linears": [{"name": lin.name, "weight_shape": list(lin.codes.shape)} for lin in g.linears]}
                       for g in plan.groups]}


def describe_config(config: dict) -> dict:
    """Architecture and decoder layer count from a Hugging Face config.json (its text config for a VLM)."""
    text = config.get("text_config") or config
    architectures = config.get("architectures") or [None]
    return {"architecture": architectures[0], "num_layers": text.get("num_hidden_layers")}


def describe_torch_model(model) -> dict:
    """Architecture (the loaded class) and decoder layer count of a Hugging Face PyTorch model."""
    return {"architecture": type(model).__name__,
            "num_layers": getattr(model.config.get_text_config(), "num_hidden_layers", None)}


def write(folder: Path, kind: str, model: dict) -> dict:
    """Hash every file under `folder` (the manifest aside) and write folder/manifest.json."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": f"freeact-export {kind}", "schema_version": SCHEMA_VERSION, "freeact_export": __version__,
                "model": model, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read(folder: Path, kind: str) -> dict:
    """folder/manifest.json of a folder of `kind`; UserError when absent, unreadable or of another schema."""
    folder = Path(folder)
    path = folder / MANIFEST
    remedy = REMEDY[kind]
    if not path.is_file():
        raise UserError(f"{folder} has no {MANIFEST} (written by an older freeact-export, which did not record "
                        f"what it holds); {remedy}")
    try:
        manifest = json.loads(path.read_text())
        version, files, model = manifest["schema_version"], manifest["files"], manifest["model"]
        if not isinstance(files, dict) or not isinstance(model, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is unreadable or incomplete; {remedy}") from None
    if manifest.get("format") != f"freeact-export {kind}":
        raise UserError(f"{path} describes a '{manifest.get('format')}', not a freeact-export {kind}; {remedy}")
    if version != SCHEMA_VERSION:
        raise UserError(f"{path} has schema version {version}, this freeact-export reads {SCHEMA_VERSION}; {remedy}")
    return manifest


def verify(folder: Path, manifest: dict, kind: str, names: list[str]) -> None:
    """Check that each named file is listed in the manifest and matches it (size, then sha256)."""
    folder = Path(folder)
    remedy, what = REMEDY[kind], _WHAT[kind]
    for name in names:
        entry = manifest["files"].get(name)
        path = folder / name
        if not isinstance(entry, dict):
            raise UserError(f"{folder / MANIFEST} does not list {name}; {remedy}")
        if not path.is_file():
            raise UserError(f"{path} is missing (its manifest lists it): {what} was changed after it was written; "
                            f"{remedy}")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            differs = f"{size} bytes, the manifest says {entry.get('bytes')}"
        elif sha256(path) != entry.get("sha256"):
            differs = "sha256 differs"
        else:
            continue
        raise UserError(f"{path} does not match its manifest ({differs}): {what} was changed after it was written; "
                        f"{remedy}")


def check_plan_facts(folder: Path, manifest: dict, kind: str, plan: PlanLike) -> None:
    """The loaded plan's layers are the ones its manifest records (a hand-edited manifest can lie)."""
    recorded, loaded = manifest["model"], model_facts(plan)
    for key in ("num_groups", "groups"):
        if recorded.get(key) != loaded[key]:
            raise UserError(f"{Path(folder) / MANIFEST} records other layers than the plan holds ({key} differ); "
                            f"{REMEDY[kind]}")
