"""Explicit fake-quant modules that execute a Plan inside the PyTorch model.

Each group's consumers are replaced by SimLinear modules sharing one ActivationPath, which
computes x̃ = Q_a(((x / s) T[type]) ⊙ mask[type]; clip[type]) once per input tensor (T[type] = T
unless the plan has per-type factors). Weights are the
plan's codes times scales, so the simulation computes exactly what the integer kernels do up
to float summation order.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from freeact_export.calibrate.stats import TypeContext
from freeact_export.config import QuantSpec
from freeact_export.module_surgery import swap_module
from freeact_export.plan import ONLINE_TENSORS, GroupPlan, Plan
from freeact_export.quantize.quantizers import Quantized, dequantize, fake_quantize, quantize
from freeact_export.runtime.torch_lm import TypedLogits
from freeact_export.simulate.fit import require_fit
from freeact_export.transforms.apply import typed_activation_side


class ActivationPath(torch.nn.Module):
    """The online side of one group: transform, per-type mask and clip, activation fake-quant."""

    def __init__(self, group: GroupPlan, act_spec: QuantSpec | None, context: TypeContext):
        super().__init__()
        self.kind = group.transform
        self.transform_tensors = {k: v for k, v in group.tensors.items() if k in ONLINE_TENSORS}
        self.masks = group.tensors.get("masks")
        self.clip = group.tensors["clip"]
        self.act_spec = act_spec
        self.context = context
        self.consumers = len(group.linears)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._reads_left = 0
        self.recorded: list[Quantized] | None = None  # set to a list to keep the integer activations (parity)
        # With `recorded`: each code's distance to its rounding boundary, in code steps (0 = an exact tie).
        self.tie_room: list[torch.Tensor] | None = None
        # (where, codes): the codes passed on instead of this path's own at `where` (parity's replay).
        self.forced: tuple[torch.Tensor, torch.Tensor] | None = None
        self.compute_dtype = torch.float32  # float64 moves rounding ties: the parity check's noise floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is x:  # q/k/v (gate/up) read the same tensor
            y = self._last[1]
            self._reads_left -= 1
            if self._reads_left == 0:  # every consumer has it: hold no activation past the forward
                self._last = None
            return y
        types = self.context.types.to(x.device).reshape(x.shape[:-1]).long()
        y = typed_activation_side(x.to(self.compute_dtype), types, self.kind, self.transform_tensors)
        if self.masks is not None:
            y = y * self.masks.to(y.device)[types]
        if self.act_spec is not None:
            clip = self.clip.to(y.device)[types][..., None]
            if self.recorded is None and self.forced is None:
                y = fake_quantize(y, self.act_spec, clip=clip)
            else:
                y = self._quantize_observed(y, clip)
        y = y.to(x.dtype)
        self._reads_left = self.consumers - 1
        self._last = (x, y) if self._reads_left > 0 else None
        return y

    def _quantize_observed(self, y: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        """fake_quantize, recording the codes it computes (and their tie rooms), and passing on the forced
        codes instead where they are given."""
        if self.act_spec.granularity != "token":
            raise ValueError("codes are recorded and replayed for per-token activation quantization only")
        q = quantize(y.detach(), self.act_spec, clip)
        if self.tie_room is not None:  # the value the quantizer rounds, as _codes computes it
            t = y.detach() / q.scale
            self.tie_room.append((0.5 - (t - torch.round(t)).abs()).float())
        if self.recorded is not None:  # the path's own codes, whatever is forced
            self.recorded.append(q)
        y = fake_quantize(y, self.act_spec, clip=clip)
        if self.forced is not None:
            where, codes = self.forced
            forced = Quantized(torch.where(where, codes.to(q.codes.dtype), q.codes), q.scale, q.zero)
            y = torch.where(where, dequantize(forced, self.act_spec, y.dtype), y)
        return y


class SimLinear(torch.nn.Module):
    """A consumer linear: the shared quantized activation times the dequantized transformed weight."""

    def __init__(self, path: ActivationPath, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.path = path
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.path(x), self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def apply_plan(model: torch.nn.Module, plan: Plan, context: TypeContext) -> torch.nn.Module:
    """A copy of `model` whose block linears execute `plan` (the original stays untouched).

    UserError, before anything is copied, when the plan was made for another model (simulate/fit.py).
    """
    require_fit(model, plan)
    return with_groups(model, "", plan.groups, plan.act_spec, context)


def with_groups(module: torch.nn.Module, prefix: str, groups: list[GroupPlan], act_spec: QuantSpec | None,
                 context: TypeContext) -> torch.nn.Module:
    """A copy of `module` (qualified name `prefix`, with its dot: one decoder layer when quantizing layer by
    layer, "" for the model) whose linears in `groups` execute them."""
    module = copy.deepcopy(module)
    device = next(module.parameters()).device
    for group in groups:
        path = ActivationPath(group, act_spec, context)
        for lin in group.linears:
            weight = dequantize(Quantized(lin.codes, lin.scale, lin.zero), group.weight_spec).to(device)
            bias = None if lin.bias is None else lin.bias.to(device)
            swap_module(module, lin.name.removeprefix(prefix), SimLinear(path, weight, bias))
    return module


class SimulatedLogits(TypedLogits):
    """LogitsRunner for a plan-executing model (fake quantization): token types from the inputs, then a forward."""

    runtime = "torch-fakequant"

    def __init__(self, model: torch.nn.Module, plan: Plan):
        self.base_model = model
        super().__init__(plan.token_types, lambda context: apply_plan(model, plan, context))
        # One ActivationPath per group, in plan order (named_modules lists each shared path once).
        self.paths = [m for _, m in self.model.named_modules() if isinstance(m, ActivationPath)]
