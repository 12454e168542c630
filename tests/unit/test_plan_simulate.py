"""Calibration, planning and simulation against independent references on tiny models."""

import numpy as np
import pytest
import torch

from freeact_export import api
from freeact_export.calibrate.groups import find_linear_groups
from freeact_export.calibrate.run import calibrate, calibration_windows
from freeact_export.config import CalibSpec, EvalSpec
from freeact_export.errors import UserError
from freeact_export.plan import Plan
from freeact_export.quantize.planner import build_plan, torch_weights
from freeact_export.simulate.fake_quant import SimulatedLogits
from freeact_export.token_types import TokenTypes
from freeact_export.transforms.hadamard import hadamard
from tiny_models import ARCHITECTURES, tiny_config

SPEC = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)


def _model(arch="llama"):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch)).eval()


def _windows():
    ids = np.random.default_rng(0).integers(4, 384, 4000).tolist()
    return calibration_windows(ids, SPEC, None)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_groups_are_the_four_shared_inputs_per_layer(arch):
    groups = find_linear_groups(_model(arch), torch.randint(4, 300, (1, 8)))
    suffixes = [g.name.split(".", 3)[-1] for g in groups[:4]]
    assert suffixes == ["self_attn.q_proj+k_proj+v_proj", "self_attn.o_proj", "mlp.gate_proj+up_proj",
                        "mlp.down_proj"]
    assert len(groups) == 4 * 2


def test_stats_per_type_match_a_direct_computation():
    model, windows = _model(), _windows()
    record = calibrate(model, windows, TokenTypes.parse("sink=pos:3"), SPEC, progress=False)
    # The q/k/v input of layer 0 is input_layernorm(embeddings): compute it without the model's forward.
    with torch.no_grad():
        x = model.model.layers[0].input_layernorm(model.model.embed_tokens(torch.from_numpy(windows))).double()
    sink, rest = x[:, :3].reshape(-1, x.shape[-1]), x[:, 3:].reshape(-1, x.shape[-1])
    stats = record.stats[record.groups[0].name]
    for got, ref in zip(stats, (rest, sink), strict=True):
        assert got.count == ref.shape[0]
        assert torch.allclose(got.second_moment, ref.T @ ref, rtol=1e-5, atol=1e-6)
        assert torch.allclose(got.absmax.double(), ref.abs().amax(0), rtol=1e-6)
        assert got.samples.shape == (min(ref.shape[0], 4 * 10), x.shape[-1])


def test_a_type_with_too_few_tokens_is_named():
    with pytest.raises(UserError, match="token type 'rare' has 0 calibration tokens"):
        calibrate(_model(), _windows(), TokenTypes.parse("rare=ids:1"), SPEC, progress=False)


def test_plan_save_load_is_lossless(tmp_path):
    model = _model("qwen2")  # q/k/v biases travel too
    record = calibrate(model, _windows(), TokenTypes(), SPEC, progress=False)
    plan = build_plan(torch_weights(model), record, "smoothrot", "w4a8", progress=False)
    plan.save(tmp_path / "plan")
    loaded = Plan.load(tmp_path / "plan")
    assert (loaded.method, loaded.bits, loaded.act_spec, loaded.token_types) == (
        plan.method, plan.bits, plan.act_spec, plan.token_types)
    for a, b in zip(plan.groups, loaded.groups, strict=True):
        assert (a.name, a.transform, a.weight_spec, a.tensors.keys()) == (b.name, b.transform, b.weight_spec,
                                                                           b.tensors.keys())
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
        for la, lb in zip(a.linears, b.linears, strict=True):
            for field in ("codes", "scale", "zero", "bias"):
                va, vb = getattr(la, field), getattr(lb, field)
                assert (va is None and vb is None) or torch.equal(va, vb)


def test_simulated_quarot_linear_matches_a_numpy_reference():
    """x → x·diag(signs)·H (dense) → INT8 per token → times dequantized codes, written out in numpy."""
    model = _model()
    record = calibrate(model, _windows(), TokenTypes(), SPEC, progress=False)
    plan = build_plan(torch_weights(model), record, "quarot", "w4a8", progress=False)
    runner = SimulatedLogits(model, plan)
    group = plan.groups[0]
    sim = runner.model.get_submodule(group.linears[1].name)  # k_proj
    x = torch.randn(1, 5, group.in_features, generator=torch.Generator().manual_seed(3))
    runner.context.types = torch.zeros(5, dtype=torch.int32)
    got = sim(x).double().numpy()[0]

    rotated = x.double().numpy()[0] * group.tensors["signs"].double().numpy() @ hadamard(group.in_features).numpy()
    scale = np.abs(rotated).max(axis=1, keepdims=True) / 127
    act = np.clip(np.round(rotated / scale), -128, 127) * scale
    lin = group.linears[1]
    weight = lin.codes.numpy().astype(np.float64) * lin.scale.double().numpy()
    assert np.allclose(got, act @ weight.T, rtol=1e-4, atol=1e-4)


def test_quantize_api_writes_plan_and_reports_simulated_perplexity(tmp_path, tiny_llama, tiny_text_file):
    fp = api.evaluate(str(tiny_llama), str(tiny_text_file), EvalSpec(seqlen=64, windows=4), device="cpu",
                      progress=False)
    report = api.quantize(str(tiny_llama), str(tiny_text_file), "rtn", "w4a16", "single", "cpu", tmp_path / "q",
                          device="cpu", eval_spec=EvalSpec(seqlen=64, windows=4), progress=False)
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["manifest.json", "plan.json", "plan.safetensors",
                                                                  "report.json"]
    assert report["eval"]["runtime"] == "torch-fakequant"
    # INT4 weights in groups of 64-wide rows (per channel here): close to, not equal to, float.
    assert report["eval"]["perplexity"] != fp["perplexity"]
    assert report["eval"]["perplexity"] == pytest.approx(fp["perplexity"], rel=0.05)
    assert Plan.load(tmp_path / "q").method == "rtn"


def test_simulated_freeact_path_matches_a_direct_formula():
    """x̃ = Q(((x / s)(P1 ⊗ P2)) ⊙ m_k; c_k) written out with dense matrices."""
    from freeact_export.config import FreeActSpec

    model = _model()
    record = calibrate(model, _windows(), TokenTypes.parse("sink=pos:3"), SPEC, progress=False)
    plan = build_plan(torch_weights(model), record, "freeact", "w4a8", progress=False, freeact=FreeActSpec(steps=3))
    group = plan.groups[0]
    masks = torch.ones(2, group.in_features)
    masks[0, :2] = 0.0  # the learner keeps masks only where they pay; here they are set by hand
    masks[1, 5:7] = 0.0
    group.tensors["masks"] = masks
    runner = SimulatedLogits(model, plan)
    t = {k: v.double() for k, v in group.tensors.items()}
    x = torch.randn(1, 6, group.in_features, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    types = torch.tensor([1, 1, 0, 0, 0, 1], dtype=torch.int32)
    runner.context.types = types
    got = runner.model.get_submodule(group.linears[0].name).path(x.float()).double()[0]
    dense = torch.kron(t["kron_1"], t["kron_2"])
    rows = []
    for i, k in enumerate(types.tolist()):
        y = (x[0, i] / t["smooth"]) @ dense * t["masks"][k]
        scale = y.abs().max() * t["clip"][k] / 127
        rows.append(torch.clamp(torch.round(y / scale), -128, 127) * scale)
    assert torch.allclose(got, torch.stack(rows), rtol=1e-3, atol=1e-3)


def test_the_plan_executes_what_freeact_learned():
    """The learner's objective, recomputed through the plan and the simulation modules, is the same."""
    from freeact_export.config import FreeActSpec

    model = _model()
    record = calibrate(model, _windows(), TokenTypes.parse("sink=pos:3"), SPEC, progress=False)
    spec = FreeActSpec(steps=20, type_weighting="equal")  # the objective written out below
    plan = build_plan(torch_weights(model), record, "freeact", "w4a4", progress=False, freeact=spec)
    runner = SimulatedLogits(model, plan)
    group = plan.groups[0]
    info = plan.info["learning"][0]  # what the learner reported for this group while building the plan
    assert info["group"] == group.name
    stats = record.stats[group.name]
    linears = [model.get_submodule(lin.name) for lin in group.linears]
    objective = 0.0
    for k, s in enumerate(stats):
        x = s.samples[None]
        runner.context.types = torch.full((x.shape[1],), k, dtype=torch.int32)
        sims = [runner.model.get_submodule(lin.name) for lin in group.linears]
        with torch.no_grad():
            out = torch.cat([sim(x)[0] for sim in sims], dim=1)
        target = x[0] @ torch.cat([lin.weight for lin in linears]).T.detach()
        objective += float((out - target).pow(2).mean() / target.pow(2).mean())
    assert objective == pytest.approx(info["objective_after"], rel=1e-3)


def _same_tensors(a: Plan, b: Plan) -> bool:
    return all(ga.tensors.keys() == gb.tensors.keys() and all(torch.equal(ga.tensors[k], gb.tensors[k])
                                                               for k in ga.tensors)
               for ga, gb in zip(a.groups, b.groups, strict=True))


def test_plans_are_reproducible_and_seeds_are_per_group():
    """The same call gives the same plan; groups draw different random signs; another seed, other signs."""
    from freeact_export.config import FreeActSpec

    model = _model()
    record = calibrate(model, _windows(), TokenTypes(), SPEC, progress=False)
    weights = torch_weights(model)
    plan, again = (build_plan(weights, record, "quarot", "w4a4", progress=False) for _ in range(2))
    assert _same_tensors(plan, again)
    signs = [g.tensors["signs"] for g in plan.groups]
    assert all(set(s.unique().tolist()) == {-1.0, 1.0} for s in signs)  # random ±1, not all one sign
    same_width = [(i, j) for i in range(len(signs)) for j in range(i) if len(signs[i]) == len(signs[j])]
    assert same_width and all(not torch.equal(signs[i], signs[j]) for i, j in same_width)
    other = build_plan(weights, record, "quarot", "w4a4", seed=1, progress=False)
    assert all(not torch.equal(a, b.tensors["signs"]) for a, b in zip(signs, other.groups, strict=True))
    # A learned plan too: its random start comes from the seed alone.
    spec = FreeActSpec(steps=2)
    learned, learned_again = (build_plan(weights, record, "freeact", "w4a4", progress=False, freeact=spec)
                              for _ in range(2))
    assert _same_tensors(learned, learned_again)
    assert not _same_tensors(learned, build_plan(weights, record, "freeact", "w4a4", seed=1, progress=False,
                                                 freeact=spec))
