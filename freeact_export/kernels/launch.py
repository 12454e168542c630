"""The two ops on torch tensors, through the Triton kernels: on a CUDA device JIT-compiled, on the CPU interpreted.

Inputs are checked here (device, dtype, shape, contiguity) before anything is launched, so a bad
call is a ValueError naming the tensor. The tile configuration comes from variants.py, the table
the TensorRT plugins' cubins were compiled from. On the CPU, Triton's interpreter runs the very
same kernel bodies with NumPy (slow; for tests and small checks); it counts INTERPRETER_SMS
multiprocessors, so decode shapes take the split-K path there as they do on a GPU.
"""

from __future__ import annotations

import torch

from freeact_export.errors import UserError
from freeact_export.kernels import variants

_QMAX = {4: 7, 8: 127}
_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)
INTERPRETER_SMS = 4


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check(name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...], device: torch.device | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (got {type(t).__name__})")
    if t.device.type not in ("cuda", "cpu"):
        raise ValueError(f"{name} must be on a CUDA device or the CPU (got {t.device})")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, the other inputs on {device}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must be {' or '.join(_name(d) for d in dtypes)} (got {_name(t.dtype)})")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _shape_error(name: str, t: torch.Tensor, expected: str) -> ValueError:
    return ValueError(f"{name} has shape {list(t.shape)}, expected {expected}")


def interpreter_active() -> bool:
    """Whether Triton runs kernels in its interpreter in this process: decided when triton.language is
    first imported (TRITON_INTERPRET=1 then), for Triton's own library functions as much as for ours."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.standard.max, InterpretedFunction)


def require_mode(device: torch.device) -> None:
    """UserError unless the kernels can run on `device` in this process (interpreter on the CPU, JIT on CUDA)."""
    if device.type == "cpu" and not interpreter_active():
        raise UserError("the kernels run on the CPU only in Triton's interpreter (slow; for tests and tiny models): "
                        "start the process with TRITON_INTERPRET=1, or run on a CUDA GPU")
    if device.type == "cuda" and interpreter_active():
        raise UserError("TRITON_INTERPRET=1 is set, so Triton cannot compile the kernels for the GPU: unset it")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"the kernels run on a CUDA GPU or (interpreted) on the CPU, not on {device}")


def _kernels(device: torch.device) -> dict:
    require_mode(device)
    return variants.kernels(interpret=device.type == "cpu")


def _multiprocessors(device: torch.device) -> int:
    if device.type == "cpu":
        return INTERPRETER_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def freeact_quantize(x: torch.Tensor, types: torch.Tensor, smooth: torch.Tensor, kron_1: torch.Tensor,
                     kron_2: torch.Tensor, masks: torch.Tensor, clip: torch.Tensor, bits: int = 4,
                     kronecker: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """FreeActQuantize (ops.schema) on the inputs' device (a CUDA GPU, or the CPU through the interpreter).

    Args:
        x: float32 / float16 / bfloat16 [..., d]; leading dims are tokens.
        types: int32 [...] (x's leading shape), each in [0, K).
        smooth: float32 [d]. kron_1 / kron_2: float32 [d1, d1] / [d2, d2] shared, or [K, d1, d1] /
            [K, d2, d2] one pair per type (d1 · d2 = d); ignored (any [1, 1]) when kronecker = 0.
        masks: float32 [K, d]. clip: float32 [K].
        bits: 4 (codes packed int8 [..., d/2], low nibble = even element) or 8 (int8 [..., d]).

    Returns:
        (codes, scale float32 [..., 1]).

    Raises:
        UserError: the shape has no kernel tile (d2 above 128, or an odd d2 with INT4 packing).
    """
    if bits not in _QMAX or kronecker not in (0, 1):
        raise ValueError(f"FreeActQuantize: bits must be 4 or 8 and kronecker 0 or 1 (got {bits}, {kronecker})")
    _check("x", x, _FLOAT_TYPES)
    device = x.device
    _check("types", types, (torch.int32,), device)
    for name, t in (("smooth", smooth), ("kron_1", kron_1), ("kron_2", kron_2), ("masks", masks), ("clip", clip)):
        _check(name, t, (torch.float32,), device)
    if x.dim() < 1:
        raise _shape_error("x", x, "[..., d]")
    d = x.shape[-1]
    if bits == 4 and d % 2:
        raise ValueError(f"FreeActQuantize with bits=4 packs pairs: d must be even (got {d})")
    if tuple(types.shape) != tuple(x.shape[:-1]):
        raise _shape_error("types", types, f"x's leading shape {list(x.shape[:-1])}")
    if tuple(smooth.shape) != (d,):
        raise _shape_error("smooth", smooth, f"[{d}]")
    if masks.dim() != 2 or masks.shape[1] != d:
        raise _shape_error("masks", masks, f"[K, {d}]")
    num_types = masks.shape[0]
    if tuple(clip.shape) != (num_types,):
        raise _shape_error("clip", clip, f"[{num_types}] (one per row of masks)")
    per_type = kron_1.dim() == 3
    if kron_1.dim() not in (2, 3) or kron_2.dim() != kron_1.dim():
        raise ValueError(f"kron_1 {list(kron_1.shape)} and kron_2 {list(kron_2.shape)} must both be "
                         "[d_i, d_i] (shared) or both [K, d_i, d_i] (per type)")
    d1, d2 = kron_1.shape[-1], kron_2.shape[-1]
    if kron_1.shape[-2] != d1 or kron_2.shape[-2] != d2:
        raise ValueError(f"Kronecker factors must be square (got {list(kron_1.shape)}, {list(kron_2.shape)})")
    if per_type and (kron_1.shape[0] != num_types or kron_2.shape[0] != num_types):
        raise ValueError(f"per-type factors {list(kron_1.shape)} / {list(kron_2.shape)} need one pair per type "
                         f"({num_types})")
    if kronecker and d1 * d2 != d:
        raise ValueError(f"kron_1 ({d1}) ⊗ kron_2 ({d2}) does not act on d = {d}")
    tile = variants.kron_tile(d1, d2) if kronecker else None
    if kronecker:
        unsupported_tile(d1, d2, bits, tile)
    tokens = x.numel() // d if d else 0
    codes = torch.empty((*x.shape[:-1], d // 2 if bits == 4 else d), dtype=torch.int8, device=device)
    scale = torch.ones((*x.shape[:-1], 1), dtype=torch.float32, device=device)  # d = 0: amax 0, so scale 1
    if tokens == 0:
        return codes, scale
    kernels = _kernels(device)
    with _on(device):
        if kronecker:
            kernels["quantize_kron"][(tokens,)](
                x, types, smooth, kron_1, kron_2, masks, clip, codes, scale, d, d1, d2,
                d1 * d1 if per_type else 0, d2 * d2 if per_type else 0, bits, num_types,
                D1P=tile[0], D2P=tile[1], num_warps=variants.kron_warps(tile), **variants.COMPILE_OPTIONS)
        else:
            kernels["quantize_plain"][(tokens,)](x, types, smooth, masks, clip, codes, scale, d, bits, num_types,
                                                 CHUNK=variants.PLAIN_CHUNK, num_warps=4, **variants.COMPILE_OPTIONS)
    return codes, scale


def unsupported_tile(d1: int, d2: int, bits: int, tile: tuple[int, int] | None) -> None:
    """Raise UserError where the Kronecker kernel has no tile for [d1, d2] (the message says which limit)."""
    if tile is None:
        largest = variants.KRON_TILES[-1]
        raise UserError(f"FreeActQuantize has no kernel tile for Kronecker factors {d1} x {d2}: the largest is "
                        f"{largest[0]} x {largest[1]} (d1 <= d2, as quantize.freeact.kron_dims splits d)")
    if bits == 4 and d2 % 2:
        raise UserError(f"FreeActQuantize packs INT4 codes along the right factor, which must be even "
                        f"(Kronecker factors {d1} x {d2})")


def int4_matmul(codes: torch.Tensor, scale: torch.Tensor | None, weight: torch.Tensor, weight_scale: torch.Tensor,
                bias: torch.Tensor | None, act_bits: int = 4, group_size: int = 0,
                out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Int4MatMul (ops.schema) on the inputs' device; act_bits 16 is the W4A16 product (float activations).

    Args:
        codes: int8 [..., k/2] packed (act_bits 4), int8 [..., k] (act_bits 8), or float [..., k]
            (act_bits 16: the activations themselves, in any of float32 / float16 / bfloat16).
        scale: float32 [..., 1] activation scale per token; None for act_bits 16.
        weight: packed INT4 int8 [n, k/2], low nibble = even input.
        weight_scale: float32 [n, G], G = 1 (group_size 0) or k / group_size.
        bias: float32 [n], or None for no bias.
        out_dtype: float32, float16 or bfloat16 (the schema's output is float32; a narrower type
            lets the next layer read it directly).

    Returns:
        y [..., n] in out_dtype.
    """
    if act_bits not in (4, 8, 16) or group_size < 0 or group_size % 2:
        raise ValueError(f"Int4MatMul: act_bits must be 4, 8 or 16 and group_size 0 or a positive even number "
                         f"(got {act_bits}, {group_size})")
    if out_dtype not in _FLOAT_TYPES:
        raise ValueError(f"out_dtype must be float32, float16 or bfloat16 (got {out_dtype})")
    _check("codes", codes, _FLOAT_TYPES if act_bits == 16 else (torch.int8,))
    device = codes.device
    if act_bits == 16:
        if scale is not None:
            raise ValueError("act_bits 16 takes float activations and no scale (pass scale=None)")
    else:
        _check("scale", scale, (torch.float32,), device)
    _check("weight", weight, (torch.int8,), device)
    _check("weight_scale", weight_scale, (torch.float32,), device)
    if bias is not None:
        _check("bias", bias, (torch.float32,), device)
    if weight.dim() != 2:
        raise _shape_error("weight", weight, "[n, k/2]")
    n, k = weight.shape[0], 2 * weight.shape[1]
    width = k // 2 if act_bits == 4 else k
    if codes.dim() < 1 or codes.shape[-1] != width:
        raise _shape_error("codes", codes, f"[..., {width}] (k = {k}, act_bits {act_bits})")
    if scale is not None and tuple(scale.shape) != (*codes.shape[:-1], 1):
        raise _shape_error("scale", scale, f"{[*codes.shape[:-1], 1]}")
    if group_size and k % group_size:
        raise ValueError(f"group_size {group_size} does not divide k = {k}")
    groups = k // group_size if group_size else 1
    if tuple(weight_scale.shape) != (n, groups):
        raise _shape_error("weight_scale", weight_scale, f"[{n}, {groups}]")
    if bias is not None and tuple(bias.shape) != (n,):
        raise _shape_error("bias", bias, f"[{n}]")
    y = torch.empty((*codes.shape[:-1], n), dtype=out_dtype, device=device)
    if k == 0:  # no inner dimension: every dot is 0
        return y.copy_((torch.zeros(n, device=device) if bias is None else bias).expand_as(y))
    tokens = codes.numel() // codes.shape[-1]
    if tokens == 0 or n == 0:
        return y
    a_kind = {4: 0, 8: 1, 16: 2}[act_bits]
    tile = variants.matmul_tile(tokens)
    seg_len, segs, per_split, ws_div = variants.split_plan(tile, n, k, group_size, _multiprocessors(device))
    splits = -(-segs // per_split)
    kernels = _kernels(device)
    # Pointers the kernel does not read (no scale for W4A16, no bias) get any valid tensor.
    scale_arg = weight_scale if scale is None else scale
    bias_arg = weight_scale if bias is None else bias
    grid = (-(-tokens // tile.bm), -(-n // tile.bn), splits)
    meta = dict(A_KIND=a_kind, BM=tile.bm, BN=tile.bn, BK=tile.bk, num_warps=tile.num_warps, **variants.COMPILE_OPTIONS,
                num_stages=tile.num_stages)
    with _on(device):
        if splits == 1:
            kernels["int4_matmul"][grid](codes, scale_arg, weight, weight_scale, bias_arg, y, tokens, n, k, seg_len,
                                         segs, per_split, ws_div, groups, int(bias is not None), PARTIAL=0, **meta)
            return y
        partial = torch.empty((splits, tokens, n), dtype=torch.float32, device=device)
        kernels["int4_matmul"][grid](codes, scale_arg, weight, weight_scale, bias_arg, partial, tokens, n, k, seg_len,
                                     segs, per_split, ws_div, groups, 0, PARTIAL=1, **meta)
        kernels["splitk_reduce"][(tokens, -(-n // variants.REDUCE_BN))](
            partial, scale_arg, bias_arg, y, tokens, n, splits, int(bias is not None), A_KIND=a_kind,
            BN=variants.REDUCE_BN, num_warps=variants.REDUCE_WARPS, **variants.COMPILE_OPTIONS)
    return y


class _on:
    """torch.cuda.device(device) for a CUDA device (Triton launches on the current one); nothing on the CPU."""

    def __init__(self, device: torch.device):
        self.inner = torch.cuda.device(device) if device.type == "cuda" else None

    def __enter__(self):
        if self.inner is not None:
            self.inner.__enter__()

    def __exit__(self, *exc):
        if self.inner is not None:
            self.inner.__exit__(*exc)
