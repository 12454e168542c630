"""Entry point for exporting a PyTorch model's floating-point prefill graph to ONNX, checked against PyTorch."""

from __future__ import annotations

import json
import time
from pathlib import Path

from freeact_export.api.torch_in import environment, layer_by_layer, peak_rss_gb
from freeact_export.assets import resolve_model
from freeact_export.config import LAYERWISE_ABOVE_PARAMS, ExportSpec
from freeact_export.errors import UserError
from freeact_export.export.prefill import export_prefill
from freeact_export.export.streamed import export_streamed
from freeact_export.files import atomic_path, check_new_output
from freeact_export.models import DTYPES, hf_folder, load_tokenizer, load_torch_model
from freeact_export.parity.logits import compare_logits, sample_batches
from freeact_export.preflight import require_room, writing
from freeact_export.runtime.ort_lm import OrtLogits
from freeact_export.runtime.torch_lm import TorchLogits
from freeact_export.simulate.fit import skeleton


def export(model: str, output: str | Path, spec: ExportSpec = ExportSpec(), *,
           overwrite: bool = False, stream: str = "auto") -> dict:
    """Export the floating-point prefill graph into a folder, checked against PyTorch.

    The folder holds model.onnx (+ model.onnx.data for large models), the tokenizer and
    config, and export.json with the settings and the measured logits parity.

    stream: "on" traces the model without weights and writes each weight from the shards
    (export/streamed.py: no copy of the model in memory; always external data), "off" exports the
    model loaded whole, "auto" streams above LAYERWISE_ABOVE_PARAMS parameters. Verification loads
    the model whole, so it is skipped (and the record says why) for a model above that size and for
    bfloat16, which ONNX Runtime's CPU kernels do not run.
    """
    source = resolve_model(model)
    if source.kind == "onnx":
        raise UserError(f"{model} is already ONNX; export takes a model name, a Hugging Face folder "
                        "or a .gguf file")
    out = Path(output)
    if out.suffix == ".onnx":
        raise UserError(f"-o names the export folder (model.onnx, tokenizer, export.json go inside); "
                        f"try -o {out.with_suffix('')}")
    require_room(out)  # a read-only or missing folder: before the slow load
    check_new_output(out, overwrite)
    tok = load_tokenizer(source)
    bare = skeleton(source)  # None: the config does not load, and the whole-model load says why
    streamed = bare is not None and layer_by_layer(source, stream)
    params = None if bare is None else sum(p.numel() for p in bare.parameters())  # tied weights counted once
    big = params is not None and params > LAYERWISE_ABOVE_PARAMS
    torch_model = None if streamed else load_torch_model(source, spec.dtype, "cpu")
    if params is not None:
        size = DTYPES[spec.dtype].itemsize
        require_room(out, params * size, f"the export (the model's weights in {spec.dtype}, {params:,} parameters)")
    start = time.perf_counter()
    with writing(out), atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        if streamed:
            files = export_streamed(hf_folder(source), tmp / "model.onnx", spec, DTYPES[spec.dtype])
            bare.config.save_pretrained(tmp)
        else:
            files = export_prefill(torch_model, tmp / "model.onnx", spec)
            torch_model.config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        dtype = spec.dtype
        record = {
            "kind": "export",
            "model": model,
            "model_path": str(source.path),
            "output": str(out),
            "files": [f.name for f in files],
            "dtype": dtype,
            "streamed": streamed,
            "inputs": ["input_ids [batch, sequence] int64", "attention_mask [batch, sequence] int64"]
            + ([f"past_key_values.{{i}}.key|value [batch, kv heads, past, head dim] {dtype}"] if spec.kv_cache else []),
            "outputs": [f"logits [batch, sequence, vocab] {dtype}"]
            + ([f"present.{{i}}.key|value [batch, kv heads, past + sequence, head dim] {dtype}"] if spec.kv_cache
               else []),
            "spec": spec.to_dict(),
            "export_s": round(time.perf_counter() - start, 1),
            "peak_rss_gb": round(peak_rss_gb(), 2),
            "environment": environment(),
        }
        skip = None
        if big:
            skip = (f"not verified: the model has {params:,} parameters; PyTorch and ONNX Runtime would each hold it "
                    "whole (check the rewritten graphs instead)")
        elif spec.dtype == "bfloat16":
            skip = "not verified: ONNX Runtime's CPU provider has no bfloat16 kernels"
        if spec.verify and skip:
            record["verify_skipped"] = skip
        elif spec.verify:
            if torch_model is None:
                torch_model = load_torch_model(source, spec.dtype, "cpu")
            ort_runner = OrtLogits(tmp / "model.onnx", "cpu")
            try:
                parity = compare_logits(TorchLogits(torch_model), ort_runner, sample_batches(tok))
            except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own pybind types, none a RuntimeError
                if type(err).__module__.split(".")[0] != "onnxruntime":
                    raise
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UserError(f"ONNX Runtime cannot run the graph exported at opset {spec.opset} ({first}); export "
                                f"at opset {ExportSpec().opset} (the default), or pass --no-verify to keep it "
                                "unchecked") from None
            record["parity_vs_torch"] = parity.to_dict()
            del ort_runner
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
