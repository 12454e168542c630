"""tools/screen_learning.py: its settings parser, and its held-out objective against the learning's own
objective (two implementations of docs/design.md's objective must agree on the same rows)."""

import importlib.util
from pathlib import Path

import pytest
import torch

from freeact_export.calibrate.stats import TypeStats
from freeact_export.config import FREEACT_PRESETS, FreeActSpec, QuantSpec
from freeact_export.quantize.freeact import learn_freeact

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("screen_learning", ROOT / "tools" / "screen_learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_specs_parse_from_presets_and_fields(tool):
    assert tool.parse_spec("gpu") == (FREEACT_PRESETS["gpu"], None)
    spec, samples = tool.parse_spec("cpu:clip_start=none,samples=2048")
    assert spec == FreeActSpec(**{**FREEACT_PRESETS["cpu"].__dict__, "clip_start": "none"}) and samples == 2048
    spec, _ = tool.parse_spec("steps=7,lr=0.1,continue_shared=false")
    assert (spec.steps, spec.lr, spec.continue_shared, spec.batch_tokens) == (7, 0.1, False, FreeActSpec().batch_tokens)
    with pytest.raises(SystemExit, match="not a FreeActSpec field"):
        tool.parse_spec("stepz=3")


@pytest.mark.parametrize("per_type", [False, True])
def test_held_out_objective_equals_the_learning_objective_on_its_rows(tool, per_type):
    gen = torch.Generator().manual_seed(0)
    d = 32
    x = torch.randn(200, d, generator=gen) * torch.randn(1, d, generator=gen).exp()
    sinks = torch.randn(20, d, generator=gen) * 8
    w = torch.randn(16, d, generator=gen)
    stats = []
    for part in (x, sinks):
        s = TypeStats.empty(d)
        s.add(part, keep=len(part), generator=gen)
        stats.append(s)
    weight_spec, act_spec = QuantSpec(4, True, "channel"), QuantSpec(4, True, "token")
    tensors, clip, info = learn_freeact("g", stats, [w], weight_spec, act_spec, FreeActSpec(steps=6, lr=1e-2),
                                        False, 0, per_type)
    ours = tool.held_out_objective(tensors, clip, w, [s.samples for s in stats], [s.count for s in stats],
                                   weight_spec, act_spec)
    assert ours == pytest.approx(info["objective_after"], rel=1e-4)
