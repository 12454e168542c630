"""INT4 packing reference: the byte layout every graph initializer and kernel input uses.

packed: uint8 [..., K/2]; byte i holds element 2i in its low nibble and element 2i+1 in its
high nibble. Signed codes are stored as 4-bit two's complement (-8..7 → 0x8..0x7), unsigned
codes (asymmetric, 0..15) as they are. This equals ONNX's INT4/UINT4 tensor layout.
"""

from __future__ import annotations

import torch


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-8, 7] or [0, 15], last dim even → uint8 [..., K/2]."""
    if codes.shape[-1] % 2:
        raise ValueError(f"INT4 packing needs an even last dimension (got {codes.shape[-1]})")
    if codes.min() < -8 or codes.max() > 15:
        raise ValueError("INT4 codes must lie in [-8, 7] (signed) or [0, 15] (unsigned)")
    nibbles = codes.to(torch.int16) & 0xF
    low, high = nibbles[..., 0::2], nibbles[..., 1::2]
    return (low | (high << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """uint8 [..., K/2] → int8 codes [..., K]; inverse of pack_int4."""
    wide = packed.to(torch.int16)
    nibbles = torch.stack([wide & 0xF, wide >> 4], dim=-1).reshape(*packed.shape[:-1], -1)
    if signed:
        nibbles = nibbles - ((nibbles & 0x8) << 1)  # sign-extend bit 3
    return nibbles.to(torch.int8)
