"""The ONNX frontend finds the same groups, collects the same statistics and gives the same plan
as the PyTorch frontend, on tiny models exported by our own exporter."""

import numpy as np
import pytest
import torch

from freeact_export import api
from freeact_export.assets import resolve_model
from freeact_export.calibrate.groups import find_linear_groups
from freeact_export.calibrate.run import calibrate, calibration_windows
from freeact_export.config import CalibSpec, ExportSpec, FreeActSpec
from freeact_export.models import load_torch_model
from freeact_export.onnx_in.calibrate import calibrate_onnx
from freeact_export.onnx_in.graph import load_onnx
from freeact_export.quantize.planner import build_plan, torch_weights
from freeact_export.token_types import TokenTypes
from tiny_models import save_tiny_model

SPEC = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)
TYPES = TokenTypes.parse("sink=pos:3")


@pytest.fixture(scope="module", params=["llama", "qwen2"])  # qwen2: q/k/v carry biases (MatMul + Add)
def both(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"onnx-in-{request.param}")
    hf = save_tiny_model(request.param, root / "hf")
    api.export(str(hf), root / "onnx", ExportSpec())
    model = load_torch_model(resolve_model(str(hf)))
    windows = calibration_windows(np.random.default_rng(0).integers(4, 384, 4000).tolist(), SPEC, None)
    return model, load_onnx(root / "onnx" / "model.onnx"), windows


def test_same_groups_and_weights_as_pytorch(both):
    model, onnx_model, windows = both
    assert onnx_model.groups == find_linear_groups(model, torch.from_numpy(windows[:1, :8]))
    for group in onnx_model.groups:
        for name in group.linears:
            w, b = onnx_model.weights(name)
            linear = model.get_submodule(name)
            assert torch.equal(w, linear.weight.detach())
            assert (b is None) == (linear.bias is None)
            assert b is None or torch.equal(b, linear.bias.detach())


def test_same_statistics_as_pytorch(both):
    model, onnx_model, windows = both
    ref = calibrate(model, windows, TYPES, SPEC, progress=False)
    got = calibrate_onnx(onnx_model, windows, TYPES, SPEC, progress=False)
    assert [g.name for g in got.groups] == [g.name for g in ref.groups]
    for group in ref.groups:
        for r, g in zip(ref.stats[group.name], got.stats[group.name], strict=True):
            assert g.count == r.count
            scale = float(torch.diagonal(r.second_moment).max())
            assert torch.allclose(g.second_moment, r.second_moment, rtol=1e-4, atol=1e-5 * scale)
            assert torch.allclose(g.samples, r.samples, rtol=1e-4, atol=1e-5)  # the same tokens were kept
    assert got.massive.positions == ref.massive.positions


@pytest.mark.parametrize("method", ["quarot+gptq", "freeact"])
def test_same_plan_as_pytorch(both, method):
    model, onnx_model, windows = both
    ref_record = calibrate(model, windows, TYPES, SPEC, progress=False)
    got_record = calibrate_onnx(onnx_model, windows, TYPES, SPEC, progress=False)
    spec = FreeActSpec(steps=6)
    ref = build_plan(torch_weights(model), ref_record, method, "w4a4", progress=False, freeact=spec)
    got = build_plan(onnx_model.weights, got_record, method, "w4a4", progress=False, freeact=spec)
    codes_same, codes_all = 0, 0
    for r, g in zip(ref.groups, got.groups, strict=True):
        assert (r.name, r.transform, sorted(r.tensors)) == (g.name, g.transform, sorted(g.tensors))
        for key in r.tensors:
            assert torch.allclose(g.tensors[key], r.tensors[key], rtol=1e-3, atol=1e-3), (r.name, key)
        for rl, gl in zip(r.linears, g.linears, strict=True):
            # Float noise in the statistics may move a weight across a rounding boundary: by one code at most.
            assert int((rl.codes.int() - gl.codes.int()).abs().max()) <= 1
            codes_same += int((rl.codes == gl.codes).sum())
            codes_all += rl.codes.numel()
            assert torch.allclose(gl.scale, rl.scale, rtol=1e-3)
    assert codes_same / codes_all > 0.999
