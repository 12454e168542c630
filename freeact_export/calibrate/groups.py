"""Linear groups: the layers that read the same activation tensor (q/k/v, gate/up, o, down).

Found by running the model once with probes that note which tensor each linear reads, so no
architecture table is needed: any layout whose linears share inputs is grouped correctly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from freeact_export.module_surgery import block_linears, swap_module


@dataclasses.dataclass(frozen=True)
class LinearGroup:
    """Linears sharing one input.

    Attributes:
        name: "<first linear's qualified name>" with "+sibling" suffixes, e.g.
            "model.layers.0.self_attn.q_proj+k_proj+v_proj".
        linears: qualified module names, in module order.
        in_features: the shared input's width.
    """

    name: str
    linears: tuple[str, ...]
    in_features: int


def group_name(linears: list[str]) -> str:
    """"a.b.q_proj+k_proj+v_proj": the first linear's name, then each sibling's last component."""
    return linears[0] + "".join("+" + n.rpartition(".")[2] for n in linears[1:])


class _InputProbe(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, seen: list):
        super().__init__()
        self.linear, self.seen = linear, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)  # holding the tensor keeps its id unique (no allocator reuse)
        return self.linear(x)


def find_linear_groups(model: torch.nn.Module, input_ids: torch.Tensor) -> list[LinearGroup]:
    """Group the block linears by the tensor they read during one forward of `input_ids`."""
    return group_linears(model, block_linears(model), lambda: model(input_ids=input_ids, use_cache=False))


def group_linears(root: torch.nn.Module, linears: dict[str, torch.nn.Linear], run: Callable[[], object]
                  ) -> list[LinearGroup]:
    """Group `linears` (qualified names inside `root`) by the tensor each reads while `run()` runs."""
    seen: dict[str, list] = {name: [] for name in linears}
    for name, linear in linears.items():
        swap_module(root, name, _InputProbe(linear, seen[name]))
    try:
        with torch.inference_mode():
            run()
    finally:
        for name, linear in linears.items():
            swap_module(root, name, linear)
    by_input: dict[tuple, list[str]] = {}
    for name in linears:
        key = tuple(id(t) for t in seen[name])  # same tensors read => same group
        by_input.setdefault(key if key else (name,), []).append(name)
    groups = []
    for names in by_input.values():
        groups.append(LinearGroup(group_name(names), tuple(names), linears[names[0]].in_features))
    return groups
