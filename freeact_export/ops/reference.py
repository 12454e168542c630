"""NumPy reference of the two custom ops, and their registration as ONNX Runtime custom ops.

The functions follow `schema` exactly and are what every kernel is compared against:
FreeActQuantize matches `freeact_export.quantize.quantizers.quantize` code for code (same float32
division, same round-half-to-even), the pack helpers match `freeact_export.quantize.packing` byte
for byte. ORT runs them through onnxruntime-extensions Python ops (CPU, for parity and tests, not
for speed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from freeact_export.ops.schema import FREEACT_QUANTIZE, INT4_MATMUL, OpSchema

if TYPE_CHECKING:
    import onnxruntime

_QMAX = {4: 7, 8: 127}


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """int codes in [-8, 7] or [0, 15] [..., K], K even → uint8 [..., K/2], low nibble = even k."""
    if codes.shape[-1] % 2:
        raise ValueError(f"INT4 packing needs an even last dimension (got {codes.shape[-1]})")
    if codes.size and (codes.min() < -8 or codes.max() > 15):
        raise ValueError("INT4 codes must lie in [-8, 7] (signed) or [0, 15] (unsigned)")
    nibbles = codes.astype(np.int16) & 0xF
    return (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, signed: bool = True) -> np.ndarray:
    """uint8 or int8 (same bytes) [..., K/2] → int8 codes [..., K]; inverse of pack_int4."""
    wide = packed.view(np.uint8).astype(np.int16)
    nibbles = np.stack([wide & 0xF, wide >> 4], axis=-1).reshape(*packed.shape[:-1], -1)
    if signed:
        nibbles = nibbles - ((nibbles & 0x8) << 1)  # sign-extend bit 3
    return nibbles.astype(np.int8)


def kron_apply(x: np.ndarray, kron_1: np.ndarray, kron_2: np.ndarray) -> np.ndarray:
    """x (A ⊗ B) over the last dim as vec(Aᵀ X B), X = x viewed row-major [d1, d2] (transforms.apply.kron_apply)."""
    grid = x.reshape(*x.shape[:-1], kron_1.shape[0], kron_2.shape[0])
    return np.matmul(kron_1.T, np.matmul(grid, kron_2)).reshape(x.shape)


def freeact_transform(x: np.ndarray, types: np.ndarray, smooth: np.ndarray, kron_1: np.ndarray,
                      kron_2: np.ndarray, masks: np.ndarray, kronecker: int = 1) -> np.ndarray:
    """y = ((x / smooth) (kron_1[t] ⊗ kron_2[t])) ⊙ masks[t] in float32: FreeActQuantize before rounding."""
    d = x.shape[-1]
    if types.shape != x.shape[:-1]:
        raise ValueError(f"types {types.shape} must have the leading shape of x {x.shape}")
    if smooth.shape != (d,) or masks.ndim != 2 or masks.shape[1] != d:
        raise ValueError(f"smooth {smooth.shape} must be [{d}] and masks {masks.shape} [K, {d}]")
    if types.size and (types.min() < 0 or types.max() >= masks.shape[0]):
        raise ValueError(f"token types must lie in [0, {masks.shape[0]})")
    y = x.astype(np.float32) / smooth.astype(np.float32)
    if kronecker:
        if kron_1.shape[-1] * kron_2.shape[-1] != d or kron_1.ndim != kron_2.ndim:
            raise ValueError(f"kron_1 {kron_1.shape} ⊗ kron_2 {kron_2.shape} does not act on d = {d}")
        if kron_1.ndim == 2:  # one pair shared by every type
            y = kron_apply(y, kron_1.astype(np.float32), kron_2.astype(np.float32))
        else:  # one pair per type: each token takes its type's pair
            if kron_1.shape[0] != masks.shape[0] or kron_2.shape[0] != masks.shape[0]:
                raise ValueError(f"per-type kron_1 {kron_1.shape} / kron_2 {kron_2.shape} need one pair per "
                                 f"type ({masks.shape[0]})")
            per_type = np.stack([kron_apply(y, kron_1[t].astype(np.float32), kron_2[t].astype(np.float32))
                                 for t in range(masks.shape[0])])
            y = np.take_along_axis(per_type, types[None, ..., None].astype(np.int64), axis=0)[0]
    return y * masks.astype(np.float32)[types]


def freeact_quantize(x: np.ndarray, types: np.ndarray, smooth: np.ndarray, kron_1: np.ndarray, kron_2: np.ndarray,
                     masks: np.ndarray, clip: np.ndarray, bits: int = 4, kronecker: int = 1,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """FreeActQuantize: (codes int8 [..., d/2] packed (bits 4) or [..., d] (bits 8), scale float32 [..., 1])."""
    _check_attr(FREEACT_QUANTIZE, bits=bits, kronecker=kronecker)
    y = freeact_transform(x, types, smooth, kron_1, kron_2, masks, kronecker)
    qmax = _QMAX[bits]
    # Same float32 operations, in the same order, as quantizers._scale_zero / _codes.
    absmax = np.abs(y).max(axis=-1, keepdims=True) * clip.astype(np.float32)[types][..., None]
    scale = np.where(absmax > 0, absmax / np.float32(qmax), np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(y / scale), -qmax - 1, qmax).astype(np.int8)
    if bits == 4:
        codes = pack_int4(codes).view(np.int8)
    return codes, scale


def int4_matmul(codes: np.ndarray, scale: np.ndarray, weight: np.ndarray, weight_scale: np.ndarray,
                bias: np.ndarray, act_bits: int = 4, group_size: int = 0) -> np.ndarray:
    """Int4MatMul: y float32 [..., n] = scale · Σ_g weight_scale[:, g] · (integer dot of group g) + bias."""
    _check_attr(INT4_MATMUL, act_bits=act_bits, group_size=group_size)
    acts = unpack_int4(codes) if act_bits == 4 else codes.astype(np.int8)
    w = unpack_int4(weight)
    n, d = w.shape
    groups = 1 if group_size == 0 else d // group_size
    if acts.shape[-1] != d or (group_size and d % group_size):
        raise ValueError(f"activations [..., {acts.shape[-1]}] and weight [{n}, {d}] / group_size {group_size} differ")
    if weight_scale.shape != (n, groups) or bias.shape != (n,) or scale.shape != (*acts.shape[:-1], 1):
        raise ValueError(f"weight_scale {weight_scale.shape} must be [{n}, {groups}], bias {bias.shape} [{n}], "
                         f"scale {scale.shape} [..., 1]")
    # Integer dot products in float64: every partial sum is an integer below 2^53 (|a w| <= 1024 per term),
    # so BLAS gives the exact int32 result the kernels compute.
    a = acts.reshape(-1, groups, d // groups).astype(np.float64).transpose(1, 0, 2)
    b = w.reshape(n, groups, d // groups).astype(np.float64).transpose(1, 2, 0)
    dots = np.matmul(a, b)  # [G, tokens, n]
    y = np.einsum("gtn,ng->tn", dots, weight_scale.astype(np.float64))
    y = y * scale.reshape(-1, 1).astype(np.float64) + bias.astype(np.float64)
    return y.astype(np.float32).reshape(*acts.shape[:-1], n)


def _check_attr(schema: OpSchema, **values: int) -> None:
    for spec in schema.attributes:
        problem = spec.problem(values[spec.name])
        if problem:
            raise ValueError(f"{schema.name}: {problem}")


_registered = False


def register() -> None:
    """Register both ops with onnxruntime-extensions (idempotent; the library keeps one global registry).

    Only float32 x runs under ORT: onnxruntime-extensions 0.15 aborts the process on float16 inputs
    to Python ops, so x is declared float32 and a float16 x is rejected when the session is made.
    Only the op's own attributes are declared: ORT passes declared attributes, a declared one
    missing from the node fails the session, and undeclared ones (plugin_version, plugin_namespace)
    are ignored.
    """
    global _registered
    if _registered:
        return
    # Imported here so the NumPy reference needs no native library.
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    def dtype_code(name: str) -> int:
        return {"float32": PyCustomOpDef.dt_float, "int32": PyCustomOpDef.dt_int32,
                "int8": PyCustomOpDef.dt_int8}[name]

    attr_codes = {"int": PyCustomOpDef.dt_int64, "string": PyCustomOpDef.dt_string}

    def declare(schema: OpSchema, body) -> None:
        onnx_op(op_type=schema.name,
                inputs=[dtype_code(t.dtypes[0]) for t in schema.inputs],
                outputs=[dtype_code(t.dtypes[0]) for t in schema.outputs],
                attrs={a.name: attr_codes[a.type] for a in schema.attributes})(body)

    declare(FREEACT_QUANTIZE, freeact_quantize)
    declare(INT4_MATMUL, int4_matmul)
    _registered = True


def session_options() -> onnxruntime.SessionOptions:
    """onnxruntime.SessionOptions that run graphs holding our nodes (ops registered, library loaded)."""
    import onnxruntime
    from onnxruntime_extensions import get_library_path

    register()
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options
