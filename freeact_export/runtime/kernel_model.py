"""Execute a quantization plan on a PyTorch model with the Triton kernels (no TensorRT).

The same wiring as the fake-quant simulation (simulate/fake_quant.py), with the two custom ops in
place of fake quantization: every planned group's consumers are replaced by explicit modules that
share one activation module, which runs FreeActQuantize once per input tensor; each consumer runs
Int4MatMul on the codes. The ops' constant inputs come from rewrite.op_tensors, the same arrays
the plugin graph carries as initializers, moved to the GPU once. Token types are computed from the
input ids exactly as the simulation does and read by every group.

W4A16 plans (no activation quantizer) have no FreeActQuantize: the plugin graph applies the
transform in floating point and multiplies with DequantizeLinear INT4 weights, which TensorRT runs
natively. Here the op-form transform runs in float32 torch and Int4MatMul's W4A16 variant
multiplies it with the packed INT4 weights (act_bits 16).

The kernels run where the model is: JIT-compiled on a CUDA GPU, or by Triton's interpreter on
the CPU (TRITON_INTERPRET=1; slow, for tests on tiny models).

Layers outside the plan (embeddings, lm_head, norms, attention) stay as they are.
"""

from __future__ import annotations

import numpy as np
import torch

from freeact_export.calibrate.stats import TypeContext
from freeact_export.config import QuantSpec
from freeact_export.errors import UserError
from freeact_export.kernels import launch
from freeact_export.module_surgery import swap_module
from freeact_export.plan import GroupPlan, LinearPlan, Plan
from freeact_export.rewrite.op_tensors import activation_tensors, weight_tensors
from freeact_export.runtime.torch_lm import TypedLogits
from freeact_export.transforms.apply import kron_apply

_OP_CONSTANTS = ("smooth", "kron_1", "kron_2", "masks", "clip")


class _SharedInput(torch.nn.Module):
    """One group's input path, computed once per input tensor and read by every consumer.

    q/k/v (gate/up) receive the very same tensor object; the result is held only until each
    consumer has read it, so no activation outlives the forward (as ActivationPath does).
    """

    def __init__(self, group: GroupPlan, num_types: int, context: TypeContext, device: torch.device):
        super().__init__()
        self.group_name = group.name
        self.context = context
        self.consumers = len(group.linears)
        consts = activation_tensors(group, num_types)
        self.kronecker = int(consts["kronecker"])
        for name in _OP_CONSTANTS:
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(consts[name])).to(device))
        self._last: tuple[torch.Tensor, object] | None = None
        self._reads_left = 0

    def types_for(self, x: torch.Tensor) -> torch.Tensor:
        if self.context.types is None:
            raise RuntimeError(f"group {self.group_name}: token types were not set before the forward")
        return self.context.types.reshape(x.shape[:-1])

    def compute(self, x: torch.Tensor):
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        if self._last is not None and self._last[0] is x:
            out = self._last[1]
            self._reads_left -= 1
            if self._reads_left == 0:
                self._last = None
            return out
        out = self.compute(x)
        self._reads_left = self.consumers - 1
        self._last = (x, out) if self._reads_left > 0 else None
        return out


class QuantizeInput(_SharedInput):
    """FreeActQuantize of a group's input: (codes, scale) from the kernel."""

    def __init__(self, group: GroupPlan, act_spec: QuantSpec, num_types: int, context: TypeContext,
                 device: torch.device):
        super().__init__(group, num_types, context, device)
        self.bits = act_spec.bits

    def compute(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return launch.freeact_quantize(x.contiguous(), self.types_for(x), self.smooth, self.kron_1, self.kron_2,
                                       self.masks, self.clip, self.bits, self.kronecker)


class FloatTransformInput(_SharedInput):
    """A W4A16 group's input: ((x / smooth) (kron_1[t] ⊗ kron_2[t])) ⊙ masks[t] in float32, not quantized."""

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        types = self.types_for(x).long()
        y = x.float() / self.smooth
        if self.kronecker:
            if self.kron_1.dim() == 2:
                y = kron_apply(y, self.kron_1, self.kron_2)
            else:  # per-type factors: each token takes its type's pair
                out = torch.empty_like(y)
                for t in range(self.kron_1.shape[0]):
                    chosen = types == t
                    if bool(chosen.any()):
                        out[chosen] = kron_apply(y[chosen], self.kron_1[t], self.kron_2[t])
                y = out
        return y * self.masks[types]


class Int4Linear(torch.nn.Module):
    """One consumer: Int4MatMul of the group's codes (W4A16: of its transformed input) with this layer's INT4 weight."""

    def __init__(self, source: _SharedInput, linear: LinearPlan, group: GroupPlan, act_bits: int,
                 device: torch.device):
        super().__init__()
        self.source = source
        self.act_bits = act_bits
        wt = weight_tensors(linear, group)
        self.group_size = int(wt["group_size"])
        self.register_buffer("weight", torch.from_numpy(wt["weight"]).to(device))
        self.register_buffer("weight_scale", torch.from_numpy(np.ascontiguousarray(wt["weight_scale"])).to(device))
        self.register_buffer("bias", None if linear.bias is None else torch.from_numpy(wt["bias"]).to(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits == 16:
            codes, scale = self.source(x).contiguous(), None
        else:
            codes, scale = self.source(x)
        return launch.int4_matmul(codes, scale, self.weight, self.weight_scale, self.bias, self.act_bits,
                                  self.group_size, out_dtype=x.dtype)


def _check_plan(model: torch.nn.Module, plan: Plan) -> None:
    spec = plan.act_spec
    if spec is not None and (not spec.symmetric or spec.granularity != "token"):
        raise UserError(f"the kernels quantize activations symmetric per token; this plan's activation quantizer "
                        f"is {spec.to_dict()}")
    modules = dict(model.named_modules())
    for group in plan.groups:
        for lin in group.linears:
            if not isinstance(modules.get(lin.name), torch.nn.Linear):
                raise UserError(f"plan layer '{lin.name}' is not a torch Linear of this model "
                                f"(the plan was made for {plan.info.get('model', 'another model')})")


def install_kernels(model: torch.nn.Module, plan: Plan, context: TypeContext) -> torch.nn.Module:
    """Replace the planned linears of `model` (in place, on its device) by kernel modules; return it.

    In place, unlike simulate.apply_plan: the float weights of the replaced layers are dropped,
    so a GPU holds the packed INT4 weights only (a deep copy would hold both).
    """
    _check_plan(model, plan)
    device = next(model.parameters()).device
    launch.require_mode(device)
    for group in plan.groups:
        if plan.act_spec is None:
            source = FloatTransformInput(group, context.num_types, context, device)
        else:
            source = QuantizeInput(group, plan.act_spec, context.num_types, context, device)
        for lin in group.linears:
            act_bits = 16 if plan.act_spec is None else plan.act_spec.bits
            swap_module(model, lin.name, Int4Linear(source, lin, group, act_bits, device))
    return model


class KernelLogits(TypedLogits):
    """LogitsRunner that runs a plan with the Triton kernels: token types from the inputs, then a forward.

    Takes ownership of `model` (its planned linears are replaced in place).
    """

    runtime = "freeact-kernels"

    def __init__(self, model: torch.nn.Module, plan: Plan):
        super().__init__(plan.token_types, lambda context: install_kernels(model, plan, context))

    def prepare(self, input_ids: torch.Tensor) -> None:
        super().prepare(input_ids)
        self.context.types = self.context.types.to(torch.int32).contiguous()  # the kernels' type, once a batch
