"""The Triton kernels of both ops against the NumPy reference (ops/reference.py), in Triton's interpreter.

The interpreter runs the very kernel bodies the GPU runs (and the plugins' cubins are compiled
from), on shapes that reach every branch: token counts 1, 2–8, 16, 17 and 129 (decode with and
without split-K, the medium and the prefill tile), k and n that are not multiples of any block,
groups that are and are not multiples of the K block, every type rule (shared and per-type
factors, masks, clip), INT4 and INT8 activations, W4A16, float32 / float16 / bfloat16.

Integer results must be exact. FreeActQuantize's codes may differ from the reference only at a
rounding tie that float summation order can decide: the transform is a pair of fp32 dot
products, and any summation order of Aᵀ V B lies within γ_{d1+d2} (|A|ᵀ |V| |B|) of the exact
value (γ_n = n u / (1 - n u), u = 2⁻²⁴: Higham, Accuracy and Stability of Numerical Algorithms,
§3.5), so two orders lie within twice that of each other. A code may differ by one step only
where the exact value divided by the scale lies within that much (in code steps) of a rounding
boundary. Int4MatMul's float outputs lie within the bound of an fp32 sum of its few scaled terms.
Both bounds are derived below, in float64, from the inputs, not tuned to the results.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freeact_export.kernels import launch, variants
from freeact_export.ops import reference

pytestmark = pytest.mark.skipif(not launch.interpreter_active(),
                                reason="these tests run the kernels in Triton's interpreter (TRITON_INTERPRET=1)")

U = 2.0**-24  # unit roundoff of float32


def _gamma(n: int) -> float:
    return n * U / (1 - n * U)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# ---------------------------------------------------------------- FreeActQuantize

def _quantize_inputs(tokens, d1, d2, num_types, per_type, rng):
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


def _exact_transform(x, types, smooth, k1, k2, masks, kronecker):
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
    return y * m, 2 * _gamma(d1 + d2) * size * m


def _codes(packed: np.ndarray, bits: int) -> np.ndarray:
    return reference.unpack_int4(packed) if bits == 4 else packed


def _assert_quantize_matches(got, inputs, bits, kronecker):
    x, types, smooth, k1, k2, masks, clip = inputs
    codes, scale = (g.numpy() for g in got)
    ref_codes, ref_scale = reference.freeact_quantize(x.astype(np.float32), types, smooth, k1, k2, masks, clip, bits,
                                                      kronecker)
    assert codes.shape == ref_codes.shape and scale.shape == ref_scale.shape
    y, room = _exact_transform(x, types, smooth, k1, k2, masks, kronecker)
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


QUANTIZE_CASES = [  # (tokens, d1, d2, types, per-type factors, bits, x dtype)
    (1, 4, 8, 1, False, 4, torch.float32),        # tile 16 x 16, one row chunk
    (5, 24, 24, 2, False, 8, torch.float32),      # tile 32 x 32, two row chunks (the second partial)
    (17, 12, 40, 3, True, 4, torch.float16),      # tile 32 x 64, per-type factors, float16 x
    (129, 16, 32, 2, True, 8, torch.bfloat16),    # tile 16 x 32, exactly one chunk, bfloat16 x
    (8, 48, 96, 2, False, 4, torch.float32),      # tile 64 x 128
]


@pytest.mark.parametrize(("tokens", "d1", "d2", "num_types", "per_type", "bits", "dtype"), QUANTIZE_CASES)
def test_freeact_quantize_kronecker_equals_the_reference(tokens, d1, d2, num_types, per_type, bits, dtype):
    rng = np.random.default_rng(tokens * 1000 + d1)
    inputs = list(_quantize_inputs(tokens, d1, d2, num_types, per_type, rng))
    inputs[0] = torch.from_numpy(inputs[0]).to(dtype).float().numpy()  # the values x really has
    x = _t(inputs[0]).to(dtype)
    got = launch.freeact_quantize(x, *(_t(a) for a in inputs[1:]), bits=bits, kronecker=1)
    _assert_quantize_matches(got, inputs, bits, kronecker=1)


def test_freeact_quantize_on_the_largest_tile():
    """d = 14336 = 112 x 128 (Llama-3-8B's MLP width): tile 128 x 128, seven row chunks."""
    rng = np.random.default_rng(7)
    inputs = _quantize_inputs(3, 112, 128, 2, True, rng)
    got = launch.freeact_quantize(*(_t(a) for a in inputs), bits=4, kronecker=1)
    _assert_quantize_matches(got, inputs, 4, kronecker=1)


@pytest.mark.parametrize(("tokens", "d", "bits"), [(1, 24, 4), (6, 1100, 8), (17, 2048, 4)])
def test_freeact_quantize_without_transform_is_exact(tokens, d, bits):
    """kronecker = 0: no sums at all, so the codes and scales equal the reference exactly (chunks of 1024, partial)."""
    rng = np.random.default_rng(d)
    x, types, smooth, _, _, masks, clip = _quantize_inputs(tokens, 1, d, 2, False, rng)
    one = np.ones((1, 1), np.float32)
    codes, scale = launch.freeact_quantize(*(_t(a) for a in (x, types, smooth, one, one, masks, clip)), bits=bits,
                                           kronecker=0)
    ref_codes, ref_scale = reference.freeact_quantize(x, types, smooth, one, one, masks, clip, bits, 0)
    np.testing.assert_array_equal(codes.numpy(), ref_codes)
    np.testing.assert_array_equal(scale.numpy(), ref_scale)


def test_ties_are_rare_and_the_bound_is_not_vacuous():
    """The tie allowance admits few codes: over 400 tokens, fewer than 1 in 1,000 codes differ."""
    rng = np.random.default_rng(3)
    inputs = _quantize_inputs(400, 24, 24, 2, True, rng)
    got = launch.freeact_quantize(*(_t(a) for a in inputs), bits=4, kronecker=1)
    differ = _assert_quantize_matches(got, inputs, 4, kronecker=1)
    assert differ < 400 * 576 / 1000


def test_a_wrong_code_fails_the_tie_check():
    """The comparison itself catches a code off by one away from a tie (it is not vacuous)."""
    rng = np.random.default_rng(4)
    inputs = _quantize_inputs(4, 4, 8, 1, False, rng)
    codes, scale = launch.freeact_quantize(*(_t(a) for a in inputs), bits=8, kronecker=1)
    ref_codes, _ = reference.freeact_quantize(*inputs, 8, 1)
    k = int(np.argmax(np.abs(ref_codes[0]) < 100))  # a code that can move without clamping
    codes[0, k] += 1
    with pytest.raises(AssertionError, match="away from a rounding tie"):
        _assert_quantize_matches((codes, scale), inputs, 8, kronecker=1)


def test_shapes_without_a_tile_are_refused_in_one_line():
    from freeact_export.errors import UserError

    rng = np.random.default_rng(0)
    big = _quantize_inputs(1, 2, 130, 1, False, rng)
    with pytest.raises(UserError, match="no kernel tile for Kronecker factors 2 x 130"):
        launch.freeact_quantize(*(_t(a) for a in big), bits=4)
    odd = _quantize_inputs(1, 10, 15, 1, False, rng)
    with pytest.raises(UserError, match="must be even"):
        launch.freeact_quantize(*(_t(a) for a in odd), bits=4)
    codes, _ = launch.freeact_quantize(*(_t(a) for a in odd), bits=8)  # INT8 codes need no pairs
    assert codes.shape == (1, 150)


# ---------------------------------------------------------------- Int4MatMul

def _matmul_inputs(tokens, k, n, act_bits, group_size, rng):
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
    ws = rng.uniform(0.001, 0.1, (n, groups)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    return a, codes, scale, w, reference.pack_int4(w).view(np.int8), ws, bias


def _matmul_reference(a, scale, w, ws, bias, group_size):
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
    size = (np.abs(a).astype(np.float64) @ (np.abs(w) * np.repeat(ws, seg, axis=1)).T.astype(np.float64)) * np.abs(s)
    return y, _gamma(steps) * (size + np.abs(bias)) + U * np.abs(y)


MATMUL_CASES = [  # (tokens, k, n, act_bits, group_size, bias, out dtype)
    (1, 2048, 40, 4, 0, True, torch.float32),      # decode, per-channel split-K (two slices)
    (5, 2048, 50, 8, 64, True, torch.float32),     # decode, grouped split-K (four splits)
    (16, 200, 70, 4, 0, False, torch.float16),     # decode edge, one split, k and n off every block
    (3, 96, 33, 8, 32, True, torch.bfloat16),      # groups smaller than the K block
    (17, 1100, 70, 4, 100, True, torch.float32),   # medium tile, groups that do not divide the K block
    (129, 160, 33, 8, 2, False, torch.float32),    # prefill tile, two-element groups
    (7, 640, 24, 16, 128, True, torch.float32),    # W4A16, float32 activations
    (20, 256, 40, 16, 0, False, torch.float16),    # W4A16, float16 activations, per channel
]


@pytest.mark.parametrize(("tokens", "k", "n", "act_bits", "group_size", "bias", "out_dtype"), MATMUL_CASES)
def test_int4_matmul_equals_the_reference(tokens, k, n, act_bits, group_size, bias, out_dtype):
    rng = np.random.default_rng(tokens * 31 + k)
    a, codes, scale, w, packed, ws, b = _matmul_inputs(tokens, k, n, act_bits, group_size, rng)
    activations = _t(codes).to(out_dtype) if act_bits == 16 else _t(codes)
    if act_bits == 16:
        a = activations.float().numpy()
    y = launch.int4_matmul(activations, None if scale is None else _t(scale), _t(packed), _t(ws),
                           _t(b) if bias else None, act_bits, group_size, out_dtype)
    assert y.dtype == out_dtype and y.shape == (tokens, n)
    exact, bound = _matmul_reference(a, scale, w, ws, b if bias else np.zeros(n, np.float32), group_size)
    if out_dtype != torch.float32:  # the final rounding to the narrower type
        bound = bound + float(torch.finfo(out_dtype).eps) * np.abs(exact)
    assert np.all(np.abs(y.double().numpy() - exact) <= bound)
    if act_bits != 16 and out_dtype == torch.float32:  # and the schema's own reference, to float32 rounding
        ref = reference.int4_matmul(codes, scale, packed, ws, b if bias else np.zeros(n, np.float32), act_bits,
                                    group_size)
        np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=float(bound.max()) + float(np.abs(ref).max()) * U)


@pytest.mark.parametrize(("tokens", "k", "n", "act_bits", "group_size"),
                         [(1, 2048, 40, 4, 0), (9, 1024, 65, 8, 0), (40, 320, 130, 4, 64), (129, 96, 20, 8, 0)])
def test_int4_matmul_integer_dots_are_exact(tokens, k, n, act_bits, group_size):
    """Unit scales, no bias: every output is an integer below 2^24, so the kernel must equal it exactly."""
    rng = np.random.default_rng(k + n)
    a, codes, _, w, packed, ws, _ = _matmul_inputs(tokens, k, n, act_bits, group_size, rng)
    ones = np.ones((tokens, 1), np.float32)
    y = launch.int4_matmul(_t(codes), _t(ones), _t(packed), _t(np.ones_like(ws)), None, act_bits, group_size)
    np.testing.assert_array_equal(y.numpy(), (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.float32))


def test_the_cases_reach_every_path():
    """Split-K with per-channel slices and with groups, one split, and all three tiles are taken."""
    taken = set()
    for tokens, k, n, _, group_size, *_ in MATMUL_CASES:
        tile = variants.matmul_tile(tokens)
        seg_len, segs, per_split, _ = variants.split_plan(tile, n, k, group_size, launch.INTERPRETER_SMS)
        splits = -(-segs // per_split)
        taken.add((tile.name, "grouped" if group_size else "channel", splits > 1))
    assert {("decode", "channel", True), ("decode", "grouped", True), ("decode", "channel", False),
            ("medium", "grouped", False), ("prefill", "grouped", False)} <= taken
    for case in QUANTIZE_CASES:
        assert variants.kron_tile(case[1], case[2]) is not None
    assert {variants.kron_tile(c[1], c[2]) for c in QUANTIZE_CASES} >= {(16, 16), (32, 32), (32, 64), (64, 128)}


def test_bad_arguments_are_refused_before_any_launch():
    z8 = torch.zeros(3, 4, dtype=torch.int8)
    with pytest.raises(ValueError, match="group_size"):
        launch.int4_matmul(z8, torch.ones(3, 1), torch.zeros(5, 4, dtype=torch.int8), torch.ones(5, 1), None,
                           group_size=3)
    with pytest.raises(ValueError, match="out_dtype"):
        launch.int4_matmul(z8, torch.ones(3, 1), torch.zeros(5, 4, dtype=torch.int8), torch.ones(5, 1), None,
                           out_dtype=torch.int32)
    with pytest.raises(ValueError, match="weight_scale has shape"):
        launch.int4_matmul(z8, torch.ones(3, 1), torch.zeros(5, 4, dtype=torch.int8), torch.ones(5, 2), None)
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        launch.freeact_quantize(torch.zeros(3, 8), torch.zeros(3, dtype=torch.int32), torch.ones(8), torch.eye(2),
                                torch.eye(4), torch.ones(1, 8), torch.ones(1), bits=2)
