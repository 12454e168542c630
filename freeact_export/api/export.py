"""Entry point for exporting a PyTorch model's floating-point prefill graph to ONNX, checked against PyTorch."""

from __future__ import annotations

import json
import time
from pathlib import Path

from freeact_export.api.torch_in import environment
from freeact_export.assets import resolve_model
from freeact_export.config import ExportSpec
from freeact_export.errors import UserError
from freeact_export.export.prefill import export_prefill
from freeact_export.files import atomic_path, check_new_output
from freeact_export.models import load_tokenizer, load_torch_model
from freeact_export.parity.logits import compare_logits, sample_batches
from freeact_export.preflight import require_room, writing
from freeact_export.runtime.ort_lm import OrtLogits
from freeact_export.runtime.torch_lm import TorchLogits


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
    require_room(out)  # a read-only or missing folder: before the slow load
    check_new_output(out, overwrite)
    tok = load_tokenizer(source)
    torch_model = load_torch_model(source, "float32", "cpu")
    weights = sum(p.numel() for p in torch_model.parameters()) * 4  # tied weights counted once
    require_room(out, weights, f"the export (the model's weights in float32, {torch_model.num_parameters():,} "
                               "parameters)")
    start = time.perf_counter()
    with writing(out), atomic_path(out, overwrite) as tmp:
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
            "inputs": ["input_ids [batch, sequence] int64", "attention_mask [batch, sequence] int64"]
            + (["past_key_values.{i}.key|value [batch, kv heads, past, head dim] float32"] if spec.kv_cache else []),
            "outputs": ["logits [batch, sequence, vocab] float32"]
            + (["present.{i}.key|value [batch, kv heads, past + sequence, head dim] float32"] if spec.kv_cache else []),
            "spec": spec.to_dict(),
            "export_s": round(time.perf_counter() - start, 1),
            "environment": environment(),
        }
        if spec.verify:
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
