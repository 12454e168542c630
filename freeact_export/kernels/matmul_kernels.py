"""Int4MatMul as Triton kernel bodies: packed INT4 weights unpacked in registers, integer dots.

    y[m, n] = scale[m] · Σ_seg ws[n, seg] · (Σ_{k in seg} a[m, k] w[n, k]) + bias[n]

The K axis is walked in segments: a weight group (group_size > 0), the whole of K (one scale per
output channel), or, for split-K decode, a slice of K (one scale per output channel, several
slices). Within a segment the dot is exact in int32 (tl.dot with INT8 operands: `wgmma` on
sm_90, `mma` s8 before); each segment's sum is scaled by its weight scale in fp32. The grid's
third axis splits the segments: with one split the program writes y; with several it writes
fp32 partial sums that `splitk_reduce_body` adds in a fixed order (deterministic, no atomics)
before the same epilogue.

A_KIND (constexpr): 0 activations packed INT4 [M, K/2] (low nibble = even k), 1 INT8 [M, K],
2 floating point [M, K] (W4A16: no activation scale; the weight codes, exact in any float type,
meet the activations in their own type, fp32 ones in true fp32).

Bodies are plain functions, made into kernels by variants.py; every segment bound is even, so a
packed byte is never split between two segments.
"""

from __future__ import annotations

import triton.language as tl


def int4_matmul_body(a_ptr, scale_ptr, w_ptr, ws_ptr, bias_ptr, out_ptr, M, N, K, seg_len, segs, segs_per_split,
                     ws_seg_div, groups, has_bias,
                     A_KIND: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     PARTIAL: tl.constexpr):
    """One [BM, BN] tile of y (PARTIAL = 0) or of split program_id(2)'s partial sums (PARTIAL = 1).

    seg_len / segs: the K segments (see the module docstring); the weight scale of segment s is
    column s // ws_seg_div of ws [N, groups]. segs_per_split: segments per split.
    """
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    split = tl.program_id(2)
    row_ok = rows < M
    col_ok = cols < N
    rows64 = rows.to(tl.int64)
    cols64 = cols.to(tl.int64)
    acc = tl.zeros((BM, BN), tl.float32)
    first = split * segs_per_split
    for seg in range(first, tl.minimum(first + segs_per_split, segs)):
        k_begin = seg * seg_len
        k_end = tl.minimum(k_begin + seg_len, K)
        part = tl.zeros((BM, BN), tl.float32 if A_KIND == 2 else tl.int32)
        for k0 in range(k_begin, k_end, BK):
            half = k0 // 2 + tl.arange(0, BK // 2)  # byte index along a packed row
            half_ok = 2 * half < k_end
            w_bytes = tl.load(w_ptr + cols64[:, None] * (K // 2) + half[None, :],
                              mask=col_ok[:, None] & half_ok[None, :], other=0)
            # two's complement nibbles: (b << 4) >> 4 sign-extends the low one, b >> 4 is the high one
            w = tl.reshape(tl.join((w_bytes << 4) >> 4, w_bytes >> 4), (BN, BK))
            if A_KIND == 0:
                a_bytes = tl.load(a_ptr + rows64[:, None] * (K // 2) + half[None, :],
                                  mask=row_ok[:, None] & half_ok[None, :], other=0)
                a = tl.reshape(tl.join((a_bytes << 4) >> 4, a_bytes >> 4), (BM, BK))
                part = tl.dot(a, tl.trans(w), part, out_dtype=tl.int32)
            else:
                k = k0 + tl.arange(0, BK)
                a = tl.load(a_ptr + rows64[:, None] * K + k[None, :], mask=row_ok[:, None] & (k < k_end)[None, :],
                            other=0)
                if A_KIND == 1:
                    part = tl.dot(a, tl.trans(w), part, out_dtype=tl.int32)
                elif a.dtype == tl.float32:
                    part = tl.dot(a, tl.trans(w).to(tl.float32), part, input_precision="ieee")
                else:
                    part = tl.dot(a, tl.trans(w).to(a.dtype), part)
        ws = tl.load(ws_ptr + cols64 * groups + seg // ws_seg_div, mask=col_ok, other=0.0)
        acc += part.to(tl.float32) * ws[None, :]
    inside = row_ok[:, None] & col_ok[None, :]
    if PARTIAL:
        tl.store(out_ptr + (split * M + rows64)[:, None] * N + cols64[None, :], acc, mask=inside)
    else:
        if A_KIND != 2:
            acc = acc * tl.load(scale_ptr + rows64, mask=row_ok, other=0.0)[:, None]
        if has_bias != 0:
            acc = acc + tl.load(bias_ptr + cols64, mask=col_ok, other=0.0)[None, :]
        tl.store(out_ptr + rows64[:, None] * N + cols64[None, :], acc.to(out_ptr.dtype.element_ty), mask=inside)


def splitk_reduce_body(part_ptr, scale_ptr, bias_ptr, out_ptr, M, N, splits, has_bias,
                       A_KIND: tl.constexpr, BN: tl.constexpr):
    """Row program_id(0), columns program_id(1) · BN + [0, BN): partials summed in split order, then the epilogue."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    col_ok = cols < N
    acc = tl.zeros((BN,), tl.float32)
    for split in range(0, splits):
        acc += tl.load(part_ptr + (split * M + row) * N + cols, mask=col_ok, other=0.0)
    if A_KIND != 2:
        acc = acc * tl.load(scale_ptr + row)
    if has_bias != 0:
        acc = acc + tl.load(bias_ptr + cols, mask=col_ok, other=0.0)
    tl.store(out_ptr + row * N + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)
