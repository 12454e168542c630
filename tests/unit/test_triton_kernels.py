"""The Triton kernels of both ops against the NumPy reference (ops/reference.py), in Triton's interpreter.

The interpreter runs the very kernel bodies the GPU runs (and the plugins' cubins are compiled
from), on shapes that reach every branch: token counts 1, 2–8, 16, 17 and 129 (decode with and
without split-K, the medium and the prefill tile), k and n that are not multiples of any block,
groups that are and are not multiples of the K block, every type rule (shared and per-type
factors, masks, clip), INT4 and INT8 activations, W4A16, float32 / float16 / bfloat16.

Integer results must be exact; FreeActQuantize's codes may differ only at float-order rounding
ties, and Int4MatMul's float outputs only within fp32 rounding, by the bounds kernel_bounds.py derives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_bounds import U, assert_quantize_matches, matmul_inputs, matmul_reference, quantize_inputs
from kernel_bounds import tensor as _t

from freeact_export.kernels import launch, variants
from freeact_export.ops import reference

pytestmark = pytest.mark.skipif(not launch.interpreter_active(),
                                reason="these tests run the kernels in Triton's interpreter (TRITON_INTERPRET=1)")

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
    inputs = list(quantize_inputs(tokens, d1, d2, num_types, per_type, rng))
    inputs[0] = torch.from_numpy(inputs[0]).to(dtype).float().numpy()  # the values x really has
    x = _t(inputs[0]).to(dtype)
    got = launch.freeact_quantize(x, *(_t(a) for a in inputs[1:]), bits=bits, kronecker=1)
    assert_quantize_matches(got, inputs, bits, kronecker=1)


def test_freeact_quantize_on_the_largest_tile():
    """d = 14336 = 112 x 128 (Llama-3-8B's MLP width): tile 128 x 128, seven row chunks."""
    rng = np.random.default_rng(7)
    inputs = quantize_inputs(3, 112, 128, 2, True, rng)
    got = launch.freeact_quantize(*(_t(a) for a in inputs), bits=4, kronecker=1)
    assert_quantize_matches(got, inputs, 4, kronecker=1)


@pytest.mark.parametrize(("tokens", "d", "bits"), [(1, 24, 4), (6, 1100, 8), (17, 2048, 4)])
def test_freeact_quantize_without_transform_is_exact(tokens, d, bits):
    """kronecker = 0: no sums at all, so the codes and scales equal the reference exactly (chunks of 1024, partial)."""
    rng = np.random.default_rng(d)
    x, types, smooth, _, _, masks, clip = quantize_inputs(tokens, 1, d, 2, False, rng)
    one = np.ones((1, 1), np.float32)
    codes, scale = launch.freeact_quantize(*(_t(a) for a in (x, types, smooth, one, one, masks, clip)), bits=bits,
                                           kronecker=0)
    ref_codes, ref_scale = reference.freeact_quantize(x, types, smooth, one, one, masks, clip, bits, 0)
    np.testing.assert_array_equal(codes.numpy(), ref_codes)
    np.testing.assert_array_equal(scale.numpy(), ref_scale)


def test_ties_are_rare_and_the_bound_is_not_vacuous():
    """The tie allowance admits few codes: over 400 tokens, fewer than 1 in 1,000 codes differ."""
    rng = np.random.default_rng(3)
    inputs = quantize_inputs(400, 24, 24, 2, True, rng)
    got = launch.freeact_quantize(*(_t(a) for a in inputs), bits=4, kronecker=1)
    differ = assert_quantize_matches(got, inputs, 4, kronecker=1)
    assert differ < 400 * 576 / 1000


def test_a_wrong_code_fails_the_tie_check():
    """The comparison itself catches a code off by one away from a tie (it is not vacuous)."""
    rng = np.random.default_rng(4)
    inputs = quantize_inputs(4, 4, 8, 1, False, rng)
    codes, scale = launch.freeact_quantize(*(_t(a) for a in inputs), bits=8, kronecker=1)
    ref_codes, _ = reference.freeact_quantize(*inputs, 8, 1)
    k = int(np.argmax(np.abs(ref_codes[0]) < 100))  # a code that can move without clamping
    codes[0, k] += 1
    with pytest.raises(AssertionError, match="away from a rounding tie"):
        assert_quantize_matches((codes, scale), inputs, 8, kronecker=1)


def test_a_type_outside_the_range_reads_nothing_out_of_bounds():
    """The contract forbids it; the kernel clamps it into [0, K) rather than read past masks and factors."""
    rng = np.random.default_rng(5)
    inputs = list(quantize_inputs(6, 4, 8, 2, True, rng))
    inputs[1] = np.array([-3, 0, 1, 2, 7, 1], np.int32)
    codes, scale = launch.freeact_quantize(*(_t(a) for a in inputs), bits=8)
    inputs[1] = np.clip(inputs[1], 0, 1).astype(np.int32)
    assert_quantize_matches((codes, scale), inputs, 8, kronecker=1)


def test_empty_inner_dimensions():
    """k = 0: every dot is 0, so y is the bias; d = 0: no codes, scale 1 (amax 0)."""
    y = launch.int4_matmul(torch.zeros(3, 0, dtype=torch.int8), torch.ones(3, 1), torch.zeros(5, 0, dtype=torch.int8),
                           torch.ones(5, 1), torch.arange(5.0))
    assert torch.equal(y, torch.arange(5.0).expand(3, 5))
    codes, scale = launch.freeact_quantize(torch.zeros(2, 0), torch.zeros(2, dtype=torch.int32), torch.ones(0),
                                           torch.ones(1, 1), torch.ones(1, 1), torch.ones(1, 0), torch.ones(1),
                                           bits=8, kronecker=0)
    assert codes.shape == (2, 0) and torch.equal(scale, torch.ones(2, 1))


def test_shapes_without_a_tile_are_refused_in_one_line():
    from freeact_export.errors import UserError

    rng = np.random.default_rng(0)
    big = quantize_inputs(1, 2, 130, 1, False, rng)
    with pytest.raises(UserError, match="no kernel tile for Kronecker factors 2 x 130"):
        launch.freeact_quantize(*(_t(a) for a in big), bits=4)
    odd = quantize_inputs(1, 10, 15, 1, False, rng)
    with pytest.raises(UserError, match="must be even"):
        launch.freeact_quantize(*(_t(a) for a in odd), bits=4)
    codes, _ = launch.freeact_quantize(*(_t(a) for a in odd), bits=8)  # INT8 codes need no pairs
    assert codes.shape == (1, 150)


# ---------------------------------------------------------------- Int4MatMul

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
    a, codes, scale, w, packed, ws, b = matmul_inputs(tokens, k, n, act_bits, group_size, rng)
    activations = _t(codes).to(out_dtype) if act_bits == 16 else _t(codes)
    if act_bits == 16:
        a = activations.float().numpy()
    y = launch.int4_matmul(activations, None if scale is None else _t(scale), _t(packed), _t(ws),
                           _t(b) if bias else None, act_bits, group_size, out_dtype)
    assert y.dtype == out_dtype and y.shape == (tokens, n)
    exact, bound = matmul_reference(a, scale, w, ws, b if bias else np.zeros(n, np.float32), group_size)
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
    a, codes, _, w, packed, ws, _ = matmul_inputs(tokens, k, n, act_bits, group_size, rng)
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
