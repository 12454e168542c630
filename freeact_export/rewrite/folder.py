"""The rewritten folder `freeact-export MODEL.onnx` writes, and how every later stage reads it back.

The output folder holds everything later stages need and nothing they must guess:
  plugin.onnx     FreeActQuantize + Int4MatMul (what TensorRT parses)
  portable.onnx   the same plan in standard ONNX ops (what ONNX Runtime runs anywhere)
  plan/           the plan (plan.json + plan.safetensors)
  tokenizer + config files copied from the input folder, source.json (the input's export.json)
  report.json     settings, timings, layer counts, weight bytes before/after, layers left in float
  manifest.json   the model it was made for and the sha256 of every file above (freeact_export.manifest),
                  verified by load_rewritten before any command uses the folder
  check/          written by `freeact-export check` (parity and perplexities)
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from freeact_export import manifest
from freeact_export.errors import UserError
from freeact_export.onnx_in.graph import read_onnx
from freeact_export.plan import Plan

PLUGIN_GRAPH, PORTABLE_GRAPH, PLAN_DIR = "plugin.onnx", "portable.onnx", "plan"
_EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000
# Copied from the input's folder, where present: what a tokenizer and a server need beside the graphs.
COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
          "generation_config.json", "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model")


def save_graph(model: onnx.ModelProto, path: Path) -> list[str]:
    """Write a graph, its weights in `<name>.data` beside it when protobuf's 2 GB limit is near."""
    if model.ByteSize() > _EXTERNAL_DATA_THRESHOLD_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
        onnx.checker.check_model(str(path))
        return [path.name, path.name + ".data"]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return [path.name]


_WRITE_AGAIN = manifest.REMEDY[manifest.REWRITTEN_KIND]


def load_rewritten(folder: str | Path) -> tuple[Path, Plan, dict]:
    """(folder, plan, report) of a rewritten folder, every file verified against its manifest first.

    UserError naming what is missing, unreadable or changed since the folder was written.
    """
    path = Path(folder)
    missing = [n for n in (PLUGIN_GRAPH, PORTABLE_GRAPH, PLAN_DIR, "report.json") if not (path / n).exists()]
    if missing:
        raise UserError(f"{folder} is not a folder written by 'freeact-export MODEL.onnx' (missing: "
                        f"{', '.join(missing)})")
    recorded = manifest.read(path, manifest.REWRITTEN_KIND)
    listed = [n for n in recorded["files"] if not n.startswith(PLAN_DIR + "/")]  # Plan.load verifies plan/
    manifest.verify(path, recorded, manifest.REWRITTEN_KIND,
                    list(dict.fromkeys([PLUGIN_GRAPH, PORTABLE_GRAPH, "report.json", *listed])))
    try:
        plan = Plan.load(path / PLAN_DIR)
        report = json.loads((path / "report.json").read_text())
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors, json and OS errors for a damaged folder
        raise UserError(f"{folder} has an unreadable plan or report.json ({type(err).__name__}); {_WRITE_AGAIN}") \
            from None
    return path, plan, report


def read_rewritten_graph(path: str | Path, external_data: bool = False) -> onnx.ModelProto:
    """plugin.onnx or portable.onnx of a rewritten folder; one UserError line if it is damaged."""
    return read_onnx(Path(path), _WRITE_AGAIN, external_data)
