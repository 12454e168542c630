"""GPTQ (Frantar et al., 2022) for a folded weight, with the Hessian of the transformed activations.

Composable with every transform: the plan's weight is W' = W diag(s) T⁻ᵀ and the activations it
meets are x̃_k = x T_k (transforms.apply.type_matrices: smoothing, T, mask), so the
Hessian is H = Σ_k T_kᵀ M_k T_k / N with M_k = Σ x xᵀ of type k from calibration. Columns
are quantized in order, each one's rounding error spread over the columns not yet quantized
through the Cholesky factor of H⁻¹.
"""

from __future__ import annotations

import dataclasses

import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import QuantSpec
from freeact_export.plan import ONLINE_TENSORS
from freeact_export.quantize.quantizers import Quantized, code_dtype, code_range, quantize
from freeact_export.transforms.apply import activation_side, for_type

_DAMP = 0.01  # fraction of mean(diag H) added to the diagonal, as in the reference implementation
_BLOCK = 128


def transformed_hessian(stats: list[TypeStats], kind: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """E[x̃ x̃ᵀ] over all calibration tokens in the plan's per-type transformed basis (float64).

    T_kᵀ M_k T_k is formed by applying the activation side to M_k's rows and then to the result's
    columns, O(d² (d1 + d2)) for Hadamard and Kronecker transforms instead of the O(d³) of dense
    T_k (a 14336-wide down_proj: seconds instead of most of an hour on 2 cores, and no dense T_k in
    memory); types that share the transform and have no masks are summed first.
    """
    online = {k: v.double() for k, v in tensors.items() if k in ONLINE_TENSORS}
    masks = tensors.get("masks")
    if "type_kron_1" in tensors or masks is not None:
        parts = [(s.second_moment, for_type(online, k), None if masks is None else masks[k].double())
                 for k, s in enumerate(stats)]
    else:
        parts = [(sum(s.second_moment for s in stats), online, None)]
    hessian = None
    for moment, type_tensors, mask in parts:
        rows = activation_side(moment, kind, type_tensors)  # M D T (M and D symmetric)
        both = activation_side(rows.T.contiguous(), kind, type_tensors)  # Tᵀ D M D T
        del rows
        if mask is not None:
            both *= mask[:, None] * mask[None, :]
        hessian = both if hessian is None else hessian.add_(both)
    return hessian / max(sum(s.count for s in stats), 1)


def _column_params(w: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | None):
    """Per-row scale (and zero) [n, 1] of a weight slice, exactly as quantize() computes them."""
    q = quantize(w, dataclasses.replace(spec, granularity="channel", group_size=0), clip)
    return q.scale, q.zero


def _static_params(w: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | None):
    """The weight's scales (and zeros) as stored, fixed before any column is quantized, and each
    column's [n, d]."""
    q = quantize(w, spec, clip)
    if spec.granularity == "channel":
        spread = lambda t: t.expand_as(w)  # noqa: E731
    else:
        spread = lambda t: t.repeat_interleave(spec.group_size, dim=1)  # noqa: E731  [n, d/g] -> [n, d]
    return q.scale, q.zero, spread(q.scale), None if q.zero is None else spread(q.zero).double()


@dataclasses.dataclass
class HessianFactor:
    """What GPTQ needs of one Hessian, shared by every weight that reads the same input (q, k and v;
    gate and up): the column order, the inputs that never fire, and the upper Cholesky factor of the
    damped H⁻¹ in that order (float64)."""

    perm: torch.Tensor
    dead: torch.Tensor
    h_inv: torch.Tensor


def factor_hessian(hessian: torch.Tensor, act_order: bool = False) -> HessianFactor:
    """Damp, order and factor a Hessian [d, d] once, holding at most two d x d copies beside it (a
    14336-wide down_proj: 1.6 GB each in float64)."""
    h = hessian.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    d = h.shape[0]
    perm = torch.argsort(torch.diagonal(h), descending=True, stable=True) if act_order else torch.arange(d)
    if act_order:
        h = h[perm][:, perm]
    h.diagonal().add_(_DAMP * torch.diagonal(h).mean())
    lower = torch.linalg.cholesky(h)
    del h
    inverse = torch.cholesky_inverse(lower)
    del lower
    return HessianFactor(perm, dead, torch.linalg.cholesky(inverse, upper=True))


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor | HessianFactor, spec: QuantSpec,
                  clip: torch.Tensor | None = None, act_order: bool = False) -> Quantized:
    """Quantize a weight [n, d] (float64) column by column with error feedback.

    Scales are fixed before the columns they cover are quantized: once per row for
    per-channel specs (from the unmodified weight, clip applied), and at each group's first
    column for group specs (from the error-updated weights), as reference GPTQ does. With
    act_order, columns go in order of decreasing Hessian diagonal (the inputs with the most
    energy first, while the most columns are left to absorb their error); groups then keep
    their contiguous inputs, so their scales are fixed from the unmodified weight up front
    (reference GPTQ's static_groups). `hessian` may come factored already (factor_hessian, with the
    same act_order): weights that share an input share the factorisation.
    """
    if spec.granularity not in ("channel", "group"):
        raise ValueError("GPTQ quantizes weights per channel or per group")
    factor = hessian if isinstance(hessian, HessianFactor) else factor_hessian(hessian, act_order)
    perm, h_inv = factor.perm, factor.h_inv
    w = weight.double().clone()
    n, d = w.shape
    w[:, factor.dead] = 0.0
    grouped_on_the_fly = spec.granularity == "group" and not act_order
    if not grouped_on_the_fly:
        scale, zero, col_scale, col_zero = _static_params(w, spec, clip)
    w = w[:, perm]
    if not grouped_on_the_fly:
        col_scale = col_scale[:, perm]
        col_zero = None if col_zero is None else col_zero[:, perm]

    lo, hi = code_range(spec.bits, spec.symmetric)
    codes = torch.zeros(n, d, dtype=torch.float64)
    block = spec.group_size if grouped_on_the_fly else _BLOCK
    scales, zeros = [], []
    for start in range(0, d, block):
        stop = min(start + block, d)
        w1 = w[:, start:stop].clone()
        err1 = torch.zeros_like(w1)
        h1 = h_inv[start:stop, start:stop]
        if grouped_on_the_fly:  # blocks coincide with groups: w1 is fully updated here
            scale, zero = _column_params(w1, spec, clip)
            scales.append(scale)
            zeros.append(zero)
        for i in range(stop - start):
            j = slice(start + i, start + i + 1)
            if grouped_on_the_fly:
                s, z = scale, None if zero is None else zero.double()
            else:
                s, z = col_scale[:, j], None if col_zero is None else col_zero[:, j]
            col = w1[:, i:i + 1]
            c = torch.round(col / s) + (0 if z is None else z)
            c = c.clamp(lo, hi)
            deq = (c - (0 if z is None else z)) * s
            codes[:, start + i] = c[:, 0]
            err = (col - deq) / h1[i, i]
            w1[:, i:] -= err * h1[i:i + 1, i:]
            err1[:, i:i + 1] = err
        w[:, stop:] -= err1 @ h_inv[start:stop, stop:]
    codes = codes[:, torch.argsort(perm)]
    if grouped_on_the_fly:
        scale = torch.cat(scales, dim=1)
        zero = None if zeros[0] is None else torch.cat(zeros, dim=1)
    return Quantized(codes.to(code_dtype(spec)), scale, zero)
