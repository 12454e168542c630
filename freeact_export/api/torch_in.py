"""Entry points for a PyTorch model: evaluate, export, calibrate, plan, quantize.

Each composes the stages and returns a record: a plain dict ready for JSON, with what was
measured and every setting needed to reproduce it.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from freeact_export import __version__
from freeact_export.api.layerwise import PROPAGATION, plan_layer_by_layer
from freeact_export.assets import Corpus, ModelSource, resolve_corpus, resolve_model
from freeact_export.calibrate.run import CalibrationRecord, calibrate, corpus_calibration_windows, parse_type_rules
from freeact_export.config import (
    BITS_PRESETS,
    CALIB_PRESETS,
    FREEACT_PRESETS,
    LAYERWISE_ABOVE_PARAMS,
    CalibSpec,
    EvalSpec,
    FreeActSpec,
    WeightOptions,
)
from freeact_export.distributed import Ranks
from freeact_export.errors import UserError
from freeact_export.evaluate.perplexity import Windows, corpus_windows, perplexity
from freeact_export.files import atomic_path, check_new_output, stamped
from freeact_export.lazy_weights import LazyModel
from freeact_export.manifest import describe_torch_model
from freeact_export.models import DTYPES, bos_context_id, hf_folder, load_tokenizer, load_torch_model
from freeact_export.plan import Plan
from freeact_export.preflight import require_checkpoint_folder, require_context, require_room, writing
from freeact_export.quantize.planner import DEFAULT_METHOD, METHODS, build_plan, check_rounding, torch_weights
from freeact_export.runtime.layerwise_lm import LayerwiseLogits
from freeact_export.runtime.ort_lm import OrtLogits
from freeact_export.runtime.torch_lm import TorchLogits
from freeact_export.simulate.fake_quant import SimulatedLogits
from freeact_export.simulate.fit import require_fit, skeleton
from freeact_export.token_types import DEFAULT_TYPES, TokenTypes

DEVICES = ("auto", "cpu", "cuda")
LAYERWISE = ("auto", "on", "off")


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


def environment() -> dict:
    """The versions a record was measured with."""
    return {"freeact_export": __version__, "torch": torch.__version__, "onnxruntime": ort.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_json(record: dict, path: Path, overwrite: bool = False) -> None:
    """Write a record atomically (temp file, then rename), stamped so that --overwrite may replace it later."""
    with writing(path), atomic_path(Path(path), overwrite, kind="file") as tmp:
        tmp.write_text(json.dumps(stamped(record), indent=2) + "\n")


def evaluate(model: str | None, corpus: str, spec: EvalSpec = EvalSpec(), *, dtype: str = "float32",
             device: str = "auto", tokenizer: str | None = None, progress: bool = True,
             plan: str | Path | None = None, runtime: str = "torch", layerwise: str = "auto") -> dict:
    """Perplexity of a PyTorch or ONNX model on a corpus's eval split, per docs/evaluation.md.

    Args:
        model: registry name, Hugging Face folder, .gguf file, .onnx file or export folder
            (None with a plan: the model the plan was made for).
        corpus: registry name or UTF-8 text file.
        spec: windows and sequence length.
        dtype: PyTorch weight dtype (ONNX models run in the dtype they were exported in).
        device: "auto", "cpu" or "cuda".
        tokenizer: overrides the tokenizer that comes with the model (needed for a bare .onnx).
        progress: show a progress bar.
        plan: a plan folder from `quantize -o` executed on the PyTorch model.
        runtime: with a plan, "torch" (fake-quant simulation) or "kernels" (the Triton kernels of
            both ops: JIT on a CUDA GPU, or Triton's interpreter on the CPU under TRITON_INTERPRET=1).
        layerwise: "auto" (above LAYERWISE_ABOVE_PARAMS parameters), "on" or "off": a PyTorch model
            runs one decoder layer at a time over all windows (runtime torch, CPU; the same figure).
    """
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
    if runtime == "kernels":
        if plan is None:
            raise UserError("--runtime kernels executes a quantization plan: give --plan DIR (a folder from "
                            "'freeact-export quantize ... -o DIR')")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("--runtime kernels --device cuda needs a usable CUDA GPU, and none is here (the kernels "
                            "also run on the CPU in Triton's interpreter: TRITON_INTERPRET=1 --device cpu, slowly)")
        from freeact_export.kernels.launch import require_mode

        require_mode(torch.device(device))  # before the model loads
    loaded = None if plan is None else _load_plan(plan)  # codes mapped from the file until a runner needs them
    if model is None:
        if loaded is None or not loaded.info.get("model"):
            raise UserError("give --model (the plan does not name its model)" if loaded else "give --model")
        model = loaded.info["model"]
    source = resolve_model(model)
    if loaded is not None and source.kind == "onnx":
        raise UserError(f"--plan runs on a PyTorch model; {model} is ONNX (check ONNX-in folders with "
                        "'freeact-export check')")
    text = resolve_corpus(corpus)
    device = resolve_device(device, source)
    tok = load_tokenizer(source, tokenizer)
    require_context(config_folder(source), spec.seqlen, bos_context_id(tok) is not None, "eval windows", "--seqlen")
    windows = corpus_windows(tok, text, spec)  # before the slow model load
    if source.kind == "onnx":
        runner = OrtLogits(source.path, device)
    elif runtime == "torch" and layer_by_layer(source, layerwise):
        if device != "cpu":
            raise UserError("evaluating layer by layer runs on the CPU; pass --device cpu (or --layerwise off)")
        bare = skeleton(source)
        if loaded is not None and bare is not None:
            require_fit(bare, loaded, f"the plan in {plan}", model)
        runner = LayerwiseLogits(LazyModel(hf_folder(source), DTYPES[dtype]), windows.input_ids, loaded, progress)
    elif loaded is None:
        runner = TorchLogits(load_torch_model(source, dtype, device))
    else:
        bare = skeleton(source)  # the plan's recorded model against this one's, before any weight is loaded
        if bare is not None:
            require_fit(bare, loaded, f"the plan in {plan}", model)
        loaded.materialize()  # these runners hold the whole model anyway, and may write into what they hold
        if runtime == "kernels":
            from freeact_export.runtime.kernel_model import KernelLogits

            runner = KernelLogits(load_torch_model(source, dtype, device), loaded)
        else:
            runner = SimulatedLogits(load_torch_model(source, dtype, device), loaded)
    record = {"model": model, "model_path": str(source.path),
              **_perplexity_record(runner, windows, text, spec, progress), "device": device}
    if loaded is not None:
        record.update(plan=str(plan), method=loaded.method, bits=loaded.bits, types=loaded.token_types)
    return record


RUNTIMES = ("torch", "kernels")


def config_folder(source: ModelSource) -> Path | None:
    """The folder holding a model's config.json (a GGUF's is its cached conversion, made on first use)."""
    if source.kind == "onnx":
        return source.tokenizer_dir or source.path.parent
    return hf_folder(source)


def _load_plan(folder: str | Path) -> Plan:
    folder = Path(folder)
    if not (folder / "plan.json").is_file():
        hint = (" (an ONNX-in folder: its plan names ONNX nodes; check it with 'freeact-export check')"
                if (folder / "plan" / "plan.json").is_file() else "")
        raise UserError(f"{folder} holds no plan.json; write one with 'freeact-export quantize ... -o {folder}'{hint}")
    try:
        return Plan.load(folder, mapped=True)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot load the plan in {folder}: {err}") from None


def _perplexity_record(runner, windows: Windows, corpus: Corpus, spec: EvalSpec, progress: bool) -> dict:
    """Run the protocol of docs/evaluation.md with any runner; the record holds every setting beside the figure."""
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
        "environment": environment(),
    }


@dataclasses.dataclass
class Calibrated:
    """A loaded PyTorch model with its calibration record (and eval windows): what plans start from.

    Calibrating once and planning many times is how sweeps (tools/bench_accuracy.py) stay cheap.
    """

    model: str
    source: ModelSource
    corpus: Corpus
    preset: str
    device: str
    torch_model: torch.nn.Module
    record: CalibrationRecord
    eval_windows: Windows | None
    eval_spec: EvalSpec | None
    calibration_s: float
    massive: dict

    def type_token_counts(self) -> dict[str, int]:
        return self.record.type_token_counts()


def _check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise UserError(f"unknown {kind} '{value}'; choose one of {', '.join(choices)}")


@dataclasses.dataclass
class CalibrationInputs:
    """What calibrating a PyTorch model starts from, checked before any weight is loaded."""

    source: ModelSource
    corpus: Corpus
    device: str
    tokenizer: object
    token_types: TokenTypes
    calib: CalibSpec
    calib_windows: np.ndarray
    eval_windows: Windows | None


def calibration_inputs(model: str, corpus: str, types: str, preset: str, device: str, eval_spec: EvalSpec | None,
                       calib: CalibSpec | None) -> CalibrationInputs:
    """The model source, corpus windows and type rules of a calibration (see calibrate_model)."""
    source = resolve_model(model)
    if source.kind == "onnx":
        raise UserError(f"{model} is ONNX; quantize it with 'freeact-export {model} ...' (the ONNX-in path)")
    _check_choice("preset", preset, CALIB_PRESETS)
    token_types = parse_type_rules(types)
    for rule in token_types.rules:  # calibration feeds the model input_ids alone
        if rule.kind == "input":
            raise UserError(f"token-type rule '{rule.to_text()}' needs the model input '{rule.input_name}', which "
                            "calibration from a text corpus cannot fill (quantize feeds the model input_ids only); "
                            "use id or position rules")
    text = resolve_corpus(corpus)
    device = resolve_device(device, source)
    tok = load_tokenizer(source)
    calib_spec = CALIB_PRESETS[preset] if calib is None else calib
    folder = config_folder(source)
    if eval_spec is not None:
        require_context(folder, eval_spec.seqlen, bos_context_id(tok) is not None, "eval windows", "--seqlen")
    calib_windows = corpus_calibration_windows(tok, text, calib_spec, folder)
    windows = None if eval_spec is None else corpus_windows(tok, text, eval_spec)
    return CalibrationInputs(source, text, device, tok, token_types, calib_spec, calib_windows, windows)


def layer_by_layer(source: ModelSource, layerwise: str) -> bool:
    """Whether a PyTorch model runs one decoder layer at a time: "on", "off", or "auto" (above
    LAYERWISE_ABOVE_PARAMS parameters, counted on the weightless skeleton)."""
    _check_choice("--layerwise setting", layerwise, LAYERWISE)
    if layerwise != "auto":
        return layerwise == "on"
    bare = skeleton(source)
    return bare is not None and sum(p.numel() for p in bare.parameters()) > LAYERWISE_ABOVE_PARAMS


def calibrate_model(model: str, corpus: str = "wiki", types: str = DEFAULT_TYPES, preset: str = "cpu", *,
                    device: str = "auto", eval_spec: EvalSpec | None = EvalSpec(), calib: CalibSpec | None = None,
                    progress: bool = True, plan_output: Path | None = None,
                    rounding: tuple[str, WeightOptions] | None = None) -> Calibrated:
    """Load a PyTorch model and collect its per-type calibration statistics (docs/evaluation.md sampling).

    Args:
        model: registry name, Hugging Face folder or .gguf (ONNX models take the ONNX-in path).
        corpus: calibration comes from its calibration split, evaluation from its eval split.
        types: token-type rules (freeact_export.token_types), "single" for one type.
        preset: "cpu" (32 x 512 calibration tokens) or "gpu" (128 x 1024).
        eval_spec: eval windows prepared for plan_model's perplexity (None: no evaluation).
        calib: calibration data settings overriding the preset's (the preset still picks the
            learning settings of FreeAct / FlatQuant).
        plan_output: where the plan will be written: its folder's free space is checked against
            the plan's size once the model is loaded, before calibrating.
        rounding: (bits, weight options) the plan will use, checked against every linear layer's
            input once the model is loaded, before calibrating.
    """
    inputs = calibration_inputs(model, corpus, types, preset, device, eval_spec, calib)
    source, text, device, tok = inputs.source, inputs.corpus, inputs.device, inputs.tokenizer
    token_types, calib_spec, calib_windows, windows = (inputs.token_types, inputs.calib, inputs.calib_windows,
                                                       inputs.eval_windows)
    torch_model = load_torch_model(source, "float32", device)
    if plan_output is not None:  # INT4 codes are stored a byte each; transforms and scales add little
        linear = sum(m.weight.numel() for m in torch_model.modules() if isinstance(m, torch.nn.Linear))
        require_room(plan_output, linear, "the plan (a byte per linear weight)")
    if rounding is not None:
        check_rounding(*rounding, ((name, m.in_features) for name, m in torch_model.named_modules()
                                   if isinstance(m, torch.nn.Linear)))
    start = time.perf_counter()
    record = calibrate(torch_model, calib_windows, token_types, calib_spec, progress)
    return Calibrated(model, source, text, preset, device, torch_model, record, windows, eval_spec,
                      round(time.perf_counter() - start, 1), record.massive.summary(tok))


def plan_model(cal: Calibrated, method: str = DEFAULT_METHOD, bits: str = "w4a4", seed: int = 0,
               progress: bool = True, freeact: FreeActSpec | None = None,
               checkpoint: str | Path | None = None, rounding: WeightOptions = WeightOptions()) -> tuple[Plan, dict]:
    """Plan one method at one bit setting from a calibration; measure its simulated perplexity.

    Args:
        freeact: learning settings of FreeAct / FlatQuant (default: the calibration preset's).
        checkpoint: a folder for learned groups, so an interrupted run resumes (see build_plan).
        rounding: the weight rounding options (clip search, code range, act-order, W4A16 groups).
    """
    _check_choice("method", method, METHODS)
    _check_choice("bits", bits, BITS_PRESETS)
    start = time.perf_counter()
    freeact = FREEACT_PRESETS[cal.preset] if freeact is None else freeact
    plan = build_plan(torch_weights(cal.torch_model), cal.record, method, bits, seed, progress, freeact,
                      checkpoint, rounding)
    plan_s = round(time.perf_counter() - start, 1)
    report = _describe(plan, cal.model, cal.source, cal.corpus, cal.preset, cal.device, cal.record.spec,
                       cal.type_token_counts(), cal.massive, cal.torch_model)
    report.update(calibration_s=cal.calibration_s, plan_s=plan_s, quantize_s=round(cal.calibration_s + plan_s, 1),
                  peak_rss_gb=round(peak_rss_gb(), 2))
    if cal.eval_windows is not None:
        runner = SimulatedLogits(cal.torch_model, plan)
        report["eval"] = _perplexity_record(runner, cal.eval_windows, cal.corpus, cal.eval_spec, progress)
    return plan, report


def _describe(plan: Plan, model: str, source: ModelSource, corpus: Corpus, preset: str, device: str,
              calib: CalibSpec, counts: dict[str, int], massive: dict, torch_model: torch.nn.Module) -> dict:
    """Record in the plan what it was made from, and the quantize report's settings (times added by the caller)."""
    plan.info.update({"model": model, "corpus": corpus.name, "preset": preset, "calibration": calib.to_dict(),
                      "type_token_counts": counts})
    plan.model = describe_torch_model(torch_model)  # recorded in the folder's manifest
    return {"kind": "quantize", "model": model, "model_path": str(source.path), "method": plan.method,
            "bits": plan.bits, "weights": plan.info["weights"], "types": plan.token_types, "preset": preset,
            "seed": plan.info["seed"], "device": device, "calibration": calib.to_dict(), "type_token_counts": counts,
            "groups": len(plan.groups), "massive_activations": massive,
            "learning_spec": plan.info.get("freeact"), "learning": plan.info.get("learning"),
            "groups_from_checkpoint": plan.info.get("groups_from_checkpoint", 0),
            "checkpoint_learn_s": plan.info.get("checkpoint_learn_s")}


def quantize_layer_by_layer(model: str, corpus: str = "wiki", method: str = DEFAULT_METHOD, bits: str = "w4a4",
                            types: str = DEFAULT_TYPES, preset: str = "cpu", *, seed: int = 0,
                            eval_spec: EvalSpec | None = EvalSpec(), calib: CalibSpec | None = None,
                            freeact: FreeActSpec | None = None, progress: bool = True,
                            checkpoint: str | Path | None = None, rounding: WeightOptions = WeightOptions(),
                            propagate: str = "fp", plan_output: Path | None = None,
                            ranks: Ranks | None = None) -> tuple[Plan, dict | None]:
    """quantize's plan and report for a model read one decoder layer at a time (CPU; memory: the
    embeddings and head, one layer, the windows' hidden states and one layer's statistics).

    propagate: "fp" (each layer calibrates on the floating-point model's activations; the plan equals
    calibrate_model + plan_model's) or "quantized" (on the quantized earlier layers' outputs).
    ranks: several processes share the work (freeact_export.distributed); rank 0 alone evaluates and
    reports (the other ranks return no report).
    """
    _check_choice("propagation", propagate, PROPAGATION)
    inputs = calibration_inputs(model, corpus, types, preset, "cpu", eval_spec, calib)
    start = time.perf_counter()
    lazy = LazyModel(hf_folder(inputs.source))
    names = {f"{lazy.layer_prefix}.{n}": m for n, m in lazy.layers.named_modules() if isinstance(m, torch.nn.Linear)}
    if plan_output is not None:
        require_room(plan_output, sum(m.weight.numel() for m in names.values()), "the plan (a byte per linear weight)")
    check_rounding(bits, rounding, ((name, m.in_features) for name, m in names.items()))
    freeact = FREEACT_PRESETS[preset] if freeact is None else freeact
    # each layer's codes go to a file once planned and are mapped from it (freeact_export.mapped); the mappings
    # keep the files' data after the folder is gone, so nothing is left behind however the run ends
    with tempfile.TemporaryDirectory(prefix=".freeact-codes-", dir=None if plan_output is None else
                                     Path(plan_output).absolute().parent) as spill:
        plan, massive, counts = plan_layer_by_layer(
            lazy.model, inputs.calib_windows, inputs.token_types, inputs.calib, method, bits, seed=seed,
            freeact=freeact, rounding=rounding, checkpoint=checkpoint, propagate=propagate, load=lazy.load,
            release=lazy.release, progress=progress, ranks=ranks, spill=Path(spill))
    if ranks is not None and not ranks.leader:
        return plan, None
    quantize_s = round(time.perf_counter() - start, 1)
    report = _describe(plan, model, inputs.source, inputs.corpus, preset, "cpu", inputs.calib, counts,
                       massive.summary(inputs.tokenizer), lazy.model)
    report.update(layer_by_layer={"propagate": propagate}, calibration_s=None, plan_s=None, quantize_s=quantize_s,
                  peak_rss_gb=round(peak_rss_gb(), 2), processes=1 if ranks is None else ranks.world)
    plan.info["layer_by_layer"] = {"propagate": propagate}
    if inputs.eval_windows is not None:  # every layer was released: the same model reads them again
        runner = LayerwiseLogits(lazy, inputs.eval_windows.input_ids, plan, progress)
        report["eval"] = _perplexity_record(runner, inputs.eval_windows, inputs.corpus, eval_spec, progress)
    return plan, report


def quantize(model: str, corpus: str = "wiki", method: str = DEFAULT_METHOD, bits: str = "w4a4",
             types: str = DEFAULT_TYPES, preset: str = "cpu", output: str | Path | None = None, *, seed: int = 0,
             device: str = "auto", eval_spec: EvalSpec | None = EvalSpec(), calib: CalibSpec | None = None,
             freeact: FreeActSpec | None = None, overwrite: bool = False, progress: bool = True,
             checkpoint: str | Path | None = None, rounding: WeightOptions = WeightOptions(),
             layerwise: str = "auto", propagate: str = "fp", ranks: Ranks | None = None) -> dict | None:
    """Calibrate, plan and (unless eval_spec is None) measure; write the plan folder if `output` is set.

    See calibrate_model and plan_model for the arguments; `seed` drives the method's random
    choices only (calibration windows always use seed 0, so every method sees the same data).
    layerwise: "auto" (one decoder layer at a time above LAYERWISE_ABOVE_PARAMS parameters), "on" or
    "off"; propagate: what the next layer calibrates on then (see quantize_layer_by_layer).
    ranks: processes started by torchrun share the work, layer by layer (freeact_export.distributed);
    rank 0 writes the folder and returns the report, the others return None.
    """
    _check_choice("method", method, METHODS)
    _check_choice("bits", bits, BITS_PRESETS)
    out = None if output is None or (ranks is not None and not ranks.leader) else Path(output)
    if ranks is not None and layerwise == "off":
        raise UserError(f"{ranks.world} processes quantize one decoder layer at a time; drop --layerwise off "
                        "(or run one process)")
    if out is not None:  # before the slow part
        require_room(out)
        check_new_output(out, overwrite)
    if checkpoint is not None:
        require_checkpoint_folder(checkpoint)
    _check_choice("propagation", propagate, PROPAGATION)
    if ranks is not None or layer_by_layer(resolve_model(model), layerwise):
        if resolve_device(device, resolve_model(model)) != "cpu":
            raise UserError("quantizing layer by layer runs on the CPU; pass --device cpu (or --layerwise off)")
        plan, report = quantize_layer_by_layer(model, corpus, method, bits, types, preset, seed=seed,
                                               eval_spec=eval_spec, calib=calib, freeact=freeact,
                                               progress=progress and (ranks is None or ranks.leader),
                                               checkpoint=checkpoint, rounding=rounding, propagate=propagate,
                                               plan_output=out, ranks=ranks)
        if report is None:  # not rank 0
            return None
    else:
        cal = calibrate_model(model, corpus, types, preset, device=device, eval_spec=eval_spec, calib=calib,
                              progress=progress, plan_output=out, rounding=(bits, rounding))
        plan, report = plan_model(cal, method, bits, seed, progress, freeact, checkpoint, rounding)
    if out is not None:
        with writing(out), atomic_path(out, overwrite) as tmp:
            tmp.mkdir()
            (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            plan.write_into(tmp)  # last: its manifest hashes every file in the folder, report.json too
    return report


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
