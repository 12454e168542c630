"""The token type of every token, computed inside the graph from the model's own inputs.

Mirrors TokenTypes.assign: type 0 unless a rule matches, the first matching rule wins. Positions
come from a position_ids input where the graph has one; otherwise they count from the cache
length (attention_mask's length minus the new tokens), so a decode step past position p is
not mistaken for a sink.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto

from freeact_export.errors import UserError
from freeact_export.token_types import TokenTypes


class Builder:
    """Adds nodes with unique names under one prefix."""

    def __init__(self, graph: gs.Graph, prefix: str):
        self.graph, self.prefix, self.count = graph, prefix, 0

    def __call__(self, op: str, inputs: list, attrs: dict | None = None, dtype=None) -> gs.Variable:
        self.count += 1
        name = f"{self.prefix}/{op}_{self.count}"
        (out,) = self.graph.layer(op=op, name=name, inputs=inputs, outputs=[f"{name}_out"], attrs=attrs or {})
        if dtype is not None:
            out.dtype = dtype
        return out

    def const(self, values: np.ndarray) -> gs.Constant:
        self.count += 1
        return gs.Constant(f"{self.prefix}/const_{self.count}", np.asarray(values))


def token_types_tensor(graph: gs.Graph, token_types: TokenTypes) -> gs.Variable:
    """int32 [batch, seq] type per token."""
    inputs = {t.name: t for t in graph.inputs}
    if "input_ids" not in inputs:
        raise UserError("the graph has no input_ids input: token types cannot be computed in the graph")
    op = Builder(graph, "freeact/token_types")
    ids = op("Cast", [inputs["input_ids"]], {"to": TensorProto.INT64}, np.int64)
    types = op("ConstantOfShape", [op("Shape", [ids], dtype=np.int64)],
               {"value": gs.Constant("zero", np.zeros(1, np.int32))}, np.int32)
    positions = None
    for index in range(len(token_types.rules), 0, -1):  # reversed: the first matching rule is applied last
        rule = token_types.rules[index - 1]
        if rule.kind == "ids":
            equal = op("Equal", [op("Unsqueeze", [ids, op.const(np.array([-1]))]), op.const(np.array(rule.ids))])
            hits = op("ReduceMax", [op("Cast", [equal], {"to": TensorProto.INT32}), op.const(np.array([-1]))],
                      {"keepdims": 0})
            hit = op("Greater", [hits, op.const(np.array(0, np.int32))], dtype=bool)
        elif rule.kind == "pos":
            positions = positions if positions is not None else _positions(op, inputs, ids)
            hit = op("Less", [positions, op.const(np.array(rule.count, np.int64))], dtype=bool)
        else:
            if rule.input_name not in inputs:
                raise UserError(f"token-type rule '{rule.to_text()}' needs the graph input '{rule.input_name}', "
                                f"which this graph does not have (inputs: {sorted(inputs)})")
            marked = op("Cast", [inputs[rule.input_name]], {"to": TensorProto.INT64}, np.int64)
            hit = op("Not", [op("Equal", [marked, op.const(np.array(0, np.int64))])], dtype=bool)
        types = op("Where", [hit, op.const(np.array(index, np.int32)), types], dtype=np.int32)
    return types


def _positions(op: Builder, inputs: dict, ids: gs.Variable) -> gs.Variable:
    """int64 positions, broadcastable to [batch, seq]."""
    if "position_ids" in inputs:
        return op("Cast", [inputs["position_ids"]], {"to": TensorProto.INT64}, np.int64)
    seq = op("Squeeze", [op("Shape", [ids], {"start": 1, "end": 2}, np.int64)], dtype=np.int64)
    start = op.const(np.array(0, np.int64))
    if "attention_mask" in inputs:
        total = op("Squeeze", [op("Shape", [inputs["attention_mask"]], {"start": 1, "end": 2}, np.int64)],
                   dtype=np.int64)
        start = op("Sub", [total, seq], dtype=np.int64)
    end = op("Add", [start, seq], dtype=np.int64)
    return op("Range", [start, end, op.const(np.array(1, np.int64))], dtype=np.int64)
