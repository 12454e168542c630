"""Torch bindings of the two custom ops' CUDA kernels, through the plugin library's C entry points.

The kernels live once, in plugins_trt/kernels (DESIGN.md: no second copy); the library that the
TensorRT plugins are built into also exports plain C functions (plugins_trt/api/freeActCApi.h),
and this module calls them with ctypes: data pointers of torch tensors, the current CUDA stream,
outputs allocated by torch. No torch headers, no build step at import.

The library links the CUDA runtime, so it loads on a machine without a GPU (the version check
runs there); only calling the kernels needs one. Inputs are checked here (device, dtype, shape,
contiguity) before anything is launched, so a bad call is a ValueError naming the tensor, and a
non-zero cudaError_t from a launcher becomes a KernelError naming the CUDA error.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from freeact_export.errors import UserError

C_API_VERSION = 1

# FloatType of the launcher header (plugins_trt/kernels/freeActKernels.h).
_FLOAT_TYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_QMAX = {4: 7, 8: 127}

# cudaError_t values a launcher can return, by name (CUDA runtime API, driver_types.h), so the
# message names the error even where torch has no CUDA runtime to ask (CPU builds).
CUDA_ERRORS = {
    1: "cudaErrorInvalidValue",
    2: "cudaErrorMemoryAllocation",
    3: "cudaErrorInitializationError",
    4: "cudaErrorCudartUnloading",
    9: "cudaErrorInvalidConfiguration",
    35: "cudaErrorInsufficientDriver",
    98: "cudaErrorInvalidDeviceFunction",
    100: "cudaErrorNoDevice",
    101: "cudaErrorInvalidDevice",
    200: "cudaErrorInvalidKernelImage",
    209: "cudaErrorNoKernelImageForDevice",
    222: "cudaErrorUnsupportedPtxVersion",
    400: "cudaErrorInvalidResourceHandle",
    700: "cudaErrorIllegalAddress",
    701: "cudaErrorLaunchOutOfResources",
    702: "cudaErrorLaunchTimeout",
    716: "cudaErrorMisalignedAddress",
    719: "cudaErrorLaunchFailure",
    801: "cudaErrorNotSupported",
    999: "cudaErrorUnknown",
}
# Errors that mean "this library was not built for this GPU / driver": the user can fix them.
_BUILD_ERRORS = {35, 98, 100, 200, 209, 222}


class KernelError(RuntimeError):
    """A kernel launcher returned a CUDA error."""

    def __init__(self, function: str, code: int, detail: str):
        self.function, self.code = function, code
        super().__init__(f"{function} failed with {cuda_error_text(code)} ({detail})")


def cuda_error_text(code: int) -> str:
    """'cudaErrorX (code): description' for a cudaError_t value; the description where torch can give it."""
    name = CUDA_ERRORS.get(code, "unknown cudaError_t")
    text = f"{name} ({code})"
    if torch.cuda.is_available():
        try:
            cudart = torch.cuda.cudart()
            text += f": {cudart.cudaGetErrorString(cudart.cudaError(code))}"
        except Exception:  # a code this torch's enum does not know: the name is enough
            pass
    return text


def load_library(path: str | None = None) -> ctypes.CDLL:
    """The plugin library with the C API's argument types declared (cached per path).

    Args:
        path: the shared library; default plugin_lib.library_path() (env FREEACT_PLUGIN_LIB, else
            plugins_trt/build/libfreeact_trt_plugins.so).

    Raises:
        UserError: the library is missing, cannot be loaded, lacks the C API, or has another
            C API version than this package (a stale build).
    """
    return _load(str(library_file(path)))


@functools.cache
def _load(path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)
    except OSError as err:
        raise UserError(f"cannot load the kernel library {path}: {err}") from None
    try:
        version_fn = lib.freeactCApiVersion
        quantize_fn = lib.freeactQuantize
        matmul_fn = lib.freeactInt4MatMul
    except AttributeError as err:
        raise UserError(f"{path} does not export the FreeAct C API ({err}); rebuild the plugin library") from None
    version_fn.argtypes, version_fn.restype = [], ctypes.c_int32
    version = version_fn()
    if version != C_API_VERSION:
        raise UserError(f"{path} has C API version {version}, this package needs {C_API_VERSION}; "
                        "rebuild the plugin library from this checkout")
    ptr, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
    # freeactQuantize(x, x_type, types, smooth, kron1, kron2, masks, clip, tokens, d, d1, d2, num_types,
    #                 kron_per_type, kronecker, bits, codes, scale, stream)
    quantize_fn.argtypes = [ptr, i32, ptr, ptr, ptr, ptr, ptr, ptr, i64, i32, i32, i32, i32, i32, i32, i32,
                            ptr, ptr, ptr]
    quantize_fn.restype = i32
    # freeactInt4MatMul(codes, scale, weight, weight_scale, bias, tokens, k, n, act_bits, group_size, y, y_type,
    #                   stream)
    matmul_fn.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i32, i32, i32, i32, ptr, i32, ptr]
    matmul_fn.restype = i32
    return lib


def library_version(path: str | None = None) -> int:
    """The C API version the library reports (load_library has already refused a mismatch)."""
    return int(load_library(path).freeactCApiVersion())


def _check(name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...], device: torch.device | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (got {type(t).__name__})")
    if t.device.type != "cuda":
        raise ValueError(f"{name} must be on a CUDA device (got {t.device})")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, the other inputs on {device}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must be {' or '.join(str(d).removeprefix('torch.') for d in dtypes)} "
                         f"(got {str(t.dtype).removeprefix('torch.')})")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _shape_error(name: str, t: torch.Tensor, expected: str) -> ValueError:
    return ValueError(f"{name} has shape {list(t.shape)}, expected {expected}")


def _stream(device: torch.device) -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p | None:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _raise_for(function: str, code: int, detail: str) -> None:
    if code == 0:
        return
    if code in _BUILD_ERRORS:
        arch = ""
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            arch = f" (this GPU is sm_{major}{minor})"
        raise UserError(f"{function} failed with {cuda_error_text(code)}: the kernel library was not built for "
                        f"this GPU or driver{arch}; rebuild it with this architecture in CUDA_ARCHITECTURES")
    raise KernelError(function, code, detail)


def freeact_quantize(x: torch.Tensor, types: torch.Tensor, smooth: torch.Tensor, kron_1: torch.Tensor,
                     kron_2: torch.Tensor, masks: torch.Tensor, clip: torch.Tensor, bits: int = 4,
                     kronecker: int = 1, library: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """FreeActQuantize (ops.schema) on CUDA tensors, on the current stream.

    Args:
        x: float32 / float16 / bfloat16 [..., d]; leading dims are tokens.
        types: int32 [...] (x's leading shape), each in [0, K).
        smooth: float32 [d]. kron_1 / kron_2: float32 [d1, d1] / [d2, d2] shared, or [K, d1, d1] /
            [K, d2, d2] one pair per type (d1 · d2 = d); ignored (any [1, 1]) when kronecker = 0.
        masks: float32 [K, d]. clip: float32 [K].
        bits: 4 (codes packed int8 [..., d/2], low nibble = even element) or 8 (int8 [..., d]).
        library: the plugin library (default: plugin_lib.library_path()).

    Returns:
        (codes, scale float32 [..., 1]).
    """
    if bits not in _QMAX or kronecker not in (0, 1):
        raise ValueError(f"FreeActQuantize: bits must be 4 or 8 and kronecker 0 or 1 (got {bits}, {kronecker})")
    _check("x", x, tuple(_FLOAT_TYPES))
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
    tokens = x.numel() // d if d else 0
    codes = torch.empty((*x.shape[:-1], d // 2 if bits == 4 else d), dtype=torch.int8, device=device)
    scale = torch.empty((*x.shape[:-1], 1), dtype=torch.float32, device=device)
    if tokens == 0:
        return codes, scale
    lib = load_library(library)
    with torch.cuda.device(device):
        code = lib.freeactQuantize(
            _ptr(x), _FLOAT_TYPES[x.dtype], _ptr(types), _ptr(smooth), _ptr(kron_1), _ptr(kron_2), _ptr(masks),
            _ptr(clip), tokens, d, d1, d2, num_types, int(per_type), kronecker, bits, _ptr(codes), _ptr(scale),
            _stream(device))
    _raise_for("freeactQuantize", code, f"tokens={tokens} d={d} d1={d1} d2={d2} K={num_types} "
               f"per_type={int(per_type)} kronecker={kronecker} bits={bits} x={str(x.dtype).removeprefix('torch.')}")
    return codes, scale


def int4_matmul(codes: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                bias: torch.Tensor | None, act_bits: int = 4, group_size: int = 0,
                out_dtype: torch.dtype = torch.float32, library: str | None = None) -> torch.Tensor:
    """Int4MatMul (ops.schema) on CUDA tensors, on the current stream.

    Args:
        codes: int8 [..., k/2] packed (act_bits 4) or [..., k] (act_bits 8), as freeact_quantize makes them.
        scale: float32 [..., 1].
        weight: packed INT4 int8 [n, k/2], low nibble = even input.
        weight_scale: float32 [n, G], G = 1 (group_size 0) or k / group_size.
        bias: float32 [n], or None for no bias.
        out_dtype: float32, float16 or bfloat16 (the schema's output is float32; the launcher may write
            a narrower type so the next layer reads it directly).

    Returns:
        y [..., n] in out_dtype.
    """
    if act_bits not in _QMAX or group_size < 0 or group_size % 2:
        raise ValueError(f"Int4MatMul: act_bits must be 4 or 8 and group_size 0 or a positive even number "
                         f"(got {act_bits}, {group_size})")
    if out_dtype not in _FLOAT_TYPES:
        raise ValueError(f"out_dtype must be float32, float16 or bfloat16 (got {out_dtype})")
    _check("codes", codes, (torch.int8,))
    device = codes.device
    _check("scale", scale, (torch.float32,), device)
    _check("weight", weight, (torch.int8,), device)
    _check("weight_scale", weight_scale, (torch.float32,), device)
    if bias is not None:
        _check("bias", bias, (torch.float32,), device)
    if weight.dim() != 2:
        raise _shape_error("weight", weight, "[n, k/2]")
    n, k = weight.shape[0], 2 * weight.shape[1]
    if codes.dim() < 1 or codes.shape[-1] != (k // 2 if act_bits == 4 else k):
        raise _shape_error("codes", codes, f"[..., {k // 2 if act_bits == 4 else k}] (k = {k}, act_bits {act_bits})")
    if tuple(scale.shape) != (*codes.shape[:-1], 1):
        raise _shape_error("scale", scale, f"{[*codes.shape[:-1], 1]}")
    if group_size and k % group_size:
        raise ValueError(f"group_size {group_size} does not divide k = {k}")
    groups = k // group_size if group_size else 1
    if tuple(weight_scale.shape) != (n, groups):
        raise _shape_error("weight_scale", weight_scale, f"[{n}, {groups}]")
    if bias is not None and tuple(bias.shape) != (n,):
        raise _shape_error("bias", bias, f"[{n}]")
    tokens = codes.numel() // codes.shape[-1] if codes.shape[-1] else 0
    y = torch.empty((*codes.shape[:-1], n), dtype=out_dtype, device=device)
    if tokens == 0 or n == 0:
        return y
    lib = load_library(library)
    with torch.cuda.device(device):
        code = lib.freeactInt4MatMul(
            _ptr(codes), _ptr(scale), _ptr(weight), _ptr(weight_scale), _ptr(bias), tokens, k, n, act_bits,
            group_size, _ptr(y), _FLOAT_TYPES[out_dtype], _stream(device))
    _raise_for("freeactInt4MatMul", code, f"tokens={tokens} k={k} n={n} act_bits={act_bits} "
               f"group_size={group_size} y={str(out_dtype).removeprefix('torch.')}")
    return y


def library_file(path: str | None = None) -> Path:
    """The library file the bindings use (for records)."""
    if path is not None:
        return Path(path)
    from freeact_export.runtime.plugin_lib import library_path

    return library_path()
