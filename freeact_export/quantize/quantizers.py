"""Integer quantizers: the exact codes and scales the kernels consume, and their fake-quant twin.

Conventions (shared with the ONNX rewrite and the CUDA kernels):
- codes = round_half_to_even(x / scale) (+ zero), clamped to the code range; x / scale is a
  true division in the tensor's float type.
- symmetric: scale = clip · absmax / qmax with qmax = 2^(b-1) - 1; codes in [-qmax-1, qmax],
  and -qmax-1 is never produced from unclipped data, so negation stays exact.
- full code range (weights only, ONNX Runtime's INT4 rule): scale = clip · extreme / (-qmax-1),
  where extreme is the slice's value of largest magnitude, so it lands exactly on -qmax-1 and
  the scale's sign is the opposite of its own: all 2^b codes are used.
- clip search (weights only, QuaRot's w_clip): each slice's clip is the shrink factor of
  1, 0.99, ..., 0.21 whose dequantized slice has the least sum |error|^2.4.
- asymmetric: range [min(x, 0), max(x, 0)] · clip over 2^b - 1 steps; zero = round(-lo / scale);
  codes in [0, 2^b - 1]; x ≈ (codes - zero) · scale.
- an all-zero row gets scale 1 (codes 0), never a division by zero.
Scales keep the reduced dimension: [rows, 1] per channel / token, [rows, K/g] per group
(stored [rows, K/g], broadcast as [rows, K/g, 1]), [1] per tensor.
"""

from __future__ import annotations

import dataclasses

import torch

from freeact_export.config import QuantSpec


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def code_dtype(spec: QuantSpec) -> torch.dtype:
    """int8 for symmetric codes, uint8 for asymmetric codes and their zero points."""
    return torch.int8 if spec.symmetric else torch.uint8


@dataclasses.dataclass
class Quantized:
    """Integer codes (code_dtype, shape of the input), scales, and zero points (asymmetric only)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None


def _grouped(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View x so the last dim holds exactly the elements that share one scale."""
    if spec.granularity == "group":
        if x.shape[-1] % spec.group_size:
            raise ValueError(f"input dim {x.shape[-1]} is not a multiple of group_size {spec.group_size}")
        return x.reshape(*x.shape[:-1], x.shape[-1] // spec.group_size, spec.group_size)
    if spec.granularity == "tensor":
        return x.reshape(1, -1)
    return x


def _row_clip(clip: torch.Tensor | float, spec: QuantSpec) -> torch.Tensor | float:
    """A clip given per row ([rows, 1]) in the grouped view: it applies to every group of the row."""
    if isinstance(clip, torch.Tensor) and spec.granularity == "group":
        return clip.unsqueeze(-1)
    return clip


def _scale_zero(g: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | float):
    """Scale (and zero) per last-dim slice of the grouped view; differentiable in `clip`, which is
    per slice of that view (or a float)."""
    lo_code, hi_code = code_range(spec.bits, spec.symmetric)
    if spec.code_range == "full":
        extreme = g.gather(-1, g.abs().argmax(dim=-1, keepdim=True)) * clip
        return torch.where(extreme != 0, extreme / lo_code, torch.ones_like(extreme)), None
    if spec.symmetric:
        absmax = g.abs().amax(dim=-1, keepdim=True) * clip
        scale = absmax / hi_code
        return torch.where(absmax > 0, scale, torch.ones_like(scale)), None
    lo = g.amin(dim=-1, keepdim=True).clamp(max=0) * clip
    hi = g.amax(dim=-1, keepdim=True).clamp(min=0) * clip
    scale = (hi - lo) / (hi_code - lo_code)
    scale = torch.where(hi > lo, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale).clamp(lo_code, hi_code)
    return scale, zero


def _codes(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: QuantSpec, ste: bool):
    lo_code, hi_code = code_range(spec.bits, spec.symmetric)
    t = g / scale
    rounded = t + (torch.round(t) - t).detach() if ste else torch.round(t)
    if zero is not None:
        rounded = rounded + zero
    return rounded.clamp(lo_code, hi_code)


# QuaRot's w_clip search: shrink factors 1 - i / _GRID for i < _MAX_SHRINK · _GRID, error norm _NORM.
_GRID, _MAX_SHRINK, _NORM = 100, 0.8, 2.4


def _searched_clip(g: torch.Tensor, spec: QuantSpec, per_row: bool = False) -> torch.Tensor:
    """Per slice of the grouped view, spec.clip_ratio times the shrink factor with the least error.

    The errors are evaluated in float32, as QuaRot does (its weights are float32): the fractional
    power is most of the cost, and float64 takes three times as long to pick the same factor (other
    than at near-ties). per_row: one factor per row of x, the least error summed over its slices
    (the shape of a learned clip, [rows, 1]).
    """
    g32 = g.float()
    shape = (g.shape[0], 1) if per_row else (*g.shape[:-1], 1)
    best = torch.ones(shape, dtype=g.dtype)  # the factors themselves stay exact
    best_err = torch.full(shape, float("inf"))
    for i in range(int(_MAX_SHRINK * _GRID)):
        shrink = 1 - i / _GRID
        scale, zero = _scale_zero(g32, spec, spec.clip_ratio * shrink)
        codes = _codes(g32, scale, zero, spec, ste=False)
        deq = (codes if zero is None else codes - zero) * scale
        err = (deq - g32).abs().pow(_NORM).sum(dim=-1, keepdim=True)
        if per_row:
            err = err.reshape(g.shape[0], -1).sum(dim=1, keepdim=True)
        better = err < best_err  # strict: ties keep the larger clip, as QuaRot's loop does
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, torch.full_like(best, shrink), best)
    return spec.clip_ratio * best


def searched_row_clip(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """QuaRot's clip search with one factor per row of a weight [rows, cols], over all its groups:
    the starting point of a learned per-output-channel clip ([rows, 1], relative to the full range)."""
    return _searched_clip(_grouped(weight, spec), dataclasses.replace(spec, clip_ratio=1.0), per_row=True)


def quantize(x: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | None = None) -> Quantized:
    """Integer codes and scales of x under `spec`.

    Args:
        clip: per-slice clipping factors broadcastable to the scale (e.g. learned, one per
            output channel [rows, 1]); defaults to spec.clip_ratio, or with spec.clip_search
            to each slice's searched clip.
    """
    g = _grouped(x, spec)
    if clip is not None:
        clip = _row_clip(clip, spec)
    elif spec.clip_search:
        clip = _searched_clip(g, spec)
    else:
        clip = spec.clip_ratio
    scale, zero = _scale_zero(g, spec, clip)
    codes = _codes(g, scale, zero, spec, ste=False).to(code_dtype(spec)).reshape(x.shape)
    if spec.granularity == "group":
        scale = scale.squeeze(-1)
        zero = None if zero is None else zero.squeeze(-1)
    elif spec.granularity == "tensor":
        scale = scale.reshape(1)
        zero = None if zero is None else zero.reshape(1)
    return Quantized(codes, scale, None if zero is None else zero.to(code_dtype(spec)))


def dequantize(q: Quantized, spec: QuantSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    codes = _grouped(q.codes.to(dtype), spec)
    scale = q.scale.to(dtype)
    zero = None if q.zero is None else q.zero.to(dtype)
    if spec.granularity == "group":
        scale = scale.unsqueeze(-1)
        zero = None if zero is None else zero.unsqueeze(-1)
    if zero is not None:
        codes = codes - zero
    return (codes * scale).reshape(q.codes.shape)


def fake_quantize(x: torch.Tensor, spec: QuantSpec, clip: torch.Tensor | float | None = None) -> torch.Tensor:
    """Quantize-dequantize with straight-through rounding, differentiable in x and `clip`.

    Args:
        x: activations [..., K] or a weight [N, K].
        spec: the quantizer.
        clip: learnable clipping factor broadcastable to the scale (e.g. sigmoid of a
            parameter, one per output channel); defaults to spec.clip_ratio.
    """
    g = _grouped(x, spec)
    scale, zero = _scale_zero(g, spec, spec.clip_ratio if clip is None else _row_clip(clip, spec))
    codes = _codes(g, scale, zero, spec, ste=True)
    if zero is not None:
        codes = codes - zero
    return (codes * scale).reshape(x.shape)
