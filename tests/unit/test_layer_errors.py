"""tools/layer_errors.py: each plan's output error per group, against an fp64 formula."""

import sys
from pathlib import Path

import numpy as np
import torch
from test_layerwise import SPEC, TYPES, _model, _windows

from freeact_export.calibrate.run import calibrate
from freeact_export.config import WeightOptions
from freeact_export.quantize.planner import build_plan, torch_weights
from freeact_export.quantize.quantizers import Quantized, dequantize

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import layer_errors  # noqa: E402


def test_weight_only_errors_match_the_fp64_formula_and_activation_quantization_adds_error():
    """W4A16 RTN (no transform, float activations): Σ‖x (W − Ŵ)ᵀ‖² / Σ‖x Wᵀ‖² over each group's consumers and
    the tokens of each type, computed here in float64 from inputs captured by hooks; W4A4 RTN errs more."""
    model, windows = _model("llama"), _windows()
    record = calibrate(model, windows, TYPES, SPEC, progress=False)
    plans = {m: build_plan(torch_weights(model), record, "rtn", bits, 0, False, rounding=WeightOptions())
             for m, bits in (("w4a16", "w4a16"), ("w4a4", "w4a4"))}
    errors = layer_errors.group_errors(model, windows, TYPES, plans)
    captured = {}

    def keep(module, args, name):
        captured.setdefault(name, []).append(args[0].detach().double().reshape(-1, args[0].shape[-1]))

    hooks = [model.get_submodule(g.linears[0].name).register_forward_pre_hook(lambda m, a, n=g.name: keep(m, a, n))
             for g in plans["w4a16"].groups]
    with torch.no_grad():
        for row in windows:
            model(input_ids=torch.from_numpy(row[None, :]), use_cache=False)
    for h in hooks:
        h.remove()
    types = torch.cat([TYPES.assign(torch.from_numpy(row[None, :])).reshape(-1) for row in windows])
    for group in plans["w4a16"].groups:
        x = torch.cat(captured[group.name])
        err = energy = 0.0
        sink_err = sink_energy = 0.0
        for lin in group.linears:
            w = model.get_submodule(lin.name).weight.detach().double()
            w_hat = dequantize(Quantized(lin.codes, lin.scale, lin.zero), group.weight_spec).double()
            e, y = (x @ (w - w_hat).T).pow(2).sum(-1), (x @ w.T).pow(2).sum(-1)
            err, energy = err + e.sum(), energy + y.sum()
            sink_err, sink_energy = sink_err + e[types == 1].sum(), sink_energy + y[types == 1].sum()
        got = errors["w4a16"][group.name]
        assert np.isclose(got["all"], float(err / energy), rtol=1e-4)
        assert np.isclose(got["sink"], float(sink_err / sink_energy), rtol=1e-4)
        assert errors["w4a4"][group.name]["all"] > got["all"]
    assert "w4a16" in layer_errors.table(errors, ["w4a16", "w4a4"])
