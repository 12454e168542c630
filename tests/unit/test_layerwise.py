"""Layer-by-layer quantization against the whole-model path, on tiny models of the real classes."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from freeact_export.api.layerwise import plan_layer_by_layer
from freeact_export.calibrate.run import calibrate
from freeact_export.calibrate.stats import TypeContext
from freeact_export.config import CalibSpec, FreeActSpec
from freeact_export.plan import Plan
from freeact_export.quantize.planner import build_plan, torch_weights
from freeact_export.simulate.fake_quant import apply_plan
from freeact_export.token_types import TokenTypes
from tiny_models import tiny_config

TYPES = TokenTypes.parse("sink=pos:1")
SPEC = CalibSpec(windows=3, seqlen=40, samples_per_type=30, min_tokens=1)
LEARNING = FreeActSpec(steps=3, batch_tokens=16)


def _model(arch):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch)).eval()


def _windows():
    return np.random.default_rng(0).integers(4, 384, size=(3, 40)).astype(np.int64)


def _assert_same_groups(a, b):
    assert [g.name for g in a] == [g.name for g in b]
    for ga, gb in zip(a, b, strict=True):
        assert ga.tensors.keys() == gb.tensors.keys()
        assert all(torch.equal(ga.tensors[k], gb.tensors[k]) for k in ga.tensors), ga.name
        for la, lb in zip(ga.linears, gb.linears, strict=True):
            assert torch.equal(la.codes, lb.codes) and torch.equal(la.scale, lb.scale), la.name


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("method", ["quarot+gptq", "freeact-general"])
def test_floating_point_propagation_gives_the_whole_model_plan(arch, method):
    model, windows = _model(arch), _windows()
    record = calibrate(model, windows, TYPES, SPEC, progress=False)
    whole = build_plan(torch_weights(model), record, method, "w4a4", 0, False, LEARNING)
    layered, massive, counts = plan_layer_by_layer(model, windows, TYPES, SPEC, method, "w4a4", freeact=LEARNING,
                                                   progress=False)
    _assert_same_groups(whole.groups, layered.groups)
    assert counts == record.type_token_counts()
    assert massive.positions == record.massive.positions and massive.token_ids == record.massive.token_ids
    assert layered.info.get("learning") == whole.info.get("learning")


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_quantized_propagation_calibrates_on_the_simulated_earlier_layers(arch):
    """Reference: the first layer's plan executed inside the whole model (simulate's apply_plan), then the
    whole-model calibration and plan of the second layer's groups (a method without seeded choices, so
    the groups' indices do not matter)."""
    model, windows = _model(arch), _windows()
    method = "smoothquant+gptq"
    layered, _, _ = plan_layer_by_layer(model, windows, TYPES, SPEC, method, "w4a4", propagate="quantized",
                                        progress=False)
    first = [g for g in layered.groups if ".layers.0." in g.name]
    second = [g for g in layered.groups if ".layers.1." in g.name]
    assert first and second and len(first) + len(second) == len(layered.groups)
    context = TypeContext(TYPES.num_types)
    simulated = apply_plan(model, Plan(method, "w4a4", layered.act_spec, layered.token_types, first, info={}),
                           context)
    # the simulated layer reads its window's token types where the deployed model computes them: from the ids
    simulated.get_input_embeddings().register_forward_pre_hook(
        lambda module, args: setattr(context, "types", TYPES.assign(args[0]).reshape(-1)))
    record = calibrate(simulated, windows, TYPES, SPEC, progress=False)  # layer 0's linears are simulated now
    reference = build_plan(torch_weights(simulated), record, method, "w4a4", 0, False)
    _assert_same_groups(reference.groups, second)
    whole = build_plan(torch_weights(model), calibrate(model, windows, TYPES, SPEC, progress=False), method,
                       "w4a4", 0, False)
    _assert_same_groups(whole.groups[:len(first)], first)  # the first layer sees the same inputs either way
    with pytest.raises(AssertionError):
        _assert_same_groups(whole.groups[len(first):], second)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_lazy_model_reads_each_layer_on_demand_and_computes_the_same_logits(tiny_folders, arch):
    from freeact_export.lazy_weights import LazyModel

    _, folders = tiny_folders
    reference = AutoModelForCausalLM.from_pretrained(folders[arch]).eval()
    lazy = LazyModel(folders[arch])
    in_layers = [p for n, p in lazy.model.named_parameters() if ".layers." in n]
    assert in_layers and all(p.device.type == "meta" for p in in_layers)
    tied = lazy.model.config.tie_word_embeddings
    assert (lazy.model.lm_head.weight.device.type == "meta") != tied  # an untied head is read for logits only
    lazy.load_head()
    assert all(p.device.type != "meta" for n, p in lazy.model.named_parameters() if ".layers." not in n)
    for index in range(len(lazy.layers)):
        lazy.load(index)
    ids = torch.arange(4, 60)[None]
    with torch.no_grad():
        assert torch.equal(lazy.model(ids).logits, reference(ids).logits)
    lazy.release(0)
    assert all(p.device.type == "meta" for p in lazy.layers[0].parameters())


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_layer_by_layer_evaluation_and_quantize_give_the_whole_model_figures(tiny_folders, tmp_path, arch):
    from freeact_export import api
    from freeact_export.config import EvalSpec

    root, folders = tiny_folders
    corpus, model, spec = str(root / "tiny.txt"), str(folders[arch]), EvalSpec(seqlen=64, windows=3)
    off = api.evaluate(model, corpus, spec, device="cpu", progress=False, layerwise="off")
    on = api.evaluate(model, corpus, spec, device="cpu", progress=False, layerwise="on")
    assert on["runtime"] == "torch-layerwise" and on["window_nll_means"] == off["window_nll_means"]
    calib = CalibSpec(windows=16, seqlen=32)
    reports = {lw: api.quantize(model, corpus, "quarot+gptq", "w4a4", calib=calib, eval_spec=spec, device="cpu",
                                progress=False, layerwise=lw, output=tmp_path / lw) for lw in ("off", "on")}
    assert reports["on"]["eval"]["runtime"] == "torch-fakequant-layerwise"
    assert reports["on"]["eval"]["window_nll_means"] == reports["off"]["eval"]["window_nll_means"]
    assert reports["on"]["massive_activations"] == reports["off"]["massive_activations"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["off", "on"]  # the spilled codes' folder is gone
    plans = {lw: Plan.load(tmp_path / lw) for lw in ("off", "on")}
    _assert_same_groups(plans["off"].groups, plans["on"].groups)
    # the plan from the layer-by-layer run, evaluated whole, and the other way round
    cross = api.evaluate(None, corpus, spec, device="cpu", progress=False, plan=tmp_path / "on", layerwise="off")
    assert cross["perplexity"] == reports["on"]["eval"]["perplexity"]


def test_a_damaged_or_incomplete_folder_is_refused_in_one_line(tiny_folders, tmp_path):
    import shutil

    from freeact_export.errors import UserError
    from freeact_export.lazy_weights import LazyModel

    _, folders = tiny_folders
    broken = tmp_path / "broken"
    shutil.copytree(folders["llama"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(UserError, match="model.safetensors") as err:
        LazyModel(broken)
    assert "\n" not in str(err.value)
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(folders["llama"], partial)
    tensors = load_file(str(partial / "model.safetensors"))
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, str(partial / "model.safetensors"), metadata={"format": "pt"})
    lazy = LazyModel(partial)
    lazy.load(0)
    with pytest.raises(UserError, match="lacks the model's tensor model.layers.1.mlp.down_proj.weight"):
        lazy.load(1)


def test_a_stopped_layer_by_layer_run_resumes_from_its_checkpoint(tmp_path):
    model, windows = _model("llama"), _windows()
    first, _, _ = plan_layer_by_layer(model, windows, TYPES, SPEC, "freeact-general", "w4a4", freeact=LEARNING,
                                      checkpoint=tmp_path / "ck", progress=False)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["layer-0000", "layer-0001"]
    assert first.info["groups_from_checkpoint"] == 0
    (tmp_path / "ck" / "layer-0001" / "group-0007.safetensors").unlink()  # the run stopped before the last group
    again, _, _ = plan_layer_by_layer(model, windows, TYPES, SPEC, "freeact-general", "w4a4", freeact=LEARNING,
                                      checkpoint=tmp_path / "ck", progress=False)
    assert again.info["groups_from_checkpoint"] == len(first.groups) - 1
    _assert_same_groups(first.groups, again.groups)
