"""The two custom ops declared once, as data: the contract of graph rewrites, ORT custom ops and TRT plugin creators.

Nodes live in DOMAIN "ai.onnx.contrib", the only domain onnxruntime-extensions runs Python ops in;
TensorRT's ONNX parser maps an unknown op to a plugin by op_type whatever its domain, so one node
serves both. Every node also carries the string attributes `plugin_version` / `plugin_namespace`
(the parser looks the creator up with them); the op's own attributes are the creator's fields.

Packed INT4 (every "packed" tensor below): int8 [..., K/2]; byte i holds element 2i in its low
nibble and element 2i+1 in its high nibble, as 4-bit two's complement. These are the bytes of
`freeact_export.quantize.packing.pack_int4`, reinterpreted as int8 (docs/design.md: the TensorRT path
takes INT4 packed into INT8, not UINT8).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import onnx
from onnx import AttributeProto, TensorProto, helper

DOMAIN = "ai.onnx.contrib"
OPSET_VERSION = 1
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""

# Tensor dtypes by the names the schema uses (NumPy's), and back for error messages and value_types.
ELEM_TYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "int32": TensorProto.INT32,
    "int8": TensorProto.INT8,
}
_DTYPE_NAMES = {elem: name for name, elem in ELEM_TYPES.items()}
_ATTR_PROTO_TYPES = {"int": AttributeProto.INT, "string": AttributeProto.STRING}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, the dtypes it may have (NumPy names), its shape in words."""

    name: str
    dtypes: tuple[str, ...]
    shape: str
    doc: str


@dataclasses.dataclass(frozen=True)
class AttrSpec:
    """One attribute. Constraints are data (allowed values, minimum, multiple) so C++ creators can check the same."""

    name: str
    type: str  # "int" | "string"
    default: int | str
    allowed: tuple[int | str, ...] | None = None
    minimum: int | None = None
    multiple_of: int | None = None
    doc: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is not valid for this attribute, or None."""
        python_type = int if self.type == "int" else str
        if not isinstance(value, python_type) or isinstance(value, bool):
            return f"attribute {self.name} must be of type {self.type} (got {value!r})"
        if self.allowed is not None and value not in self.allowed:
            return f"attribute {self.name} must be one of {list(self.allowed)} (got {value!r})"
        if self.minimum is not None and value < self.minimum:
            return f"attribute {self.name} must be >= {self.minimum} (got {value!r})"
        if self.multiple_of is not None and value % self.multiple_of:
            return f"attribute {self.name} must be a multiple of {self.multiple_of} (got {value!r})"
        return None


@dataclasses.dataclass(frozen=True)
class OpSchema:
    """One op: inputs and outputs in order (all required) and its own attributes."""

    name: str
    version: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttrSpec, ...]
    doc: str

    @property
    def all_attributes(self) -> tuple[AttrSpec, ...]:
        """What a node carries: the parser's attributes, then the op's own."""
        return PARSER_ATTRIBUTES + self.attributes


PARSER_ATTRIBUTES = (
    AttrSpec("plugin_version", "string", PLUGIN_VERSION, allowed=(PLUGIN_VERSION,),
             doc="TensorRT ONNX parser: version of the plugin creator to use"),
    AttrSpec("plugin_namespace", "string", PLUGIN_NAMESPACE, allowed=(PLUGIN_NAMESPACE,),
             doc="TensorRT ONNX parser: namespace of the plugin creator to use"),
)

FREEACT_QUANTIZE = OpSchema(
    name="FreeActQuantize",
    version=1,
    doc=(
        "Per-token activation transform and symmetric quantization, in float32: "
        "y = ((x / smooth) (kron_1[t] ⊗ kron_2[t])) ⊙ masks[t] for a token of type t (one shared pair of "
        "factors when they have no type axis), with v (A ⊗ B) = vec(Aᵀ V B) for V = v viewed row-major [d1, d2]; "
        "scale = (amax(|y|) · clip[types]) / qmax (1 where that is 0), qmax = 7 or 127; "
        "codes = clamp(round_half_to_even(y / scale), -qmax - 1, qmax). Equals "
        "quantize(y, QuantSpec(bits, True, 'token'), clip[types]) code for code."
    ),
    inputs=(
        TensorSpec("x", ("float32", "float16"), "[..., d]", "activations; leading dims are tokens; cast to float32"),
        TensorSpec("types", ("int32",), "[...]", "token type per token (leading shape of x), in [0, K)"),
        TensorSpec("smooth", ("float32",), "[d]", "x is divided by it; may be negative (Hadamard signs folded in)"),
        TensorSpec("kron_1", ("float32",), "[d1, d1] or [K, d1, d1]",
                   "left Kronecker factor, shared or one per token type; [[1.]] and ignored when kronecker=0"),
        TensorSpec("kron_2", ("float32",), "[d2, d2] or [K, d2, d2]",
                   "right Kronecker factor, d1 * d2 = d, with kron_1's type axis; [[1.]] when kronecker=0"),
        TensorSpec("masks", ("float32",), "[K, d]", "0/1 mask per token type (all ones where the plan has none)"),
        TensorSpec("clip", ("float32",), "[K]", "activation clip ratio per token type, in (0, 1]"),
    ),
    outputs=(
        TensorSpec("codes", ("int8",), "[..., d/2] (bits=4, packed) or [..., d] (bits=8)", "quantized y"),
        TensorSpec("scale", ("float32",), "[..., 1]", "one scale per token"),
    ),
    attributes=(
        AttrSpec("bits", "int", 4, allowed=(4, 8), doc="code width of the activations"),
        AttrSpec("kronecker", "int", 1, allowed=(0, 1), doc="1: apply kron_1 ⊗ kron_2; 0: no transform"),
    ),
)

INT4_MATMUL = OpSchema(
    name="Int4MatMul",
    version=1,
    doc=(
        "INT4 weights times per-token quantized activations: y = scale · Σ_g weight_scale[:, g] · "
        "(Σ_{k in group g} a_k w_{n,k}) + bias, the inner sums exact integer dot products of the unpacked codes."
    ),
    inputs=(
        TensorSpec("codes", ("int8",), "[..., d/2] (act_bits=4, packed) or [..., d] (act_bits=8)",
                   "activation codes, as FreeActQuantize makes them"),
        TensorSpec("scale", ("float32",), "[..., 1]", "activation scale per token"),
        TensorSpec("weight", ("int8",), "[n, d/2]", "INT4 codes of W [n, d] (out x in), packed along d"),
        TensorSpec("weight_scale", ("float32",), "[n, G]", "G = 1 (per output channel) or d / group_size"),
        TensorSpec("bias", ("float32",), "[n]", "zeros when the layer has none"),
    ),
    outputs=(TensorSpec("y", ("float32",), "[..., n]", "the layer's output"),),
    attributes=(
        AttrSpec("act_bits", "int", 4, allowed=(4, 8), doc="code width of the activations"),
        AttrSpec("group_size", "int", 0, minimum=0, multiple_of=2,
                 doc="0: one weight scale per output channel; else inputs per weight scale (a divisor of d)"),
    ),
)

SCHEMAS: dict[str, OpSchema] = {s.name: s for s in (FREEACT_QUANTIZE, INT4_MATMUL)}


def get_schema(op_name: str) -> OpSchema:
    if op_name not in SCHEMAS:
        raise ValueError(f"unknown custom op {op_name!r} (known: {sorted(SCHEMAS)})")
    return SCHEMAS[op_name]


def opset_import() -> onnx.OperatorSetIdProto:
    """The opset entry a model holding our nodes must import."""
    return helper.make_opsetid(DOMAIN, OPSET_VERSION)


def make_node(op_name: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs: int | str,
              ) -> onnx.NodeProto:
    """A checked node of `op_name` with every attribute set (defaults filled in)."""
    schema = get_schema(op_name)
    where = f"{op_name} node {name!r}"
    unknown = sorted(set(attrs) - {a.name for a in schema.all_attributes})
    if unknown:
        raise ValueError(f"{where}: unknown attribute(s) {unknown}")
    values = {a.name: attrs.get(a.name, a.default) for a in schema.all_attributes}
    for spec in schema.all_attributes:
        problem = spec.problem(values[spec.name])
        if problem:
            raise ValueError(f"{where}: {problem}")
    node = helper.make_node(op_name, list(inputs), list(outputs), name=name, domain=DOMAIN, **values)
    check_node(node)
    return node


def check_node(node: onnx.NodeProto, value_types: dict[str, int] | None = None) -> None:
    """Raise ValueError naming the node and the problem where `node` breaks its op's schema.

    Args:
        value_types: tensor name → onnx TensorProto elem type; the inputs and outputs named in it
            have their dtype checked (see graph_value_types).
    """
    where = f"{node.op_type} node {node.name!r}"
    if node.op_type not in SCHEMAS:
        raise ValueError(f"{where}: not a custom op of this package (known: {sorted(SCHEMAS)})")
    schema = SCHEMAS[node.op_type]
    if node.domain != DOMAIN:
        raise ValueError(f"{where}: domain must be {DOMAIN!r} (got {node.domain!r})")
    for kind, specs, names in (("input", schema.inputs, node.input), ("output", schema.outputs, node.output)):
        if len(names) != len(specs):
            raise ValueError(f"{where}: expects {len(specs)} {kind}s {[s.name for s in specs]}, got {len(names)}")
        for spec, tensor in zip(specs, names, strict=True):
            if not tensor:
                raise ValueError(f"{where}: {kind} {spec.name} is empty (every {kind} is required)")
            if value_types is not None and tensor in value_types:
                dtype = _DTYPE_NAMES.get(value_types[tensor], TensorProto.DataType.Name(value_types[tensor]))
                if dtype not in spec.dtypes:
                    raise ValueError(f"{where}: {kind} {spec.name} ({tensor!r}) has dtype {dtype}, "
                                     f"expected {' or '.join(spec.dtypes)}")
    _check_attributes(node, schema, where)


def _check_attributes(node: onnx.NodeProto, schema: OpSchema, where: str) -> None:
    specs = {a.name: a for a in schema.all_attributes}
    present = [a.name for a in node.attribute]
    unknown = sorted(set(present) - set(specs))
    if unknown:
        raise ValueError(f"{where}: unknown attribute(s) {unknown}")
    missing = [name for name in specs if name not in present]
    if missing:
        raise ValueError(f"{where}: missing attribute(s) {missing}")
    for attr in node.attribute:
        spec = specs[attr.name]
        if attr.type != _ATTR_PROTO_TYPES[spec.type]:
            got = AttributeProto.AttributeType.Name(attr.type)
            raise ValueError(f"{where}: attribute {attr.name} must be of type {spec.type} (got {got})")
        value = helper.get_attribute_value(attr)
        problem = spec.problem(value.decode() if isinstance(value, bytes) else value)
        if problem:
            raise ValueError(f"{where}: {problem}")


def graph_value_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Elem type of every tensor the graph declares (inputs, outputs, value_info, initializers)."""
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)
             if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def schema_json() -> dict[str, Any]:
    """Both schemas as plain JSON data (the C++ plugin creators are checked against it)."""
    return {
        "domain": DOMAIN,
        "opset_version": OPSET_VERSION,
        "plugin_version": PLUGIN_VERSION,
        "plugin_namespace": PLUGIN_NAMESPACE,
        "parser_attributes": _jsonable(PARSER_ATTRIBUTES),
        "ops": [_jsonable(s) for s in SCHEMAS.values()],
    }


if __name__ == "__main__":
    print(json.dumps(schema_json(), indent=2, ensure_ascii=False))
