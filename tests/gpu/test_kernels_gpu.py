"""The Triton kernels JIT-compiled on a CUDA GPU, against the NumPy reference of the op schemas.

The same bounds as the interpreter tests (tests/kernel_bounds.py): integer outputs exact, codes
equal except at derived float-order ties, float outputs within fp32 rounding; here on the shapes
of real models (576 … 14336) and token counts up to prefill. Then real-model layers (the inputs,
plan tensors and reference outputs tools/real_layers.py saves from smollm2-135m on any machine,
FREEACT_REAL_LAYERS) and, where the model is installed, smollm2-135m's perplexity with the kernels.

Skipped as a whole, with the reason, without a CUDA GPU (tools/gpu_check.sh counts that a failure).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from kernel_bounds import assert_quantize_matches, check_real_layers, matmul_reference

from freeact_export.kernels import launch
from freeact_export.ops import reference
from freeact_export.quantize.freeact import kron_dims

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False)", allow_module_level=True)
if launch.interpreter_active():
    pytest.skip("TRITON_INTERPRET=1 is set: the GPU tests need Triton's compiler", allow_module_level=True)

SHAPES = [(576, 1536), (1536, 576), (4096, 4096), (4096, 14336), (14336, 4096)]  # (k = d, n)
TOKENS = [1, 16, 128, 2048]
REFERENCE_ROWS = 128  # rows are independent: above this many tokens the reference checks a subset


def _gpu(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def _rows(tokens: int, rng: np.random.Generator) -> np.ndarray:
    if tokens <= REFERENCE_ROWS:
        return np.arange(tokens)
    picked = rng.choice(np.arange(1, tokens - 1), REFERENCE_ROWS - 2, replace=False)
    return np.sort(np.concatenate([[0, tokens - 1], picked]))


def _matmul_cases():
    for k, n in SHAPES:
        for group in (0, 128 if k % 128 == 0 else 64):  # 576 is no multiple of 128
            for act_bits in (4, 8):
                for tokens in TOKENS:
                    yield pytest.param(k, n, group, act_bits, tokens, id=f"k{k}-n{n}-g{group}-a{act_bits}-t{tokens}")


def _case(k, n, group, act_bits, tokens, rng):
    w = rng.integers(-8, 8, (n, k)).astype(np.int8)
    qmax = 7 if act_bits == 4 else 127
    a = rng.integers(-qmax - 1, qmax + 1, (tokens, k)).astype(np.int8)
    codes = reference.pack_int4(a).view(np.int8) if act_bits == 4 else a
    groups = k // group if group else 1
    scale = rng.uniform(0.01, 0.1, (tokens, 1)).astype(np.float32)
    ws = rng.uniform(0.001, 0.01, (n, groups)).astype(np.float32)
    bias = rng.normal(0, 1, n).astype(np.float32)
    return a, codes, scale, w, reference.pack_int4(w).view(np.int8), ws, bias


@pytest.mark.parametrize(("k", "n", "group", "act_bits", "tokens"), list(_matmul_cases()))
def test_int4_matmul_integer_outputs_are_exact(k, n, group, act_bits, tokens):
    rng = np.random.default_rng(tokens + k + n + act_bits)
    a, codes, _, w, packed, ws, _ = _case(k, n, group, act_bits, tokens, rng)
    y = launch.int4_matmul(_gpu(codes), _gpu(np.ones((tokens, 1), np.float32)), _gpu(packed),
                           _gpu(np.ones_like(ws)), None, act_bits, group)
    rows = _rows(tokens, rng)
    expected = (a[rows].astype(np.int64) @ w.astype(np.int64).T).astype(np.float32)
    got = y.cpu().numpy()[rows]
    assert np.array_equal(got, expected), f"{int((got != expected).sum())} of {got.size} outputs differ"


@pytest.mark.parametrize(("k", "n", "group", "act_bits", "tokens"), list(_matmul_cases()))
def test_int4_matmul_with_scales_and_bias_is_within_float32_rounding(k, n, group, act_bits, tokens):
    rng = np.random.default_rng(1000 + tokens + k + n + act_bits)
    a, codes, scale, w, packed, ws, bias = _case(k, n, group, act_bits, tokens, rng)
    y = launch.int4_matmul(_gpu(codes), _gpu(scale), _gpu(packed), _gpu(ws), _gpu(bias), act_bits, group)
    rows = _rows(tokens, rng)
    exact, bound = matmul_reference(a[rows], scale[rows], w, ws, bias, group)
    err = np.abs(y.cpu().numpy()[rows].astype(np.float64) - exact)
    assert (err <= bound).all(), f"max error {err.max():.3g}, worst error/bound {(err / bound).max():.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), [(576, 1536), (4096, 14336)])
@pytest.mark.parametrize("tokens", [1, 128])
def test_w4a16_and_narrow_outputs(k, n, tokens, dtype):
    rng = np.random.default_rng(7)
    group = 128 if k % 128 == 0 else 64
    w = rng.integers(-8, 8, (n, k)).astype(np.int8)
    ws = rng.uniform(0.001, 0.01, (n, k // group)).astype(np.float32)
    bias = rng.normal(0, 1, n).astype(np.float32)
    x = torch.from_numpy(rng.normal(0, 1, (tokens, k)).astype(np.float32)).to(dtype)
    y = launch.int4_matmul(x.cuda(), None, _gpu(reference.pack_int4(w).view(np.int8)), _gpu(ws), _gpu(bias), 16,
                           group, out_dtype=dtype)
    exact, bound = matmul_reference(x.float().numpy(), None, w, ws, bias, group)
    if dtype != torch.float32:
        bound = bound + float(torch.finfo(dtype).eps) * np.abs(exact)
    err = np.abs(y.float().cpu().numpy().astype(np.float64) - exact)
    assert (err <= bound).all(), f"max error {err.max():.3g}"


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _quantize_inputs(d: int, tokens: int, factors: str, rng: np.random.Generator):
    """Realistic inputs: outlier channels, signed smoothing, per-type masks and clips (K = 2)."""
    num_types = 2
    x = rng.normal(0, 1, (tokens, d)).astype(np.float32)
    x[:, rng.choice(d, 4, replace=False)] *= 30  # outlier channels, as LLM activations have
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
    return [x, types, smooth, k1, k2, masks, clip], int(factors != "none")


@pytest.mark.parametrize("factors", ["shared", "per_type", "none"])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["x32", "x16", "xbf16"])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("d", [576, 1536, 4096, 14336])
def test_freeact_quantize_codes_equal_the_reference_except_at_ties(d, tokens, bits, x_dtype, factors):
    rng = np.random.default_rng(d + tokens + bits)
    inputs, kronecker = _quantize_inputs(d, tokens, factors, rng)
    x = torch.from_numpy(inputs[0]).to(x_dtype)
    inputs[0] = x.float().numpy()  # the values x really has
    codes, scale = launch.freeact_quantize(x.cuda(), *(_gpu(a) for a in inputs[1:]), bits, kronecker)
    rows = _rows(tokens, rng)
    sub = [inputs[0][rows], inputs[1][rows], *inputs[2:]]
    assert_quantize_matches((codes.cpu()[rows], scale.cpu()[rows]), sub, bits, kronecker)


def test_kernels_run_on_the_current_stream():
    rng = np.random.default_rng(4)
    _, codes, _, _, packed, _, _ = _case(4096, 4096, 0, 4, 16, rng)
    args = (_gpu(codes), _gpu(np.ones((16, 1), np.float32)), _gpu(packed), _gpu(np.ones((4096, 1), np.float32)))
    expected = launch.int4_matmul(*args, None)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = launch.int4_matmul(*args, None)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(y, expected)


# Real-model layers: what tools/real_layers.py saved (smollm2-135m, FreeAct W4A4 plan, calibration inputs).

@pytest.mark.skipif(not os.environ.get("FREEACT_REAL_LAYERS"),
                    reason="FREEACT_REAL_LAYERS (a file from tools/real_layers.py) is not set")
def test_real_model_layers_through_the_kernels():
    assert check_real_layers(os.environ["FREEACT_REAL_LAYERS"], torch.device("cuda")) >= 8


# A whole model: what `freeact-export eval --plan DIR --runtime kernels` measures (where smollm2 is installed).

@pytest.fixture(scope="module")
def calibrated():
    from freeact_export import api
    from freeact_export.config import CalibSpec, EvalSpec

    try:
        return api.calibrate_model("smollm2-135m", "wiki", "sink=pos:1", "cpu", device="cuda",
                                   eval_spec=EvalSpec(seqlen=1024, windows=4),
                                   calib=CalibSpec(windows=4, seqlen=256, min_tokens=4), progress=False)
    except Exception as err:  # the registry packages are not on every GPU machine
        pytest.skip(f"smollm2-135m or the wiki corpus is not installed here: {err}")


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
