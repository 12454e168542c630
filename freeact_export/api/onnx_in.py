"""Entry points for an ONNX model: `freeact-export MODEL.onnx` (calibrate, plan, rewrite) and `check`.

It writes one folder, whose layout rewrite/folder.py describes and every later stage reads back through
(load_rewritten verifies it against its manifest first).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from freeact_export import manifest
from freeact_export.assets import ModelSource, resolve_corpus, resolve_model
from freeact_export.calibrate.run import corpus_calibration_windows, parse_type_rules
from freeact_export.config import CALIB_PRESETS, FREEACT_PRESETS, CalibSpec, EvalSpec, FreeActSpec, WeightOptions
from freeact_export.errors import UserError
from freeact_export.files import atomic_path, check_new_output
from freeact_export.models import load_tokenizer
from freeact_export.onnx_in.calibrate import calibrate_onnx
from freeact_export.onnx_in.graph import load_onnx, read_onnx
from freeact_export.preflight import files_bytes, require_checkpoint_folder, require_room, writing
from freeact_export.quantize.planner import DEFAULT_METHOD, build_plan, check_rounding
from freeact_export.rewrite.folder import COPIED, PLAN_DIR, PLUGIN_GRAPH, PORTABLE_GRAPH, save_graph
from freeact_export.rewrite.graphs import rewrite
from freeact_export.token_types import DEFAULT_TYPES


def rewrite_onnx(model: str, output: str | Path, *, corpus: str = "wiki", method: str = DEFAULT_METHOD,
                 bits: str = "w4a4", types: str = DEFAULT_TYPES, preset: str = "cpu", seed: int = 0,
                 calib: CalibSpec | None = None, freeact: FreeActSpec | None = None, tokenizer: str | None = None,
                 device: str = "cpu", overwrite: bool = False, progress: bool = True,
                 checkpoint: str | Path | None = None, rounding: WeightOptions = WeightOptions()) -> dict:
    """Calibrate with ONNX Runtime, plan, write the plugin and portable graphs; return the report.

    `checkpoint`: a folder for learned groups, so an interrupted run resumes (see build_plan);
    `rounding`: the weight rounding options.
    """
    source = resolve_model(model)
    if source.kind != "onnx":
        raise UserError(f"{model} is not an ONNX model; export it first ('freeact-export export --model {model} "
                        "-o DIR') or quantize the PyTorch model with 'freeact-export quantize'")
    out = Path(output)
    graph = files_bytes(*(f for f in source.path.parent.iterdir() if f.name.startswith(source.path.name)))
    require_room(out, graph, "the two rewritten graphs (estimated as the input graph's size)")
    check_new_output(out, overwrite)
    if checkpoint is not None:
        require_checkpoint_folder(checkpoint)
    token_types = parse_type_rules(types)
    onnx_model = load_onnx(source.path)
    for rule in token_types.rules:
        if rule.kind == "input":
            where = ("which this graph does not have" if rule.input_name not in onnx_model.input_names else
                     "which calibration from a text corpus cannot fill")
            raise UserError(f"token-type rule '{rule.to_text()}' needs the graph input '{rule.input_name}', {where}; "
                            "use id or position rules here")
    check_rounding(bits, rounding, ((g.name, g.in_features) for g in onnx_model.groups))
    tok = load_tokenizer(source, tokenizer)
    text = resolve_corpus(corpus)
    calib_spec = CALIB_PRESETS[preset] if calib is None else calib
    windows = corpus_calibration_windows(tok, text, calib_spec, source.tokenizer_dir or source.path.parent)
    start = time.perf_counter()
    record = calibrate_onnx(onnx_model, windows, token_types, calib_spec, device, progress)
    calibration_s = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    learning = FREEACT_PRESETS[preset] if freeact is None else freeact
    plan = build_plan(onnx_model.weights, record, method, bits, seed, progress, learning, checkpoint, rounding)
    plan_s = round(time.perf_counter() - start, 1)
    counts = record.type_token_counts()
    plan.info.update({"model": model, "corpus": text.name, "preset": preset, "calibration": calib_spec.to_dict(),
                      "type_token_counts": counts, "frontend": "onnxruntime"})
    plan.model = _describe_source(source)
    report = {"kind": "rewrite", "model": model, "model_path": str(source.path), "method": method, "bits": bits,
              "weights": rounding.to_dict(),
              "types": token_types.to_text(), "preset": preset, "seed": seed, "corpus": text.name,
              "calibration": calib_spec.to_dict(), "type_token_counts": counts,
              "calibration_s": calibration_s, "plan_s": plan_s, "groups": len(plan.groups),
              "massive_activations": record.massive.summary(tok),
              "left_in_float": onnx_model.skipped, "learning": plan.info.get("learning"),
              "groups_from_checkpoint": plan.info.get("groups_from_checkpoint", 0),
              "checkpoint_learn_s": plan.info.get("checkpoint_learn_s")}
    with writing(out), atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        (tmp / PLAN_DIR).mkdir()
        plan.write_files(tmp / PLAN_DIR)  # covered by the folder's manifest, written last
        start = time.perf_counter()
        files = {}
        full = read_onnx(onnx_model.path, "re-export it (its weight data must lie beside it)", external_data=True)
        for name, portable in ((PLUGIN_GRAPH, False), (PORTABLE_GRAPH, True)):
            rewritten = rewrite(onnx_model, full, plan, portable)
            files[name] = save_graph(rewritten.model, tmp / name)
            del rewritten.model
        report.update(rewrite_s=round(time.perf_counter() - start, 1), files=files,
                      quantized_layers=rewritten.layers, weight_bytes_before=rewritten.weight_bytes_before,
                      weight_bytes_after=rewritten.weight_bytes_after)
        for name in COPIED:
            if source.tokenizer_dir is not None and (source.tokenizer_dir / name).is_file():
                shutil.copy2(source.tokenizer_dir / name, tmp / name)
        export_json = source.path.parent / "export.json"
        if export_json.is_file():
            shutil.copy2(export_json, tmp / "source.json")
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        manifest.write(tmp, manifest.REWRITTEN_KIND, manifest.model_facts(plan))
    return report


def _describe_source(source: ModelSource) -> dict:
    """Architecture and layer count from the config.json beside the ONNX model (None where it has none)."""
    folder = source.tokenizer_dir if source.tokenizer_dir is not None else source.path.parent
    try:
        return manifest.describe_config(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return {"architecture": None, "num_layers": None}


def check(folder: str | Path, *, corpus: str = "wiki", eval_spec: EvalSpec | None = EvalSpec(),
          progress: bool = True, engine: str | Path | None = None) -> dict:
    """The parity report of a rewritten folder (simulation, plugin and portable graphs, engine): parity/check.py."""
    from freeact_export.parity.check import check as run_check

    return run_check(folder, corpus=corpus, eval_spec=eval_spec, progress=progress, engine=engine)
