"""Tensors kept in files and mapped into memory, so that a big model's plan need not be resident.

A 7-8B model's INT4 codes, a byte each, are 7 GB. The layer-by-layer pipeline writes each layer's
codes to a file as soon as they are planned (`spill`), and the plan then holds read-only tensors
mapped from it: their pages are read when used and handed back (`release`) once a layer is done
with them. plan.safetensors is written one tensor at a time (`write_safetensors`, the format of
the safetensors package, which reads it back) and read back mapped the same way (`read_safetensors`).
"""

from __future__ import annotations

import json
import math
import mmap
import struct
import warnings
import weakref
from pathlib import Path

import torch

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_TORCH = {name: dtype for dtype, name in _DTYPES.items()}
_PAGE = mmap.PAGESIZE
_MAPPED: dict[int, tuple[mmap.mmap, int, int]] = {}  # a mapped tensor's data_ptr: (its mapping, offset, bytes)


def _view(mapping: mmap.mmap, dtype: torch.dtype, shape: list[int], offset: int) -> torch.Tensor:
    """A read-only tensor on the mapping's bytes from `offset`, known to release() while it lives."""
    count = math.prod(shape)
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    with warnings.catch_warnings():  # the mapping is read-only, and so is every use of these tensors
        warnings.simplefilter("ignore")
        tensor = torch.frombuffer(mapping, dtype=dtype, count=count, offset=offset).reshape(shape)
    _MAPPED[tensor.data_ptr()] = (mapping, offset, count * tensor.element_size())
    weakref.finalize(tensor, _MAPPED.pop, tensor.data_ptr(), None)
    return tensor


def _map(path: Path) -> mmap.mmap:
    with open(path, "rb") as f:  # the mapping outlives the file object
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def spill(tensors: list[torch.Tensor], path: Path) -> list[torch.Tensor]:
    """Write `tensors` into a new file at `path`; the same values, mapped from it."""
    offsets, at = [], 0
    with open(path, "wb") as f:
        for t in tensors:
            t = t.contiguous()
            offsets.append(at)
            f.write(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
            at += t.numel() * t.element_size()
    if at == 0:
        return [t.clone() for t in tensors]
    mapping = _map(path)
    return [_view(mapping, t.dtype, list(t.shape), o) for t, o in zip(tensors, offsets, strict=True)]


def release(tensors: list[torch.Tensor]) -> None:
    """Hand the pages of mapped tensors back (they are read again from the file if used again); tensors
    held in memory are left alone."""
    for t in tensors:
        entry = _MAPPED.get(t.data_ptr()) if t is not None and t.numel() else None
        if entry is None:
            continue
        mapping, offset, size = entry
        start = offset - offset % _PAGE
        stop = min(len(mapping), -(-(offset + size) // _PAGE) * _PAGE)
        mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save as save_file does, one tensor at a time (mapped ones released once written): wider types first,
    so that every tensor stays aligned to its element size, then by name, so that the bytes do not depend
    on the dict's order."""
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header, at = {}, 0
    for name in order:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + size]}
        at += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in order:
            t = tensors[name].contiguous()
            f.write((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
            release([tensors[name]])


def read_safetensors(path: Path, mapped: set[str] | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors: those named in `mapped` mapped from the file, the others read."""
    mapping = _map(path)
    (length,) = struct.unpack("<Q", mapping[:8])
    header = json.loads(mapping[8:8 + length])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, _ = info["data_offsets"]
        view = _view(mapping, _TORCH[info["dtype"]], info["shape"], 8 + length + begin)
        if mapped is None or name not in mapped:
            out[name] = view.clone()
            release([view])
        else:
            out[name] = view
    return out
