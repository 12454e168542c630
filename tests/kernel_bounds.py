"""Reference values and error bounds for the kernels of both ops (tests/unit/test_triton_kernels.py, tests/gpu).

FreeActQuantize's codes may differ from the reference only at a rounding tie that float summation
order can decide: the transform is a pair of fp32 dot products, and any summation order of Aᵀ V B
lies within γ_{d1+d2} (|A|ᵀ |V| |B|) of the exact value (γ_n = n u / (1 - n u), u = 2⁻²⁴:
Higham, Accuracy and Stability of Numerical Algorithms, §3.5), so two orders lie within twice that
of each other. A code may differ by one step only where the exact value divided by the scale lies
within that much (in code steps) of a rounding boundary. Int4MatMul's float outputs lie within the
bound of an fp32 sum of its few scaled terms. Both bounds are derived here, in float64, from the
inputs, not tuned to any result.
"""

from __future__ import annotations

import numpy as np
import torch

from freeact_export.kernels import variants
from freeact_export.ops import reference

U = 2.0**-24  # unit roundoff of float32


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def quantize_inputs(tokens, d1, d2, num_types, per_type, rng):
    d = d1 * d2
    x = (rng.standard_normal((tokens, d)) * rng.uniform(0.1, 10, (tokens, 1))).astype(np.float32)
    x[:, rng.integers(0, d)] *= 30  # an outlier channel, as real activations have
    types = rng.integers(0, num_types, tokens).astype(np.int32)
    smooth = rng.uniform(0.3, 3, d).astype(np.float32) * rng.choice([-1, 1], d).astype(np.float32)
    shape = (num_types,) if per_type else ()
    k1 = (rng.standard_normal((*shape, d1, d1)) / np.sqrt(d1)).astype(np.float32)
    k2 = (rng.standard_normal((*shape, d2, d2)) / np.sqrt(d2)).astype(np.float32)
    masks = np.ones((num_types, d), np.float32)
    if num_types > 1:
        masks[1:, rng.choice(d, d // 8, replace=False)] = 0
    clip = rng.uniform(0.7, 1.0, num_types).astype(np.float32)
    return x, types, smooth, k1, k2, masks, clip


def exact_transform(x, types, smooth, k1, k2, masks, kronecker):
    """(y exact in float64 from the float32 inputs, the bound on |y_a - y_b| of any two fp32 summation orders)."""
    v = (x.astype(np.float32) / smooth).astype(np.float64)  # both sides divide in float32, correctly rounded
    m = masks.astype(np.float64)[types]
    if not kronecker:
        return v * m, np.zeros_like(v)
    d1, d2 = k1.shape[-1], k2.shape[-1]
    a = k1.astype(np.float64) if k1.ndim == 3 else np.broadcast_to(k1, (1, d1, d1)).astype(np.float64)
    b = k2.astype(np.float64) if k2.ndim == 3 else np.broadcast_to(k2, (1, d2, d2)).astype(np.float64)
    pick = types if k1.ndim == 3 else np.zeros_like(types)
    grid = v.reshape(-1, d1, d2)
    y = np.einsum("tji,tjk,tkl->til", a[pick], grid, b[pick]).reshape(v.shape)
    size = np.einsum("tji,tjk,tkl->til", np.abs(a[pick]), np.abs(grid), np.abs(b[pick])).reshape(v.shape)
    return y * m, 2 * gamma(d1 + d2) * size * m


def _codes(packed: np.ndarray, bits: int) -> np.ndarray:
    return reference.unpack_int4(packed) if bits == 4 else packed


def assert_quantize_matches(got, inputs, bits, kronecker):
    x, types, smooth, k1, k2, masks, clip = inputs
    codes, scale = (g.numpy() for g in got)
    ref_codes, ref_scale = reference.freeact_quantize(x.astype(np.float32), types, smooth, k1, k2, masks, clip, bits,
                                                      kronecker)
    assert codes.shape == ref_codes.shape and scale.shape == ref_scale.shape
    y, room = exact_transform(x, types, smooth, k1, k2, masks, kronecker)
    qmax = 7 if bits == 4 else 127
    # The scale: amax moves by at most the transform bound; clip · amax / qmax adds two roundings each side.
    amax_room = (room.max(axis=1, keepdims=True) * clip[types][:, None] / qmax).astype(np.float64)
    scale_room = amax_room + 4 * U * ref_scale
    assert np.all(np.abs(scale.astype(np.float64) - ref_scale) <= scale_room)
    got_q, ref_q = _codes(codes, bits).astype(np.int64), _codes(ref_codes, bits).astype(np.int64)
    differ = got_q != ref_q
    assert np.all(np.abs(got_q - ref_q)[differ] == 1), "codes differ by more than one step"
    if differ.any():
        rows, cols = np.nonzero(differ)
        s = ref_scale[rows, 0].astype(np.float64)
        t = y[rows, cols] / s  # the exact value, in code steps
        boundary = (got_q[differ] + ref_q[differ]) / 2  # the half-integer between the two codes
        allowed = room[rows, cols] / s + np.abs(t) * (scale_room[rows, 0] / s + 2 * U)
        assert np.all(np.abs(t - boundary) <= allowed), "a code differs away from a rounding tie"
    return int(differ.sum())


def matmul_inputs(tokens, k, n, act_bits, group_size, rng):
    groups = k // group_size if group_size else 1
    w = rng.integers(-8, 8, (n, k)).astype(np.int8)
    if act_bits == 16:
        a = (rng.standard_normal((tokens, k)) * 3).astype(np.float32)
        codes, scale = a, None
    else:
        qmax = 7 if act_bits == 4 else 127
        a = rng.integers(-qmax - 1, qmax + 1, (tokens, k)).astype(np.int8)
        codes = reference.pack_int4(a).view(np.int8) if act_bits == 4 else a
        scale = rng.uniform(0.01, 2, (tokens, 1)).astype(np.float32)
    # signed scales: the full INT4 code range (ONNX Runtime's rule) gives the sign opposite the extreme's
    ws = (rng.uniform(0.001, 0.1, (n, groups)) * rng.choice([-1, 1], (n, groups))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return a, codes, scale, w, reference.pack_int4(w).view(np.int8), ws, bias


def matmul_reference(a, scale, w, ws, bias, group_size):
    """(y in float64, the bound on an fp32 evaluation's error): the per-segment dots are exact integers."""
    n, k = w.shape
    groups = ws.shape[1]
    seg = k // groups
    dots = np.einsum("tgk,ngk->tng", a.astype(np.float64).reshape(len(a), groups, seg),
                     w.astype(np.float64).reshape(n, groups, seg))  # exact: integers (or float64 sums of them)
    terms = dots * ws.astype(np.float64)[None]
    s = np.ones((len(a), 1)) if scale is None else scale.astype(np.float64)
    y = terms.sum(axis=2) * s + bias.astype(np.float64)
    # fp32 evaluation: every product and sum of at most (k + groups + split slices) terms, then scale and bias.
    # For integer activations each group's dot is exact, so k drops out; the slices of a per-channel split
    # add at most k / MIN_SPLIT_K terms.
    steps = groups + k // variants.MIN_SPLIT_K + 3 + (k if scale is None else 0)
    weights = np.abs(w) * np.repeat(np.abs(ws), seg, axis=1)
    size = (np.abs(a).astype(np.float64) @ weights.T.astype(np.float64)) * np.abs(s)
    return y, gamma(steps) * (size + np.abs(bias)) + U * np.abs(y)


def check_real_layers(path, device: torch.device) -> int:
    """Both kernels on the layers tools/real_layers.py saved, against the reference; returns how many layers."""
    from freeact_export.kernels import launch

    saved = np.load(path)
    names = sorted({key.rsplit("/", 1)[0] for key in saved.files})
    for name in names:
        get = lambda key, name=name: saved[f"{name}/{key}"]  # noqa: E731
        on = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        inputs = [get(k) for k in ("x", "types", "smooth", "kron_1", "kron_2", "masks", "clip")]
        bits, kronecker, group = (int(get(k)) for k in ("bits", "kronecker", "group_size"))
        codes, scale = launch.freeact_quantize(*(on(a) for a in inputs), bits, kronecker)
        assert_quantize_matches((codes.cpu(), scale.cpu()), inputs, bits, kronecker)
        # Int4MatMul on the reference's codes: the layer's output within fp32 rounding of the exact one
        ref_codes, ref_scale = reference.freeact_quantize(*inputs, bits, kronecker)
        a = reference.unpack_int4(ref_codes) if bits == 4 else ref_codes
        y = launch.int4_matmul(on(ref_codes), on(ref_scale), on(get("weight")), on(get("weight_scale")),
                               on(get("bias")), bits, group)
        exact, bound = matmul_reference(a, ref_scale, reference.unpack_int4(get("weight")), get("weight_scale"),
                                        get("bias"), group)
        err = np.abs(y.cpu().numpy().astype(np.float64) - exact)
        assert (err <= bound).all(), f"{name}: max error {err.max():.3g}"
    return len(names)
