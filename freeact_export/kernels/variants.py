"""Kernel variants: the tile configuration for each shape bucket, and the bodies made into Triton kernels.

One table serves the torch runtime (launch.py, JIT on a GPU or the interpreter on the CPU) and
the ahead-of-time build of the TensorRT plugins (aot.py compiles exactly these variants), so a
shape runs with the same tiles whichever path takes it. docs/kernels.md explains the choices.
"""

from __future__ import annotations

import dataclasses
import functools

from freeact_export.kernels.matmul_kernels import int4_matmul_body, splitk_reduce_body
from freeact_export.kernels.quantize_kernels import quantize_kron_body, quantize_plain_body


@dataclasses.dataclass(frozen=True)
class MatmulTile:
    """Int4MatMul's tiles for token counts up to max_tokens (None: any); split_k: decode streams K in slices."""

    name: str
    max_tokens: int | None
    bm: int
    bn: int
    bk: int
    num_warps: int
    num_stages: int
    split_k: bool


# Decode (1–16 tokens) is bound by streaming the packed weights: narrow column tiles and K split
# into slices so that enough programs run to fill the GPU; prefill is bound by the integer dot:
# the largest tiles (INT8 `wgmma` on sm_90 wants 64-row multiples).
MATMUL_TILES = (
    MatmulTile("decode", 16, bm=16, bn=64, bk=256, num_warps=4, num_stages=4, split_k=True),
    MatmulTile("medium", 128, bm=64, bn=128, bk=128, num_warps=4, num_stages=3, split_k=False),
    MatmulTile("prefill", None, bm=128, bn=128, bk=128, num_warps=8, num_stages=3, split_k=False),
)
# No fused multiply-add contraction beyond the dots' own: every product and sum rounds as written, on
# every Triton version (3.9 fuses by default, 3.10 will not), in the JIT and the AOT build alike.
COMPILE_OPTIONS = {"enable_fp_fusion": False}
REDUCE_BN = 256
REDUCE_WARPS = 4
# Split-K: aim for this many programs per streaming multiprocessor, in slices of at least MIN_SPLIT_K of K.
SPLIT_TARGET_PER_SM = 2
MIN_SPLIT_K = 512

# FreeActQuantize with a Kronecker transform: the token's [d1, d2] view padded to a power-of-two tile
# (at least 16, tl.dot's smallest). d1 <= d2 (quantize.freeact.kron_dims), so these pairs cover
# every d with d2 <= 128 (d up to 16384); num_warps grows with the tile.
KRON_TILES = ((16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128))
PLAIN_CHUNK = 1024


def kron_tile(d1: int, d2: int) -> tuple[int, int] | None:
    """The smallest KRON_TILES entry holding [d1, d2], or None."""
    for tile in KRON_TILES:
        if d1 <= tile[0] and d2 <= tile[1]:
            return tile
    return None


def kron_warps(tile: tuple[int, int]) -> int:
    return 4 if tile[0] * tile[1] <= 64 * 64 else 8


def matmul_tile(tokens: int) -> MatmulTile:
    """The bucket of a token count."""
    return next(t for t in MATMUL_TILES if t.max_tokens is None or tokens <= t.max_tokens)


def split_plan(tile: MatmulTile, n: int, k: int, group_size: int, multiprocessors: int) -> tuple[int, int, int, int]:
    """(seg_len, segs, segs_per_split, ws_seg_div) for the K walk; one split unless tile.split_k.

    Grouped weights split at group boundaries; per-channel ones into slices of K that are
    multiples of the tile's bk, so no slice boundary cuts a tile or a packed byte.
    """
    wanted = max(1, SPLIT_TARGET_PER_SM * multiprocessors // _ceil(n, tile.bn)) if tile.split_k else 1
    if group_size:
        segs = k // group_size
        per_split = max(_ceil(segs, wanted), _ceil(MIN_SPLIT_K, group_size)) if wanted > 1 else segs
        return group_size, segs, min(per_split, segs), 1
    slices = min(wanted, max(1, k // MIN_SPLIT_K))
    seg_len = _ceil(_ceil(k, slices), tile.bk) * tile.bk if slices > 1 else k
    segs = _ceil(k, seg_len)
    return seg_len, segs, 1, segs


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@functools.cache
def kernels(interpret: bool) -> dict[str, object]:
    """The four kernels, as Triton JIT functions or (interpret) run by Triton's interpreter on the CPU."""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction as make
    else:
        from triton.runtime.jit import JITFunction as make
    return {name: make(body) for name, body in BODIES.items()}


BODIES = {
    "quantize_kron": quantize_kron_body,
    "quantize_plain": quantize_plain_body,
    "int4_matmul": int4_matmul_body,
    "splitk_reduce": splitk_reduce_body,
}
