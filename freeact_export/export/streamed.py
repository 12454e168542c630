"""Exporting a model that does not fit in memory: trace it without weights, stream the weights in.

The model is built on the meta device (shapes, no values) and traced by the same exporter as
prefill.py, without its optimizer. Every initializer then gets a lazy value that reads its tensor
from the safetensors shards when it is written (rotary tables and other computed buffers come from
the model built on the CPU). The exporter's optimizer always folds the Transpose in front of each
linear layer's weight, and folding holds the result in memory: a second copy of every weight. So
those Transposes are folded here first, lazily (the initializer reads the shard and transposes),
and the optimizer runs afterwards on what is left, whose tensors are small. The graph is then saved
with external data one tensor at a time: peak memory is the graph, the largest tensor and the
embeddings-sized buffers of the exporter, whatever the model's size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx_ir as ir
import torch

from freeact_export.config import ExportSpec
from freeact_export.errors import UserError
from freeact_export.export.prefill import trace, written_files
from freeact_export.lazy_weights import LazyModel, SafetensorsFolder

_PREFIX = "model."  # the traced wrapper's attribute holding the model
_TORCH_DTYPES = {ir.DataType.FLOAT: torch.float32, ir.DataType.FLOAT16: torch.float16,
                 ir.DataType.BFLOAT16: torch.bfloat16, ir.DataType.INT64: torch.int64,
                 ir.DataType.INT32: torch.int32, ir.DataType.BOOL: torch.bool}


def _to_ir(tensor: torch.Tensor) -> ir.Tensor:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: the same bits as ml_dtypes'
        return ir.Tensor(tensor.view(torch.uint16).numpy().view(ml_dtypes.bfloat16), dtype=ir.DataType.BFLOAT16)
    return ir.Tensor(np.ascontiguousarray(tensor.numpy()))


class _Source:
    """Where each traced initializer's values come from: a shard tensor, a tied tensor or a buffer."""

    def __init__(self, folder: Path, lazy: LazyModel, buffers: dict[str, torch.Tensor]):
        self.tensors, self.buffers = SafetensorsFolder(folder), buffers
        embeddings = lazy.model.get_input_embeddings()
        name = next(n for n, m in lazy.model.named_modules() if m is embeddings)
        self.tied = {n: f"{name}.weight" for n in lazy.head_names if lazy.tied(n)}

    def tensor(self, name: str, dtype: torch.dtype, transpose: bool) -> torch.Tensor:
        """The tensor as the graph holds it: in the traced dtype (buffers such as rotary tables can stay
        float32 in a 16-bit model), transposed where a Transpose was folded."""
        if name in self.buffers:
            value = self.buffers[name]
        else:
            value = self.tensors.read([self.tied.get(name, name)])[self.tied.get(name, name)]
        value = value.to(dtype)
        return value.T.contiguous() if transpose else value

    def lazy(self, name: str, value: ir.Value, transpose: bool = False) -> ir.LazyTensor:
        if name not in self.buffers and self.tied.get(name, name) not in self.tensors:
            raise UserError(f"{self.tensors.folder} lacks the model's tensor {name}; the folder is incomplete")
        shape = ir.Shape(list(reversed(value.shape.dims)) if transpose else value.shape.dims)
        dtype = _TORCH_DTYPES[value.dtype]
        return ir.LazyTensor(lambda: _to_ir(self.tensor(name, dtype, transpose)), value.dtype, shape, name=name)


def _fold_weight_transposes(model: ir.Model, source: _Source, names: dict[str, str]) -> None:
    """Replace Transpose(initializer) by an initializer that reads the shard and transposes, where the
    Transpose is the initializer's only consumer (a linear layer's weight)."""
    graph = model.graph
    for node in list(graph):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
            continue
        value = node.inputs[0]
        perm = node.attributes.get("perm")
        if (value is None or value.name not in names or len(value.uses()) != 1 or len(value.shape.dims) != 2
                or (perm is not None and list(perm.as_ints()) != [1, 0])):
            continue
        out = node.outputs[0]
        folded = ir.Value(name=out.name + "_weight", shape=ir.Shape(list(reversed(value.shape.dims))),
                          type=ir.TensorType(value.dtype))
        folded.const_value = source.lazy(names[value.name], value, transpose=True)
        ir.convenience.replace_all_uses_with(out, folded)
        graph.remove(node, safe=True)
        graph.register_initializer(folded)
        if not value.uses():
            graph.initializers.pop(value.name)


def export_streamed(folder: Path, onnx_path: Path, spec: ExportSpec, dtype: torch.dtype) -> list[Path]:
    """Write `onnx_path` + `onnx_path.data` for the Hugging Face folder's model in `dtype`, streaming the
    weights from its shards (external data always: the weights never sit in one protobuf)."""
    import onnxscript

    lazy = LazyModel(folder, dtype)
    buffers = {name: b.detach().clone() for name, b in lazy.model.named_buffers()}
    model = lazy.model.to("meta")
    program = trace(model, spec, optimize=False)
    graph = program.model.graph
    names = {name: name.removeprefix(_PREFIX) for name in graph.initializers}
    source = _Source(folder, lazy, buffers)
    for name, value in graph.initializers.items():
        value.const_value = source.lazy(names[name], value)
    _fold_weight_transposes(program.model, source, names)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    onnxscript.optimizer.optimize(program.model)
    ir.save(program.model, onnx_path, external_data=onnx_path.name + ".data")
    return written_files(onnx_path)
