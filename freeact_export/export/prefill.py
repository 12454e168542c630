"""Floating-point ONNX of a decoder LM's prefill graph: input_ids, attention_mask → logits.

No KV cache: this is the graph later stages calibrate and rewrite. Batch and sequence are
dynamic. Uses the dynamo exporter (torch.export + onnxscript), which traces transformers'
mask construction and SDPA attention that the TorchScript exporter mishandles.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from freeact_export.config import ExportSpec

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
# Protobuf refuses messages over 2 GiB; leave room for the graph itself.
_EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000
# Trace with sizes above 1 so torch.export does not specialise batch or sequence to a constant.
_TRACE_BATCH, _TRACE_SEQ = 2, 8


class PrefillLogits(torch.nn.Module):
    """Wraps a causal LM so its exported signature is (input_ids, attention_mask) → logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers (tied weights counted once)."""
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def uses_external_data(model: torch.nn.Module, spec: ExportSpec) -> bool:
    if spec.external_data == "auto":
        return weight_bytes(model) > _EXTERNAL_DATA_THRESHOLD_BYTES
    return spec.external_data == "always"


def export_prefill(model: torch.nn.Module, onnx_path: Path, spec: ExportSpec) -> list[Path]:
    """Write `onnx_path` (and its external data file, if any); return the files written."""
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    ids = torch.randint(0, vocab, (_TRACE_BATCH, _TRACE_SEQ), device=device,
                        generator=torch.Generator(device).manual_seed(0))
    mask = torch.ones_like(ids)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        with warnings.catch_warnings():
            # The exporter warns about deprecated pytree specs, shared axis names and a missing
            # torchvision (whose ops a decoder LM never uses): noise for our users.
            warnings.simplefilter("ignore")
            exporter_log.setLevel(logging.ERROR)
            program = torch.onnx.export(PrefillLogits(model), (ids, mask), dynamo=True,
                                        input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                                        dynamic_shapes=shapes, opset_version=spec.opset,
                                        optimize=True, verbose=False)
            program.save(str(onnx_path), external_data=uses_external_data(model, spec))
    finally:
        exporter_log.setLevel(level)
    written = [onnx_path]
    data_file = onnx_path.with_name(onnx_path.name + ".data")
    if data_file.exists():
        written.append(data_file)
    return written
