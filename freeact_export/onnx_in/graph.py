"""The linear layers of an ONNX decoder LM: which MatMul/Gemm nodes, their weights, their groups.

A node is a linear layer when its weight is a 2-D float initializer (MatMul x·B with B [d, n],
or Gemm with transB). A bias is an initializer added right after (the dynamo exporter writes
Linear as MatMul + Add) or Gemm's C. Linears that read the same tensor form one group, the
unit every planner works on, in graph order (= execution order = module order).

Names: where the exporter recorded the PyTorch module a node came from (the dynamo exporter's
`pkg.torch.onnx.name_scopes` metadata), the linear takes that module's name, so a plan made
from the ONNX graph and one made from the PyTorch model name the same layers and either can be
simulated on the PyTorch model; otherwise the node's own name.

Left in floating point (and listed): the output projection (the last linear before the logits
output, as the PyTorch frontend leaves lm_head), and layers whose input width a kernel cannot
take (odd widths cannot be packed two INT4 codes per byte).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from freeact_export.calibrate.groups import LinearGroup, group_name
from freeact_export.errors import UserError

_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
# float16 graphs need the casts around the ops exercised first (ORT's Python custom ops take float32 only).
_SUPPORTED = (onnx.TensorProto.FLOAT,)
# Ops between the output projection and the logits output that do not compute anything new.
_PASS_THROUGH = ("Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten")
# Our exporter wraps the Hugging Face model as `model` (export.prefill).
_WRAPPERS = ("freeact_export.export.prefill.PrefillLogits", "freeact_export.export.prefill.DecoderWithCache")


@dataclasses.dataclass(frozen=True)
class OnnxLinear:
    """One linear layer in the graph.

    Attributes:
        name: the PyTorch module name where known, else the node name (see module docstring).
        node: the MatMul / Gemm node's name.
        activation: the input tensor it reads.
        weight: initializer name; `transposed` when stored [n, d] (Gemm transB=1), else [d, n].
        bias: initializer name or None; `bias_node` the Add that applies it (None for Gemm's C).
        output: the tensor holding x Wᵀ (+ b): the Add's output where a bias Add follows.
    """

    name: str
    node: str
    activation: str
    weight: str
    transposed: bool
    bias: str | None
    bias_node: str | None
    output: str


@dataclasses.dataclass
class OnnxModel:
    """A loaded ONNX graph (initializer data left on disk) and its linear layers."""

    path: Path
    model: onnx.ModelProto
    linears: dict[str, OnnxLinear]
    groups: list[LinearGroup]
    skipped: dict[str, str]  # node name → why it stays in floating point

    def initializer(self, name: str) -> np.ndarray:
        init = next(i for i in self.model.graph.initializer if i.name == name)
        return numpy_helper.to_array(init, base_dir=str(self.path.parent))

    def weights(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W [n, d], bias [n] or None) of the linear named `name`, as stored (a planner WeightSource)."""
        lin = self.linears[name]
        w = self.initializer(lin.weight)
        w = np.ascontiguousarray(w if lin.transposed else w.T)
        bias = None if lin.bias is None else torch.from_numpy(self.initializer(lin.bias).reshape(-1).copy())
        return torch.from_numpy(w), bias

    @property
    def input_names(self) -> list[str]:
        inits = {i.name for i in self.model.graph.initializer}
        return [i.name for i in self.model.graph.input if i.name not in inits]


def read_onnx(path: Path, remedy: str, external_data: bool = False) -> onnx.ModelProto:
    """The model in `path`, or one UserError line ending in `remedy` if it is unreadable or has no graph."""
    try:
        model = onnx.load(str(path), load_external_data=external_data)
    except Exception as err:  # noqa: BLE001 - protobuf raises several types for a corrupt file, OSError for data
        raise UserError(f"{path} is not a readable ONNX model ({type(err).__name__}); {remedy}") from None
    if not model.graph.node or not model.graph.output:  # protobuf reads an empty file as an empty model
        raise UserError(f"{path} holds no graph (no nodes or no outputs): the file is empty or not ONNX; {remedy}")
    return model


def load_onnx(path: Path) -> OnnxModel:
    """Read the graph (not the weight data) and find its linear layers and groups."""
    model = read_onnx(path, "re-export it")
    linears, skipped = find_linears(model)
    if not linears:
        raise UserError(f"{path}: no MatMul or Gemm with a constant 2-D weight (initializer) found; "
                        "nothing to quantize (weights computed at run time cannot be quantized offline)")
    by_input: dict[str, list[OnnxLinear]] = {}
    for lin in linears:
        by_input.setdefault(lin.activation, []).append(lin)
    groups = []
    for members in by_input.values():
        names = [m.name for m in members]
        d = _weight_shape(model, members[0])[1]
        groups.append(LinearGroup(group_name(names), tuple(names), d))
    return OnnxModel(path, model, {lin.name: lin for lin in linears}, groups, skipped)


def _weight_shape(model: onnx.ModelProto, lin: OnnxLinear) -> tuple[int, int]:
    """(n, d) of a linear's weight."""
    init = next(i for i in model.graph.initializer if i.name == lin.weight)
    rows, cols = init.dims
    return (rows, cols) if lin.transposed else (cols, rows)


def _module_name(node: onnx.NodeProto) -> str | None:
    meta = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" not in meta:
        return None
    try:
        scopes = ast.literal_eval(meta["pkg.torch.onnx.name_scopes"])
        hierarchy = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
    except (ValueError, SyntaxError):
        return None
    if len(scopes) < 2 or not scopes[-2]:
        return None
    name = scopes[-2]  # the last scope is the traced op itself; the one before, its module
    if hierarchy and hierarchy[0] in _WRAPPERS and name.startswith("model."):
        name = name[len("model."):]
    return name


def _output_projection(model: onnx.ModelProto, producers: dict[str, onnx.NodeProto]) -> str | None:
    """The node that computes the logits (walking back from the first graph output)."""
    tensor = model.graph.output[0].name
    while tensor in producers:
        node = producers[tensor]
        if node.op_type in ("MatMul", "Gemm"):
            return node.name
        if node.op_type not in _PASS_THROUGH:
            return None
        tensor = node.input[0]
    return None


def find_linears(model: onnx.ModelProto) -> tuple[list[OnnxLinear], dict[str, str]]:
    """Every eligible linear in graph order, and the linear-like nodes left alone (with why)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    head = _output_projection(model, producers)
    linears, skipped, used_names = [], {}, set()
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if len(weight.dims) != 2 or weight.data_type not in _FLOATS:
            skipped[node.name] = f"weight {weight.name} is not a 2-D float tensor"
            continue
        if weight.data_type not in _SUPPORTED:
            kind = onnx.TensorProto.DataType.Name(weight.data_type).lower()
            skipped[node.name] = f"weights of type {kind} are not supported yet (float32 only)"
            continue
        if node.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                                       or attrs.get("beta", 1.0) != 1.0):
            skipped[node.name] = "Gemm with transA, alpha or beta other than the defaults"
            continue
        transposed = bool(attrs.get("transB", 0)) if node.op_type == "Gemm" else False
        d = weight.dims[1] if transposed else weight.dims[0]
        if node.name == head:
            skipped[node.name] = "output projection (logits) stays in floating point"
            continue
        if d % 2:
            skipped[node.name] = f"input width {d} is odd: INT4 codes are packed two per byte"
            continue
        bias, bias_node, output = None, None, node.output[0]
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            bias = node.input[2]
        else:
            after = consumers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type == "Add":
                other = [t for t in after[0].input if t != node.output[0]]
                n = weight.dims[0] if transposed else weight.dims[1]
                if len(other) == 1 and other[0] in inits and _is_vector(inits[other[0]], n):
                    bias, bias_node, output = other[0], after[0].name, after[0].output[0]
        name = _module_name(node) or node.name
        if name in used_names:  # a module called twice: keep the node names unique
            name = node.name
        used_names.add(name)
        linears.append(OnnxLinear(name, node.name, node.input[0], weight.name, transposed, bias, bias_node, output))
    return linears, skipped


def _is_vector(init: onnx.TensorProto, n: int) -> bool:
    return init.data_type in _FLOATS and int(np.prod(init.dims)) == n and max(init.dims, default=1) == n
