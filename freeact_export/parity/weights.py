"""Do both graphs of a rewritten folder hold exactly the plan's INT4 weight codes? Checked before slow work.

Codes are stored per graph (rewrite/graphs.py weight_name):
  plugin.onnx    packed int8 [n, d/2], two codes per byte (W4A16 plugin graphs hold the portable form)
  portable.onnx  INT4 [d, n] (input-major, for DequantizeLinear + MatMul)
A graph whose initializer is missing (a float model in its place) or differs is named with the
first layer, in plan order, whose codes differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from freeact_export.errors import UserError
from freeact_export.manifest import REMEDY, REWRITTEN_KIND
from freeact_export.ops.reference import unpack_int4
from freeact_export.plan import Plan
from freeact_export.rewrite.folder import PLUGIN_GRAPH, PORTABLE_GRAPH, read_rewritten_graph
from freeact_export.rewrite.graphs import weight_name


def _stored_codes(inits: dict[str, onnx.TensorProto], g: int, j: int, portable: bool) -> np.ndarray | None:
    """The codes [n, d] of linear j of group g as this graph stores them, or None when it has none."""
    name = weight_name(g, j, portable)
    if name not in inits:  # W4A16 plugin graphs hold the portable form
        name = weight_name(g, j, True)
    if name not in inits:
        return None
    stored = onnx.numpy_helper.to_array(inits[name])
    return stored.astype(np.int32).T if name.endswith("weight_int4") else unpack_int4(stored).astype(np.int32)


def verify_graph_weights(folder: str | Path, plan: Plan) -> dict:
    """Every INT4 weight initializer of both graphs against the plan's codes.

    Returns {graph file: {"layers_checked", "layers_different", "first_different"}}, the last
    being "GROUP / LINEAR" of the first layer (plan order) whose codes differ or are missing, else None.
    """
    result = {}
    for graph_name, portable in ((PLUGIN_GRAPH, False), (PORTABLE_GRAPH, True)):
        model = read_rewritten_graph(Path(folder) / graph_name, external_data=True)
        inits = {i.name: i for i in model.graph.initializer}
        checked = different = 0
        first = None
        for g, group in enumerate(plan.groups):
            for j, lin in enumerate(group.linears):
                codes = _stored_codes(inits, g, j, portable)
                checked += 1
                same = codes is not None and np.array_equal(codes, lin.codes.numpy().astype(np.int32))
                if not same:
                    different += 1
                    first = first or f"{group.name} / {lin.name}"
        del model, inits
        result[graph_name] = {"layers_checked": checked, "layers_different": different, "first_different": first}
    return result


def require_graph_weights(folder: str | Path, plan: Plan) -> dict:
    """verify_graph_weights, and one UserError line naming the first graph and layer that differ."""
    result = verify_graph_weights(folder, plan)
    for graph_name, record in result.items():
        if record["layers_different"]:
            counts = f"{record['layers_different']} of {record['layers_checked']} layers differ"
            raise UserError(f"{Path(folder) / graph_name} does not hold the plan's INT4 weights: the codes of "
                            f"{record['first_different']} differ ({counts}): the graph was changed after it was "
                            f"written; {REMEDY[REWRITTEN_KIND]}")
    return result
