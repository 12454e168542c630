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
_TRACE_BATCH, _TRACE_SEQ, _TRACE_PAST = 2, 8, 3


class PrefillLogits(torch.nn.Module):
    """Wraps a causal LM so its exported signature is (input_ids, attention_mask) → logits."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class DecoderWithCache(torch.nn.Module):
    """(input_ids, attention_mask, past keys/values per layer) → (logits, present keys/values per layer)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = []
        for layer in out.past_key_values.layers[: self.layers]:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def cache_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers (tied weights counted once)."""
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def uses_external_data(model: torch.nn.Module, spec: ExportSpec) -> bool:
    if spec.external_data == "auto":
        return weight_bytes(model) > _EXTERNAL_DATA_THRESHOLD_BYTES
    return spec.external_data == "always"


def trace(model: torch.nn.Module, spec: ExportSpec, optimize: bool = True):
    """The dynamo exporter's ONNXProgram of `model`'s prefill graph (with the KV cache if spec.kv_cache);
    a model on the meta device traces too (streamed.py: no weights are needed, only their shapes)."""
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    ids = torch.randint(0, vocab, (_TRACE_BATCH, _TRACE_SEQ), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    wrapper, args = PrefillLogits(model), (ids, mask)
    input_names, output_names = list(INPUT_NAMES), [OUTPUT_NAME]
    if spec.kv_cache:
        wrapper, config = DecoderWithCache(model), model.config
        heads = config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        past = tuple(torch.zeros(_TRACE_BATCH, heads, _TRACE_PAST, head_dim, device=device, dtype=dtype)
                     for _ in range(2 * wrapper.layers))
        args = (ids, torch.ones(_TRACE_BATCH, _TRACE_PAST + _TRACE_SEQ, dtype=ids.dtype, device=device), *past)
        past_len = torch.export.Dim("past_sequence")
        shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: torch.export.Dim("total")},
                  "past": tuple({0: batch, 2: past_len} for _ in past)}
        input_names += cache_names(wrapper.layers, "past_key_values")
        output_names += cache_names(wrapper.layers, "present")
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        with warnings.catch_warnings():
            # The exporter warns about deprecated pytree specs, shared axis names and a missing
            # torchvision (whose ops a decoder LM never uses): noise for our users.
            warnings.simplefilter("ignore")
            exporter_log.setLevel(logging.ERROR)
            return torch.onnx.export(wrapper, args, dynamo=True, input_names=input_names, output_names=output_names,
                                     dynamic_shapes=shapes, opset_version=spec.opset, optimize=optimize,
                                     verbose=False)
    finally:
        exporter_log.setLevel(level)


def export_prefill(model: torch.nn.Module, onnx_path: Path, spec: ExportSpec) -> list[Path]:
    """Write `onnx_path` (and its external data file, if any); return the files written."""
    trace(model, spec).save(str(onnx_path), external_data=uses_external_data(model, spec))
    return written_files(onnx_path)


def written_files(onnx_path: Path) -> list[Path]:
    """The graph and, where it was written, its external data file."""
    data_file = onnx_path.with_name(onnx_path.name + ".data")
    return [onnx_path, data_file] if data_file.exists() else [onnx_path]
