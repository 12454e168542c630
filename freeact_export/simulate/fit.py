"""Does a plan fit a PyTorch model? Checked before any module is replaced.

A plan applied to another model would otherwise fail deep inside module surgery (a layer index
the model lacks) or, worse, run: same shapes, another architecture. The plan's recorded model
(architecture, layer count: manifest.json) and its layers' names and weight shapes are compared
with the model's, and the first difference is named. `skeleton` builds the model from its config
on the meta device, so a command can refuse before loading any weight.
"""

from __future__ import annotations

import torch

from freeact_export.assets import ModelSource
from freeact_export.errors import UserError
from freeact_export.manifest import describe_torch_model
from freeact_export.models import hf_folder
from freeact_export.plan import Plan


def skeleton(source: ModelSource) -> torch.nn.Module | None:
    """The model's modules without weights (meta device), or None where its config does not load
    (the weight load that follows then says why, in its own words)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(hf_folder(source), local_files_only=True)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - any unloadable config is reported by load_torch_model
        return None


def plan_mismatch(model: torch.nn.Module, plan: Plan) -> str | None:
    """What differs between the model `plan` was made for and `model` (the first thing), or None."""
    recorded, have = plan.model, describe_torch_model(model)
    names = {have["architecture"], *(getattr(model.config, "architectures", None) or [])}
    if recorded.get("architecture") and recorded["architecture"] not in names:
        return f"architecture: the plan's {recorded['architecture']}, the model's {have['architecture']}"
    if None not in (recorded.get("num_layers"), have["num_layers"]) and recorded["num_layers"] != have["num_layers"]:
        return f"layer count: the plan's {recorded['num_layers']}, the model's {have['num_layers']}"
    modules = dict(model.named_modules())
    for group in plan.groups:
        for lin in group.linears:
            module = modules.get(lin.name)
            if not isinstance(module, torch.nn.Linear):
                return f"layer {lin.name}: the model has no linear layer of that name"
            if module.in_features != group.in_features:
                return f"in_features of group {group.name}: the plan's {group.in_features}, the model's " \
                       f"{module.in_features}"
            if tuple(module.weight.shape) != tuple(lin.codes.shape):
                return (f"weight shape of {lin.name}: the plan's {list(lin.codes.shape)}, the model's "
                        f"{list(module.weight.shape)}")
    return None


def require_fit(model: torch.nn.Module, plan: Plan, plan_label: str = "the plan",
                model_label: str = "this model") -> None:
    """UserError naming the first difference when `plan` was made for another model than `model`."""
    diff = plan_mismatch(model, plan)
    if diff is not None:
        made_for = plan.info.get("model")
        source = f" (made for {made_for})" if made_for else ""
        raise UserError(f"{plan_label}{source} does not fit {model_label} ({diff}); run it on the model it was made "
                        f"for, or quantize this one with 'freeact-export quantize --model MODEL -o DIR'")
