"""The Python entry points a user imports; each composes the stages and returns a record.

The CLI calls only these. Records are plain dicts ready for JSON: what was measured and
every setting needed to reproduce it.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import onnxruntime as ort
import torch

from freeact_export import __version__
from freeact_export.assets import Corpus, ModelSource, resolve_corpus, resolve_model
from freeact_export.calibrate.run import calibrate, calibration_windows
from freeact_export.config import BITS_PRESETS, CALIB_PRESETS, FREEACT_PRESETS, EvalSpec, ExportSpec
from freeact_export.errors import UserError
from freeact_export.evaluate.perplexity import Windows, bos_context_id, eval_windows, perplexity
from freeact_export.export.prefill import export_prefill
from freeact_export.files import atomic_path, check_new_output
from freeact_export.models import load_tokenizer, load_torch_model
from freeact_export.parity.logits import compare_logits, sample_batches
from freeact_export.quantize.planner import METHODS, build_plan
from freeact_export.runtime.ort_lm import OrtLogits
from freeact_export.runtime.torch_lm import TorchLogits
from freeact_export.simulate.fake_quant import SimulatedLogits
from freeact_export.token_types import TokenTypes

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str, source: ModelSource) -> str:
    """'auto' picks CUDA when the runtime that will run this model can use it."""
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if source.kind == "onnx":
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    else:
        has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise UserError("--device cuda was asked for but no CUDA device is usable here; use --device cpu")
    return device


def _environment() -> dict:
    return {"freeact_export": __version__, "torch": torch.__version__, "onnxruntime": ort.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_json(record: dict, path: Path, overwrite: bool = False) -> None:
    """Write a record atomically (temp file, then rename)."""
    with atomic_path(Path(path), overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def evaluate(model: str, corpus: str, spec: EvalSpec = EvalSpec(), *, dtype: str = "float32",
             device: str = "auto", tokenizer: str | None = None, progress: bool = True) -> dict:
    """Perplexity of a PyTorch or ONNX model on a corpus's eval split, per shared/EVAL.md.

    Args:
        model: registry name, Hugging Face folder, .gguf file, .onnx file or export folder.
        corpus: registry name or UTF-8 text file.
        spec: windows and sequence length.
        dtype: PyTorch weight dtype (ONNX models run in the dtype they were exported in).
        device: "auto", "cpu" or "cuda".
        tokenizer: overrides the tokenizer that comes with the model (needed for a bare .onnx).
        progress: show a progress bar.
    """
    source = resolve_model(model)
    text = resolve_corpus(corpus)
    device = resolve_device(device, source)
    windows = _windows(load_tokenizer(source, tokenizer), text, spec)  # before the slow model load
    if source.kind == "onnx":
        runner = OrtLogits(source.path, device)
    else:
        runner = TorchLogits(load_torch_model(source, dtype, device))
    return {"model": model, "model_path": str(source.path),
            **_perplexity_record(runner, windows, text, spec, progress), "device": device}


def _windows(tokenizer, corpus: Corpus, spec: EvalSpec) -> Windows:
    token_ids = tokenizer(corpus.eval_text, add_special_tokens=False).input_ids
    return eval_windows(token_ids, spec, bos_context_id(tokenizer), corpus.name)


def _perplexity_record(runner, windows: Windows, corpus: Corpus, spec: EvalSpec, progress: bool) -> dict:
    """Run the EVAL.md protocol with any runner; the record holds every setting beside the figure."""
    start = time.perf_counter()
    result = perplexity(runner, windows, progress)
    return {
        "kind": "perplexity",
        "corpus": corpus.name,
        "split": "eval",
        "seqlen": spec.seqlen,
        "windows": result.windows,
        "windows_requested": spec.windows,
        "windows_available": windows.available,
        "bos_context": bool(windows.context),
        "predictions": result.predictions,
        "dtype": runner.dtype,
        "runtime": runner.runtime,
        "perplexity": result.perplexity,
        "nll_mean": result.nll_mean,
        "window_nll_means": result.window_nll_means,
        "wall_s": round(time.perf_counter() - start, 2),
        "environment": _environment(),
    }


def export(model: str, output: str | Path, spec: ExportSpec = ExportSpec(), *,
           overwrite: bool = False) -> dict:
    """Export the floating-point prefill graph into a folder, checked against PyTorch.

    The folder holds model.onnx (+ model.onnx.data for large models), the tokenizer and
    config, and export.json with the settings and the measured logits parity.
    """
    source = resolve_model(model)
    if source.kind == "onnx":
        raise UserError(f"{model} is already ONNX; export takes a model name, a Hugging Face folder "
                        "or a .gguf file")
    out = Path(output)
    if out.suffix == ".onnx":
        raise UserError(f"-o names the export folder (model.onnx, tokenizer, export.json go inside); "
                        f"try -o {out.with_suffix('')}")
    check_new_output(out, overwrite)  # fail before the slow load
    tok = load_tokenizer(source)
    torch_model = load_torch_model(source, "float32", "cpu")
    start = time.perf_counter()
    with atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        files = export_prefill(torch_model, tmp / "model.onnx", spec)
        tok.save_pretrained(tmp)
        torch_model.config.save_pretrained(tmp)
        record = {
            "kind": "export",
            "model": model,
            "model_path": str(source.path),
            "output": str(out),
            "files": [f.name for f in files],
            "dtype": "float32",
            "inputs": ["input_ids [batch, sequence] int64", "attention_mask [batch, sequence] int64"],
            "outputs": ["logits [batch, sequence, vocab] float32"],
            "spec": spec.to_dict(),
            "export_s": round(time.perf_counter() - start, 1),
            "environment": _environment(),
        }
        if spec.verify:
            ort_runner = OrtLogits(tmp / "model.onnx", "cpu")
            parity = compare_logits(TorchLogits(torch_model), ort_runner, sample_batches(tok))
            record["parity_vs_torch"] = parity.to_dict()
            del ort_runner
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def quantize(model: str, corpus: str = "wiki", method: str = "rtn", bits: str = "w4a4", types: str = "single",
             preset: str = "cpu", output: str | Path | None = None, *, seed: int = 0, device: str = "auto",
             eval_spec: EvalSpec | None = EvalSpec(), overwrite: bool = False, progress: bool = True) -> dict:
    """Calibrate, plan and (unless eval_spec is None) measure the simulated perplexity.

    Args:
        model: registry name, Hugging Face folder or .gguf (ONNX models take the ONNX-in path).
        corpus: calibration comes from its calibration split, evaluation from its eval split.
        method: one of freeact_export.quantize.planner.METHODS.
        bits: "w4a4", "w4a8" or "w4a16" (EVAL.md's standard settings).
        types: token-type rules (freeact_export.token_types), "single" for one type.
        preset: calibration preset, "cpu" (32 x 512 tokens) or "gpu" (128 x 1024).
        output: folder for plan.json, plan.safetensors and report.json (None: write nothing).
        seed: the method's random choices (calibration windows always use seed 0).
    """
    source = resolve_model(model)
    if source.kind == "onnx":
        raise UserError(f"{model} is ONNX; quantize it with 'freeact-export {model} ...' (the ONNX-in path)")
    if method not in METHODS:
        raise UserError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    if bits not in BITS_PRESETS:
        raise UserError(f"unknown bits '{bits}'; choose one of {', '.join(BITS_PRESETS)}")
    if preset not in CALIB_PRESETS:
        raise UserError(f"unknown preset '{preset}'; choose one of {', '.join(CALIB_PRESETS)}")
    try:
        token_types = TokenTypes.parse(types)
    except ValueError as err:
        raise UserError(str(err)) from None
    out = None if output is None else Path(output)
    if out is not None:
        check_new_output(out, overwrite)
    text = resolve_corpus(corpus)
    device = resolve_device(device, source)
    tok = load_tokenizer(source)
    windows = None if eval_spec is None else _windows(tok, text, eval_spec)
    calib_spec = CALIB_PRESETS[preset]
    calib_ids = tok(text.calib_text, add_special_tokens=False).input_ids
    calib_windows = calibration_windows(calib_ids, calib_spec, bos_context_id(tok))
    torch_model = load_torch_model(source, "float32", device)

    start = time.perf_counter()
    record = calibrate(torch_model, calib_windows, token_types, calib_spec, progress)
    calibrated = time.perf_counter()
    plan = build_plan(torch_model, record, method, bits, seed, progress, FREEACT_PRESETS[preset])
    planned = time.perf_counter()
    plan.info.update({"model": model, "corpus": corpus, "preset": preset, "calibration": calib_spec.to_dict(),
                      "type_token_counts": {name: record.stats[record.groups[0].name][k].count
                                            for k, name in enumerate(token_types.names)}})
    report = {"kind": "quantize", "model": model, "model_path": str(source.path), "method": method, "bits": bits,
              "types": token_types.to_text(), "preset": preset, "seed": seed, "device": device,
              "calibration_s": round(calibrated - start, 1), "plan_s": round(planned - calibrated, 1),
              "quantize_s": round(planned - start, 1), "peak_rss_gb": round(_peak_rss_gb(), 2),
              "calibration": plan.info["calibration"], "type_token_counts": plan.info["type_token_counts"],
              "groups": len(plan.groups), "learning": plan.info.get("learning")}
    if windows is not None:
        report["eval"] = _perplexity_record(SimulatedLogits(torch_model, plan), windows, text, eval_spec, progress)
    if out is not None:
        with atomic_path(out, overwrite) as tmp:
            tmp.mkdir()
            plan.write_into(tmp)
            (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
