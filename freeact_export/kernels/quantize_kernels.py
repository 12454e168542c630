"""FreeActQuantize as Triton kernel bodies: one program per token, every step in one pass.

    y = ((x / smooth) (kron_1[t] ⊗ kron_2[t])) ⊙ masks[t]          (t: the token's type)
    scale = amax(|y|) · clip[t] / qmax   (1 where that is 0)
    codes = clamp(round_half_to_even(y / scale), -qmax - 1, qmax)   packed in pairs for INT4

exactly as ops/reference.py writes it: every division is correctly rounded (`tl.div_rn`; a
plain `/` on a GPU is an approximate division), the transform runs in true fp32
(`input_precision="ieee"`, not TF32), and rounding is half-to-even by exact float steps. Only
the transform's sums may add in another order than NumPy's: that is the one source of code
differences, at rounding ties (tests/unit/test_triton_kernels.py bounds it).

The bodies are plain functions, made into kernels by variants.py (JIT or interpreter, and the
ahead-of-time build). Their helpers are @triton.jit functions: like Triton's own library (tl.max),
they are compiled or interpreted as the process decided when triton.language was first imported.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Round half to even in two exact fp32 additions: adding 1.5 · 2^23 leaves no fraction bits, so the
# hardware's round-to-nearest-even rounds the sum, and subtracting it back is exact (|q| < 2^22;
# here |q| <= qmax). No compiler reassociates these: Triton does not enable fast math.
ROUNDER: tl.constexpr = tl.constexpr(12582912.0)
ROWS: tl.constexpr = tl.constexpr(16)  # rows of X per step of the Kronecker transform (tl.dot's smallest)


def quantize_kron_body(x_ptr, types_ptr, smooth_ptr, k1_ptr, k2_ptr, masks_ptr, clip_ptr, codes_ptr, scale_ptr,
                       d, d1, d2, k1_type_stride, k2_type_stride, bits, num_types,
                       D1P: tl.constexpr, D2P: tl.constexpr):
    """Kronecker transform: the token's row viewed as X [d1, d2] (padded to [D1P, D2P]); Y = Aᵀ X B.

    Y is summed over chunks of ROWS rows of X: Y += Aᵀ[:, rows] (X[rows] B). B stays on chip; a
    chunk keeps each tl.dot small (an fp32 dot is unrolled into FMAs, so the code grows with it).
    k*_type_stride: d_i² for one factor pair per type, 0 for one shared pair. bits: 4 or 8.
    num_types: rows of masks; a type outside [0, num_types) (the contract forbids it) is clamped
    into range, so no input makes the kernel read out of bounds. INT4 packs along d2 (d2 even), so a
    byte never straddles two rows of X.
    """
    token = tl.program_id(0).to(tl.int64)
    kind = tl.minimum(tl.maximum(tl.load(types_ptr + token), 0), num_types - 1)
    rows = tl.arange(0, D1P)[:, None]
    cols = tl.arange(0, D2P)[None, :]
    inside = (rows < d1) & (cols < d2)
    flat = rows * d2 + cols
    # B [d2, d2] of this token's type; zero padding adds exact zeros to every sum.
    b_rows = tl.arange(0, D2P)[:, None]
    b = tl.load(k2_ptr + kind * k2_type_stride + b_rows * d2 + cols, mask=(b_rows < d2) & (cols < d2), other=0.0)
    chunk = tl.arange(0, ROWS)
    y = tl.zeros((D1P, D2P), tl.float32)
    for first in range(0, d1, ROWS):
        r = first + chunk[:, None]
        inside_r = (r < d1) & (cols < d2)
        x = tl.load(x_ptr + token * d + r * d2 + cols, mask=inside_r, other=0.0).to(tl.float32)
        v = tl.div_rn(x, tl.load(smooth_ptr + r * d2 + cols, mask=inside_r, other=1.0))
        # Aᵀ[:, r]: element (i, j) is A[first + j, i]
        r_cols = first + chunk[None, :]
        a_t = tl.load(k1_ptr + kind * k1_type_stride + r_cols * d1 + rows, mask=(rows < d1) & (r_cols < d1),
                      other=0.0)
        y = tl.dot(a_t, tl.dot(v, b, input_precision="ieee"), y, input_precision="ieee")
    y = y * tl.load(masks_ptr + kind * d + flat, mask=inside, other=0.0)

    qmax = tl.where(bits == 4, 7.0, 127.0)
    scale = _scale(tl.max(tl.max(tl.abs(y), axis=1), axis=0), tl.load(clip_ptr + kind), qmax)
    tl.store(scale_ptr + token, scale)
    q = _codes(y, scale, qmax)
    if bits == 8:
        tl.store(codes_ptr + token * d + flat, q.to(tl.int8), mask=inside)
    else:
        half_cols = tl.arange(0, D2P // 2)[None, :]
        tl.store(codes_ptr + token * (d // 2) + rows * (d2 // 2) + half_cols, _pack_pairs(q, D1P, D2P),
                 mask=(rows < d1) & (half_cols < d2 // 2))


def quantize_plain_body(x_ptr, types_ptr, smooth_ptr, masks_ptr, clip_ptr, codes_ptr, scale_ptr, d, bits, num_types,
                        CHUNK: tl.constexpr):
    """No transform (kronecker = 0): y = (x / smooth) ⊙ masks[t], in chunks of CHUNK along the row.

    Two passes over the row: the first finds amax, the second recomputes y (cheaper than keeping
    a row of up to d floats) and writes the codes.
    """
    token = tl.program_id(0).to(tl.int64)
    kind = tl.minimum(tl.maximum(tl.load(types_ptr + token), 0), num_types - 1)
    offsets = tl.arange(0, CHUNK)
    amax = tl.zeros((CHUNK,), tl.float32)
    for start in range(0, d, CHUNK):
        k = start + offsets
        amax = tl.maximum(amax, tl.abs(_plain_chunk(x_ptr, smooth_ptr, masks_ptr, token, kind, d, k)))
    qmax = tl.where(bits == 4, 7.0, 127.0)
    scale = _scale(tl.max(amax, axis=0), tl.load(clip_ptr + kind), qmax)
    tl.store(scale_ptr + token, scale)
    for start in range(0, d, CHUNK):
        k = start + offsets
        q = _codes(_plain_chunk(x_ptr, smooth_ptr, masks_ptr, token, kind, d, k), scale, qmax)
        if bits == 8:
            tl.store(codes_ptr + token * d + k, q.to(tl.int8), mask=k < d)
        else:
            half = start // 2 + tl.arange(0, CHUNK // 2)
            packed = tl.reshape(_pack_pairs(tl.reshape(q, (1, CHUNK)), 1, CHUNK), (CHUNK // 2,))
            tl.store(codes_ptr + token * (d // 2) + half, packed, mask=half < d // 2)


@triton.jit
def _plain_chunk(x_ptr, smooth_ptr, masks_ptr, token, kind, d, k):
    """(x / smooth) ⊙ masks[kind] at the row positions k (zero past d)."""
    inside = k < d
    x = tl.load(x_ptr + token * d + k, mask=inside, other=0.0).to(tl.float32)
    y = tl.div_rn(x, tl.load(smooth_ptr + k, mask=inside, other=1.0))
    return y * tl.load(masks_ptr + kind * d + k, mask=inside, other=0.0)


@triton.jit
def _scale(amax, clip, qmax):
    """amax · clip / qmax, or 1 where that is 0 (quantizers._scale_zero's float32 steps)."""
    absmax = amax * clip
    return tl.where(absmax > 0, tl.div_rn(absmax, qmax), 1.0)


@triton.jit
def _codes(y, scale, qmax):
    """clamp(round_half_to_even(y / scale), -qmax - 1, qmax) as int32."""
    q = tl.div_rn(y, scale)
    q = (q + ROUNDER) - ROUNDER
    return tl.minimum(tl.maximum(q, -qmax - 1.0), qmax).to(tl.int32)


@triton.jit
def _pack_pairs(q, ROWS: tl.constexpr, COLS: tl.constexpr):
    """int codes [ROWS, COLS] → int8 [ROWS, COLS / 2]: the even column in the low nibble, two's complement."""
    even, odd = tl.split(tl.reshape(q, (ROWS, COLS // 2, 2)))
    return ((even & 0xF) | ((odd & 0xF) << 4)).to(tl.int8)
