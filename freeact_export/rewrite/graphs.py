"""Write a plan into the ONNX graph it was made from: the plugin graph and the portable graph.

Plugin graph (what TensorRT parses): each group's MatMul/Gemm nodes (and their bias Adds) become
one FreeActQuantize feeding one Int4MatMul per consumer, the plan's tensors as initializers.

Portable graph (standard ONNX only, opset 21, what ONNX Runtime runs without plugins): the same
arithmetic spelled out — Div by smooth, the Kronecker transform as two MatMuls, the type's mask
and clip by Gather, per-token scale by ReduceMax, Round (half to even) and Clip to the code
range, then MatMul with INT4 weights through DequantizeLinear (blocked for group scales) and the
token scale. Activation codes stay exact integers in float32 there.

W4A16 plans have no activation quantizer: both graphs then apply the transform in floating
point and multiply with INT4 DequantizeLinear weights, which TensorRT runs natively.
Everything else in the graph is untouched; the token type is computed once from the inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch
from onnx import TensorProto

from freeact_export.errors import UserError
from freeact_export.onnx_in.graph import OnnxModel
from freeact_export.ops import schema
from freeact_export.plan import Plan
from freeact_export.quantize.packing import pack_int4
from freeact_export.rewrite.op_tensors import activation_tensors, weight_tensors
from freeact_export.rewrite.type_graph import Builder, token_types_tensor
from freeact_export.token_types import TokenTypes

OPSET = 21  # INT4 and blocked DequantizeLinear


@dataclasses.dataclass
class Rewritten:
    """A rewritten graph and its weight bytes before/after (the replaced layers only)."""

    model: onnx.ModelProto
    weight_bytes_before: int
    weight_bytes_after: int
    layers: int


def _f32_const(op: Builder, values: np.ndarray) -> gs.Constant:
    return op.const(np.ascontiguousarray(values, dtype=np.float32))


def _kron_apply(op: Builder, x: gs.Variable, y: gs.Variable, kron_1: np.ndarray, kron_2: np.ndarray) -> gs.Variable:
    """y (K1 ⊗ K2) as K1ᵀ Y K2 on y viewed [..., d1, d2] (x gives the shape)."""
    d1, d2 = kron_1.shape[0], kron_2.shape[0]
    lead = op("Shape", [x], {"end": -1}, np.int64)
    grid = op("Reshape", [y, op("Concat", [lead, op.const(np.array([d1, d2]))], {"axis": 0}, np.int64)],
              dtype=np.float32)
    grid = op("MatMul", [grid, _f32_const(op, kron_2)], dtype=np.float32)  # X K2
    grid = op("MatMul", [_f32_const(op, kron_1.T), grid], dtype=np.float32)  # K1ᵀ X K2
    return op("Reshape", [grid, op("Shape", [x], dtype=np.int64)], dtype=np.float32)


def _activation_path(op: Builder, index: int, x: gs.Variable, types: gs.Variable, act: dict,
                     bits: int | None) -> tuple[gs.Variable, gs.Variable | None]:
    """Standard ops: (codes as float, per-token scale) or, without an activation quantizer, (x̃, None)."""
    y = op("Div", [x, _f32_const(op, act["smooth"])], dtype=np.float32)
    if act["kronecker"] and act["kron_1"].ndim == 3:  # per-type factors: every type's result, each token picks its own
        picked = None
        for k in range(act["kron_1"].shape[0]):
            y_k = _kron_apply(op, x, y, act["kron_1"][k], act["kron_2"][k])
            is_k = op("Unsqueeze", [op("Equal", [types, op.const(np.array(k, dtype=np.int32))], dtype=bool),
                                    op.const(np.array([-1]))], dtype=bool)
            picked = y_k if picked is None else op("Where", [is_k, y_k, picked], dtype=np.float32)
        y = picked
    elif act["kronecker"]:
        y = _kron_apply(op, x, y, act["kron_1"], act["kron_2"])
    y = op("Mul", [y, op("Gather", [_f32_const(op, act["masks"]), types], {"axis": 0}, np.float32)], dtype=np.float32)
    if bits is None:
        return y, None
    qmax = 2 ** (bits - 1) - 1
    amax = op("ReduceMax", [op("Abs", [y], dtype=np.float32), op.const(np.array([-1]))], {"keepdims": 1},
              np.float32)
    clip = op("Unsqueeze", [op("Gather", [_f32_const(op, act["clip"]), types], {"axis": 0}, np.float32),
                            op.const(np.array([-1]))], dtype=np.float32)
    clipped = op("Mul", [amax, clip], dtype=np.float32)  # the quantizer's order: (amax · clip) / qmax
    zero = op("Equal", [clipped, _f32_const(op, np.array(0.0))], dtype=bool)
    scale = op("Where", [zero, _f32_const(op, np.array(1.0)),
                         op("Div", [clipped, _f32_const(op, np.array(float(qmax)))], dtype=np.float32)],
               dtype=np.float32)
    codes = op("Clip", [op("Round", [op("Div", [y, scale], dtype=np.float32)], dtype=np.float32),
                        _f32_const(op, np.array(-qmax - 1.0)), _f32_const(op, np.array(float(qmax)))],
               dtype=np.float32)
    codes.name, scale.name = codes_name(index), f"{op.prefix}/scale"  # found by name in parity checks
    return codes, scale


def codes_name(group: int) -> str:
    """The tensor holding a group's activation codes in both graphs (packed INT4 in the plugin one)."""
    return f"freeact/g{group}/codes"


def weight_name(group: int, linear: int, portable: bool) -> str:
    """Initializer of a linear's INT4 weight: packed int8 [n, d/2] (plugin) or INT4 [d, n] (portable)."""
    return f"freeact/g{group}/l{linear}/" + ("weight_int4" if portable else "weight")


def _dequantized_weight(op: Builder, name: str, codes: torch.Tensor, wt: dict,
                        int4_inits: list[onnx.TensorProto]) -> gs.Variable:
    """DequantizeLinear of the INT4 weight stored [d, n] (input-major, so MatMul needs no transpose)."""
    n, d = codes.shape
    packed = pack_int4(codes.T.contiguous().reshape(-1)).numpy()  # ONNX INT4: row-major, low nibble first
    int4_inits.append(onnx.helper.make_tensor(name, TensorProto.INT4, [d, n], packed.tobytes(), raw=True))
    weight = gs.Variable(name, np.int8, [d, n])  # its initializer is added after export (gs has no INT4)
    scale = wt["weight_scale"]
    if wt["group_size"]:
        attrs = {"axis": 0, "block_size": wt["group_size"]}
        scale_const = _f32_const(op, scale.T)  # [d / g, n]
    else:
        attrs = {"axis": 1}
        scale_const = _f32_const(op, scale.reshape(n))
    return op("DequantizeLinear", [weight, scale_const], attrs, np.float32)


def rewrite(onnx_model: OnnxModel, full: onnx.ModelProto, plan: Plan, portable: bool) -> Rewritten:
    """The plugin graph (portable=False) or the portable graph of `plan` on `onnx_model`.

    Args:
        full: the graph with its weight data loaded (not modified: both graphs start from it).
    """
    graph = gs.import_onnx(full)
    tensors = graph.tensors()
    token_types = TokenTypes.parse(plan.token_types)
    types = token_types_tensor(graph, token_types)
    bits = None if plan.act_spec is None else plan.act_spec.bits
    int4_inits: list[onnx.TensorProto] = []
    before = after = layers = 0
    for index, group in enumerate(plan.groups):
        members = [onnx_model.linears[lin.name] for lin in group.linears]
        op = Builder(graph, f"freeact/g{index}")
        x = tensors[members[0].activation]
        group_types = op("Reshape", [types, op("Shape", [x], {"end": -1}, np.int64)], dtype=np.int32)
        act = activation_tensors(group, token_types.num_types)
        after += sum(a.nbytes for a in act.values() if isinstance(a, np.ndarray))
        if portable or bits is None:
            codes, scale = _activation_path(op, index, x, group_types, act, bits)
        else:
            codes, scale = _plugin_quantize(op, index, x, group_types, act, bits)
        for j, (lin, member) in enumerate(zip(group.linears, members, strict=True)):
            wt = weight_tensors(lin, group)
            before += int(np.prod(tensors[member.weight].shape)) * tensors[member.weight].values.itemsize
            after += wt["weight"].nbytes + wt["weight_scale"].nbytes + wt["bias"].nbytes
            layers += 1
            if portable or bits is None:
                weight = _dequantized_weight(op, weight_name(index, j, True), lin.codes, wt, int4_inits)
                y = op("MatMul", [codes, weight], dtype=np.float32)
                if scale is not None:
                    y = op("Mul", [y, scale], dtype=np.float32)
                if lin.bias is not None:
                    y = op("Add", [y, _f32_const(op, wt["bias"])], dtype=np.float32)
            else:
                node = schema.make_node("Int4MatMul", ["codes", "scale", "weight", "weight_scale", "bias"], ["y"],
                                        f"{op.prefix}/l{j}/Int4MatMul", act_bits=bits,
                                        group_size=int(wt["group_size"]))
                y = _schema_layer(op, node, [codes, scale, gs.Constant(weight_name(index, j, False), wt["weight"]),
                                             _f32_const(op, wt["weight_scale"]), _f32_const(op, wt["bias"])],
                                  [np.float32])[0]
            out = tensors[member.output]
            out.inputs.clear()  # detach from the original MatMul / bias Add; cleanup drops them and their weights
            producer = y.inputs[0]
            producer.outputs.clear()
            producer.outputs.append(out)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph)
    model.graph.initializer.extend(int4_inits)
    _set_opsets(model, full, with_contrib=not portable and bits is not None)
    return Rewritten(model, before, after, layers)


def _plugin_quantize(op: Builder, index: int, x: gs.Variable, types: gs.Variable, act: dict,
                     bits: int) -> tuple[gs.Variable, gs.Variable]:
    node = schema.make_node("FreeActQuantize", ["x", "types", "smooth", "kron_1", "kron_2", "masks", "clip"],
                            ["codes", "scale"], f"{op.prefix}/FreeActQuantize", bits=bits,
                            kronecker=int(act["kronecker"]))
    consts = [_f32_const(op, act[k]) for k in ("smooth", "kron_1", "kron_2", "masks", "clip")]
    codes, scale = _schema_layer(op, node, [x, types, *consts], [np.int8, np.float32])
    codes.name, scale.name = codes_name(index), f"{op.prefix}/scale"  # as in the portable graph
    return codes, scale


def _schema_layer(op: Builder, node: onnx.NodeProto, inputs: list, dtypes: list) -> list[gs.Variable]:
    """Add a node made (and validated) by ops.schema to the gs graph."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    outputs = [f"{node.name}/{name}" for name in node.output]
    made = op.graph.layer(op=node.op_type, name=node.name, domain=node.domain, inputs=inputs, outputs=outputs,
                          attrs=attrs)
    for var, dtype in zip(made, dtypes, strict=True):
        var.dtype = dtype
    return made


def _set_opsets(model: onnx.ModelProto, original: onnx.ModelProto, with_contrib: bool) -> None:
    version = max([o.version for o in original.opset_import if o.domain in ("", "ai.onnx")] + [OPSET])
    keep = [o for o in original.opset_import if o.domain not in ("", "ai.onnx", schema.DOMAIN)]
    del model.opset_import[:]
    model.opset_import.extend([onnx.helper.make_opsetid("", version), *keep])
    if with_contrib:
        model.opset_import.append(schema.opset_import())
    if version < OPSET:
        raise UserError(f"opset {version} is below {OPSET}")
