"""The method registry: every method is a module of quantize/methods that registers itself."""

import numpy as np
import pytest
import torch

from freeact_export.quantize import methods
from freeact_export.quantize.methods import GroupTransform, Method, lookup, method_names, registry


def test_the_registry_holds_every_method_in_rank_order():
    assert list(registry()) == ["rtn", "smoothquant", "quarot", "smoothrot", "flatquant", "freeact",
                                "freeact-general", "astro"]
    assert method_names()[8:] == tuple(f"{name}+gptq" for name in registry())
    assert [name for name, m in registry().items() if m.learned] == ["flatquant", "freeact", "freeact-general"]
    assert [name for name, m in registry().items() if m.astro_weights] == ["astro"]


def test_lookup_splits_gptq_and_refuses_unknown_names():
    method, gptq = lookup("freeact+gptq")
    assert method.name == "freeact" and gptq
    assert lookup("rtn") == (registry()["rtn"], False)
    for bad in ("nope", "rtn+awq", "rtn+gptq+gptq", "+gptq"):
        with pytest.raises(ValueError, match="unknown method"):
            lookup(bad)


def test_a_new_method_is_planned_without_touching_the_planner(monkeypatch):
    """Registering a method is all it takes: build_plan plans with it (here: no transform, as rtn)."""
    from transformers import AutoModelForCausalLM

    from freeact_export.calibrate.run import calibrate, calibration_windows
    from freeact_export.config import CalibSpec
    from freeact_export.quantize.planner import build_plan, torch_weights
    from freeact_export.token_types import TokenTypes
    from tiny_models import tiny_config

    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))  # the registration ends with the test
    calls = []

    def plan_group(group):
        calls.append(group.name)
        return GroupTransform("identity", {"clip": torch.ones(group.num_types)})

    methods.register(Method("plain-rtn", 99, plan_group))
    with pytest.raises(ValueError, match="registered already"):
        methods.register(Method("plain-rtn", 100, plan_group))
    spec = CalibSpec(windows=2, seqlen=32, samples_per_type=20, min_tokens=4)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    windows = calibration_windows(np.random.default_rng(0).integers(4, 384, 2000).tolist(), spec, None)
    record = calibrate(model, windows, TokenTypes.parse("single"), spec, progress=False)
    mine = build_plan(torch_weights(model), record, "plain-rtn", "w4a4", progress=False)
    rtn = build_plan(torch_weights(model), record, "rtn", "w4a4", progress=False)
    assert calls == [g.name for g in record.groups]
    for a, b in zip(mine.groups, rtn.groups, strict=True):
        assert a.transform == b.transform == "identity"
        for la, lb in zip(a.linears, b.linears, strict=True):
            assert torch.equal(la.codes, lb.codes) and torch.equal(la.scale, lb.scale)
