"""Rewriter defects injected into a rewritten folder, for proving that `check` catches them.

Each defect is a bug our rewriter could have: the plan is rewritten again with one of its pieces
broken, and the folder is sealed again (its manifest rewritten), as the buggy rewriter itself would
have written it. So what catches the defect is the check, not the manifest.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from freeact_export import manifest
from freeact_export.onnx_in.graph import load_onnx, read_onnx
from freeact_export.rewrite import graphs, op_tensors
from freeact_export.rewrite.folder import PORTABLE_GRAPH, load_rewritten, save_graph


def _defective_pieces(defect: str, group: str) -> dict[str, Callable]:
    """Replacements for the rewriter's pieces (module attribute -> function) that make `defect` in `group`."""
    activation_tensors, weight_tensors, pack_int4 = (op_tensors.activation_tensors, op_tensors.weight_tensors,
                                                     op_tensors.pack_int4)

    def act(g, num_types):
        tensors = activation_tensors(g, num_types)
        if g.name != group:
            return tensors
        if defect == "type_gate_dropped":  # every type gets type 0's transform, mask and clip
            k1, k2 = tensors["kron_1"], tensors["kron_2"]
            tensors.update(kron_1=np.broadcast_to(k1[:1], k1.shape).copy() if k1.ndim == 3 else k1,
                           kron_2=np.broadcast_to(k2[:1], k2.shape).copy() if k2.ndim == 3 else k2,
                           masks=np.broadcast_to(tensors["masks"][:1], tensors["masks"].shape).copy(),
                           clip=np.full_like(tensors["clip"], tensors["clip"][0]))
        elif defect == "factor_transposed":
            tensors["kron_1"] = np.ascontiguousarray(np.swapaxes(tensors["kron_1"], -1, -2))
        return tensors

    def weights(lin, g):
        tensors = weight_tensors(lin, g)
        if defect == "weight_scale_wrong" and g.name == group and lin is g.linears[0]:  # its first consumer, 2 % off
            tensors["weight_scale"] = tensors["weight_scale"] * np.float32(1.02)
        return tensors

    def swapped_pack(values: torch.Tensor) -> torch.Tensor:  # high nibble = even k: the other packing order
        packed = pack_int4(values).to(torch.int16) & 0xFF
        return (((packed & 0x0F) << 4) | (packed >> 4)).to(torch.uint8)

    return {"activation_tensors": act, "weight_tensors": weights, "pack_int4": swapped_pack}


@contextlib.contextmanager
def _patched(defect: str, group: str) -> Iterator[None]:
    pieces = _defective_pieces(defect, group)
    targets = [(graphs, "activation_tensors"), (graphs, "weight_tensors")]
    if defect == "packing_order_swapped":
        targets = [(op_tensors, "pack_int4")]  # the plugin graph's packed weights
    saved = [(module, name, getattr(module, name)) for module, name in targets]
    try:
        for module, name in targets:
            setattr(module, name, pieces[name])
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


DEFECTS = ("packing_order_swapped", "type_gate_dropped", "factor_transposed", "weight_scale_wrong")


def defective_copy(folder: Path, onnx_folder: Path, out: Path, defects: dict[str, tuple[str, int]]) -> Path:
    """A copy of the rewritten `folder` whose graphs named in `defects` ("plugin.onnx", "portable.onnx") were
    rewritten from `onnx_folder` with that (defect, plan group number); the others stay as they were."""
    shutil.copytree(folder, out)
    _, plan, _ = load_rewritten(out)
    onnx_model = load_onnx(onnx_folder / "model.onnx")
    full = read_onnx(onnx_model.path, "re-export it", external_data=True)
    for name, (defect, group) in defects.items():
        for stale in out.glob(f"{name}*"):
            stale.unlink()
        with _patched(defect, plan.groups[group].name):
            save_graph(graphs.rewrite(onnx_model, full, plan, name == PORTABLE_GRAPH).model, out / name)
    manifest.write(out, manifest.REWRITTEN_KIND, manifest.read(out, manifest.REWRITTEN_KIND)["model"])
    return out
