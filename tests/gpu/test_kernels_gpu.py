"""The CUDA kernels through the torch bindings, against the NumPy reference of the op schemas.

Int4MatMul: with unit scales and no bias every output is an exact integer (|partial sums| < 2^24),
so the kernel must equal the reference exactly; with real scales, within float32 rounding of the
scale-and-sum epilogue. FreeActQuantize: codes equal the reference's except at rounding ties
(found from a float64 computation), where float summation order may decide either way by ±1.
Then a whole model: smollm2-135m's perplexity with the kernels equals the simulation's.

Skipped as a whole, with the reason, without a CUDA GPU or without the built plugin library.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch

from freeact_export.errors import UserError
from freeact_export.ops import reference
from freeact_export.quantize.freeact import kron_dims
from freeact_export.runtime import kernels

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False)", allow_module_level=True)
try:
    kernels.load_library()
except (ImportError, UserError) as err:
    pytest.skip(f"the plugin library is not built or not loadable: {err}", allow_module_level=True)

EPS32 = float(np.finfo(np.float32).eps)
EPS16 = float(np.finfo(np.float16).eps)
SHAPES = [(576, 1536), (1536, 576), (4096, 4096), (4096, 14336), (14336, 4096)]  # (k = d, n)
TOKENS = [1, 16, 128, 2048]
REFERENCE_ROWS = 128  # rows are independent: above this many tokens the reference checks a random subset


def _gpu(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def _rows(tokens: int, rng: np.random.Generator) -> np.ndarray:
    if tokens <= REFERENCE_ROWS:
        return np.arange(tokens)
    picked = rng.choice(np.arange(1, tokens - 1), REFERENCE_ROWS - 2, replace=False)
    return np.sort(np.concatenate([[0, tokens - 1], picked]))


@functools.lru_cache(maxsize=4)
def _weight(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """INT4 weight codes [n, k] (every code, -8 included) and their packed int8 bytes."""
    w = np.random.default_rng(k * 7 + n).integers(-8, 8, (n, k)).astype(np.int8)
    return w, reference.pack_int4(w).view(np.int8)


def _activation_codes(tokens: int, k: int, act_bits: int, rng: np.random.Generator) -> np.ndarray:
    qmax = 7 if act_bits == 4 else 127
    a = rng.integers(-qmax - 1, qmax + 1, (tokens, k)).astype(np.int8)
    return reference.pack_int4(a).view(np.int8) if act_bits == 4 else a


def _matmul_cases():
    for k, n in SHAPES:
        for group in (0, 128 if k % 128 == 0 else 64):  # 576 is no multiple of 128
            for act_bits in (4, 8):
                for tokens in TOKENS:
                    yield pytest.param(k, n, group, act_bits, tokens, id=f"k{k}-n{n}-g{group}-a{act_bits}-t{tokens}")


@pytest.mark.parametrize(("k", "n", "group", "act_bits", "tokens"), list(_matmul_cases()))
def test_int4_matmul_integer_outputs_are_exact(k, n, group, act_bits, tokens):
    rng = np.random.default_rng(tokens + k + n + act_bits)
    _, packed = _weight(k, n)
    codes = _activation_codes(tokens, k, act_bits, rng)
    groups = k // group if group else 1
    scale = np.ones((tokens, 1), np.float32)
    weight_scale = np.ones((n, groups), np.float32)
    y = kernels.int4_matmul(_gpu(codes), _gpu(scale), _gpu(packed), _gpu(weight_scale), None, act_bits, group)
    rows = _rows(tokens, rng)
    expected = reference.int4_matmul(codes[rows], scale[rows], packed, weight_scale, np.zeros(n, np.float32),
                                     act_bits, group)
    got = y.cpu().numpy()[rows]
    assert y.shape == (tokens, n) and y.dtype == torch.float32
    assert np.array_equal(got, expected), f"{int((got != expected).sum())} of {got.size} outputs differ"


def _scaled_case(k, n, group, act_bits, tokens, rng):
    _, packed = _weight(k, n)
    codes = _activation_codes(tokens, k, act_bits, rng)
    groups = k // group if group else 1
    scale = rng.uniform(0.01, 0.1, (tokens, 1)).astype(np.float32)
    weight_scale = rng.uniform(0.001, 0.01, (n, groups)).astype(np.float32)
    bias = rng.normal(0, 1, n).astype(np.float32)
    return codes, scale, packed, weight_scale, bias


def _epilogue_tolerance(codes, scale, packed, weight_scale, bias, act_bits, groups) -> np.ndarray:
    """Float32 rounding bound of scale · Σ_g ws_g · dot_g + bias: (G + 8) ulp of the sum of |terms|."""
    a = np.abs(reference.unpack_int4(codes) if act_bits == 4 else codes).astype(np.float64)
    w = np.abs(reference.unpack_int4(packed)).astype(np.float64)
    terms = np.abs(scale.astype(np.float64)) * (a @ w.T) * weight_scale.max(axis=1) + np.abs(bias)
    return (groups + 8) * EPS32 * terms


@pytest.mark.parametrize(("k", "n", "group", "act_bits", "tokens"), list(_matmul_cases()))
def test_int4_matmul_with_scales_and_bias_is_within_float32_rounding(k, n, group, act_bits, tokens):
    rng = np.random.default_rng(1000 + tokens + k + n + act_bits)
    codes, scale, packed, weight_scale, bias = _scaled_case(k, n, group, act_bits, tokens, rng)
    y = kernels.int4_matmul(_gpu(codes), _gpu(scale), _gpu(packed), _gpu(weight_scale), _gpu(bias), act_bits, group)
    rows = _rows(tokens, rng)
    expected = reference.int4_matmul(codes[rows], scale[rows], packed, weight_scale, bias, act_bits, group)
    tol = _epilogue_tolerance(codes[rows], scale[rows], packed, weight_scale, bias, act_bits,
                              k // group if group else 1)
    err = np.abs(y.cpu().numpy()[rows].astype(np.float64) - expected)
    assert (err <= tol).all(), f"max error {err.max():.3g}, worst error/tolerance {(err / tol).max():.3g}"


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), [(576, 1536), (4096, 14336)])
@pytest.mark.parametrize("tokens", [1, 128])
def test_int4_matmul_narrow_outputs_are_the_rounded_float32_result(k, n, tokens, out_dtype):
    rng = np.random.default_rng(7)
    codes, scale, packed, weight_scale, bias = _scaled_case(k, n, 0, 4, tokens, rng)
    y = kernels.int4_matmul(_gpu(codes), _gpu(scale), _gpu(packed), _gpu(weight_scale), _gpu(bias), 4, 0,
                            out_dtype=out_dtype)
    assert y.dtype == out_dtype
    expected = reference.int4_matmul(codes, scale, packed, weight_scale, bias, 4, 0).astype(np.float64)
    eps = EPS16 if out_dtype == torch.float16 else 2.0**-7
    tol = _epilogue_tolerance(codes, scale, packed, weight_scale, bias, 4, 1) + eps * np.abs(expected)
    err = np.abs(y.float().cpu().numpy().astype(np.float64) - expected)
    assert (err <= tol).all(), f"max error {err.max():.3g}"


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _quantize_inputs(d: int, tokens: int, factors: str, x_dtype, rng: np.random.Generator):
    """Realistic inputs: outlier channels, signed smoothing, per-type masks and clips (K = 2)."""
    num_types = 2
    x = rng.normal(0, 1, (tokens, d)).astype(np.float32)
    x[:, rng.choice(d, 4, replace=False)] *= 30  # outlier channels, as LLM activations have
    x = x.astype(x_dtype)
    types = rng.integers(0, num_types, tokens).astype(np.int32)
    types[0] = 1  # the attention sink
    smooth = (rng.uniform(0.5, 2.0, d) * rng.choice([-1.0, 1.0], d)).astype(np.float32)
    d1, d2 = kron_dims(d)
    if factors == "none":
        k1 = k2 = np.ones((1, 1), np.float32)
    elif factors == "shared":
        k1, k2 = _orthogonal(d1, rng), _orthogonal(d2, rng)
    else:
        k1 = np.stack([_orthogonal(d1, rng) for _ in range(num_types)])
        k2 = np.stack([_orthogonal(d2, rng) for _ in range(num_types)])
    masks = np.ones((num_types, d), np.float32)
    masks[0, : d // 32] = 0  # type 1's dedicated block
    masks[1, d // 32: d // 16] = 0  # type 0's dedicated block
    clip = np.array([1.0, 0.9], np.float32)
    return x, types, smooth, k1, k2, masks, clip, int(factors != "none")


def _tie_mask(x, types, smooth, k1, k2, masks, clip, bits, kronecker) -> np.ndarray:
    """Elements whose exact y / scale lies within 1e-5 (relative, at least absolute) of a half-integer."""
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    y = f64(x) / f64(smooth)
    if kronecker:
        if k1.ndim == 2:
            y = reference.kron_apply(y, f64(k1), f64(k2))
        else:
            per_type = np.stack([reference.kron_apply(y, f64(k1[t]), f64(k2[t])) for t in range(k1.shape[0])])
            y = np.take_along_axis(per_type, types[None, :, None].astype(np.int64), axis=0)[0]
    y = y * f64(masks)[types]
    qmax = 7 if bits == 4 else 127
    scale = np.abs(y).max(axis=-1, keepdims=True) * f64(clip)[types][:, None] / qmax
    ratio = y / np.where(scale > 0, scale, 1.0)
    distance = np.abs(ratio - (np.floor(ratio) + 0.5))
    return distance <= 1e-5 * np.maximum(1.0, np.abs(ratio))


@pytest.mark.parametrize("factors", ["shared", "per_type", "none"])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float16], ids=["x32", "x16"])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("d", [576, 1536, 4096, 14336])
def test_freeact_quantize_codes_equal_the_reference_except_at_ties(d, tokens, bits, x_dtype, factors):
    rng = np.random.default_rng(d + tokens + bits)
    inputs = _quantize_inputs(d, tokens, factors, x_dtype, rng)
    x, types, smooth, k1, k2, masks, clip, kronecker = inputs
    codes, scale = kernels.freeact_quantize(_gpu(x), _gpu(types), _gpu(smooth), _gpu(k1), _gpu(k2), _gpu(masks),
                                            _gpu(clip), bits, kronecker)
    ref_codes, ref_scale = reference.freeact_quantize(x, types, smooth, k1, k2, masks, clip, bits, kronecker)
    assert codes.shape == ref_codes.shape and scale.shape == ref_scale.shape == (tokens, 1)
    np.testing.assert_allclose(scale.cpu().numpy(), ref_scale, rtol=1e-5)
    got, want = codes.cpu().numpy(), ref_codes
    if bits == 4:
        got, want = reference.unpack_int4(got), reference.unpack_int4(want)
    diff = got.astype(np.int16) - want.astype(np.int16)
    ties = _tie_mask(*inputs[:7], bits, kronecker)
    off = diff != 0
    assert (np.abs(diff[off]) == 1).all(), f"codes differ by up to {np.abs(diff).max()}"
    assert ties[off].all(), (f"{int((off & ~ties).sum())} codes differ away from a rounding tie "
                             f"({int(off.sum())} differ, {int(ties.sum())} ties)")


def test_freeact_quantize_keeps_leading_dims_and_takes_bfloat16():
    rng = np.random.default_rng(3)
    x, types, smooth, k1, k2, masks, clip, kronecker = _quantize_inputs(576, 8, "shared", np.float32, rng)
    x_bf16 = torch.from_numpy(x).to(torch.bfloat16).reshape(2, 4, 576).cuda()
    codes, scale = kernels.freeact_quantize(x_bf16, _gpu(types).reshape(2, 4), _gpu(smooth), _gpu(k1), _gpu(k2),
                                            _gpu(masks), _gpu(clip), 4, kronecker)
    assert codes.shape == (2, 4, 288) and scale.shape == (2, 4, 1)
    ref_codes, ref_scale = reference.freeact_quantize(x_bf16.float().cpu().numpy().reshape(8, 576), types, smooth,
                                                      k1, k2, masks, clip, 4, kronecker)
    np.testing.assert_allclose(scale.cpu().numpy().reshape(8, 1), ref_scale, rtol=1e-5)
    diff = reference.unpack_int4(codes.cpu().numpy().reshape(8, 288)) - reference.unpack_int4(ref_codes)
    assert np.abs(diff).max() <= 1


def test_kernels_run_on_the_current_stream():
    rng = np.random.default_rng(4)
    codes = _activation_codes(16, 4096, 4, rng)
    _, packed = _weight(4096, 4096)
    args = (_gpu(codes), _gpu(np.ones((16, 1), np.float32)), _gpu(packed), _gpu(np.ones((4096, 1), np.float32)))
    expected = kernels.int4_matmul(*args, None)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = kernels.int4_matmul(*args, None)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(y, expected)


# A whole model: what `freeact-export eval --plan DIR --runtime kernels` measures.

@pytest.fixture(scope="module")
def calibrated():
    from freeact_export import api
    from freeact_export.config import CalibSpec, EvalSpec

    return api.calibrate_model("smollm2-135m", "wiki", "sink=pos:1", "cpu", device="cuda",
                               eval_spec=EvalSpec(seqlen=1024, windows=4),
                               calib=CalibSpec(windows=4, seqlen=256, min_tokens=4), progress=False)


@pytest.mark.real_model
@pytest.mark.parametrize(("method", "bits"), [("freeact", "w4a4"), ("freeact-general", "w4a4"), ("quarot", "w4a8"),
                                              ("rtn", "w4a16")])
def test_smollm2_perplexity_with_the_kernels_equals_the_simulation(calibrated, method, bits):
    from freeact_export import api
    from freeact_export.config import FreeActSpec
    from freeact_export.evaluate.perplexity import perplexity
    from freeact_export.runtime.kernel_model import KernelLogits

    plan, report = api.plan_model(calibrated, method, bits, progress=False, freeact=FreeActSpec(steps=20))
    simulated = report["eval"]["perplexity"]
    runner = KernelLogits(copy.deepcopy(calibrated.torch_model), plan)
    measured = perplexity(runner, calibrated.eval_windows, progress=False).perplexity
    assert runner.runtime == "freeact-kernels"
    assert measured == pytest.approx(simulated, rel=5e-3), f"kernels {measured:.4f}, simulation {simulated:.4f}"
