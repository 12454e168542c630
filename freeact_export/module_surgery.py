"""Explicit module replacement by qualified name (no hooks: what runs is what the tree shows)."""

from __future__ import annotations

import torch

from freeact_export.errors import UserError


def swap_module(root: torch.nn.Module, name: str, new: torch.nn.Module) -> torch.nn.Module:
    """Put `new` at `name` inside `root`; return the module that was there."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a Hugging Face decoder LM (model.get_decoder().layers)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise UserError(f"{type(model).__name__} has no decoder layer list (get_decoder().layers); "
                        "only decoder LMs in the Hugging Face layout are supported")
    return layers


def block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every nn.Linear inside the transformer blocks, by qualified name, in module order."""
    layers = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    return {f"{prefix}.{n}": m for n, m in layers.named_modules() if isinstance(m, torch.nn.Linear)}
