"""Manifests of plan folders and rewritten folders: what they record, and every reader refusing a mismatch.

References are independent of freeact_export.manifest: hashes by hashlib over the files on disk,
model facts from the tiny models' configs and their loaded modules, codes flipped by hand.
"""

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from rewritten_tiny import rewritten_tiny
from transformers import AutoModelForCausalLM, LlamaConfig

from freeact_export import api
from freeact_export.errors import UserError
from freeact_export.parity.weights import require_graph_weights, verify_graph_weights
from freeact_export.plan import Plan
from freeact_export.rewrite.folder import load_rewritten
from freeact_export.simulate.fit import plan_mismatch
from test_cli import assert_one_line_error, run_cli
from tiny_models import save_tiny_model, tiny_config, tiny_tokenizer

AGAIN_PLAN = "write it again with 'freeact-export quantize ... -o DIR'"
AGAIN_FOLDER = "write the folder again with 'freeact-export MODEL.onnx -o DIR'"
EVAL = ("--windows", "1", "--seqlen", "16")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder):
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory, tiny_llama, tiny_text_file):
    out = tmp_path_factory.mktemp("plan") / "rtn-w4a8"
    api.quantize(str(tiny_llama), str(tiny_text_file), "rtn", "w4a8", "single", "cpu", out, device="cpu",
                 eval_spec=None, progress=False)
    return out


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory, tiny_text_file):
    return rewritten_tiny(tmp_path_factory.mktemp("manifest"), tiny_text_file, bits="w4a8")


@pytest.fixture
def copy_of(tmp_path):
    def copy(folder):
        target = tmp_path / folder.name
        shutil.copytree(folder, target)
        return target
    return copy


def _model_reference(hf_folder) -> dict:
    """Architecture, layer count and every block linear's weight shape, read from the loaded model."""
    model = AutoModelForCausalLM.from_pretrained(hf_folder)
    shapes = {name: list(m.weight.shape) for name, m in model.named_modules()
              if name.startswith("model.layers.") and hasattr(m, "weight") and m.weight.dim() == 2}
    return {"architecture": type(model).__name__, "num_layers": model.config.num_hidden_layers, "shapes": shapes}


def _check_facts(recorded: dict, reference: dict) -> None:
    assert recorded["architecture"] == reference["architecture"] == "LlamaForCausalLM"
    assert recorded["num_layers"] == reference["num_layers"] == tiny_config("llama").num_hidden_layers
    assert recorded["num_groups"] == len(recorded["groups"]) == 4 * reference["num_layers"]
    linears = {lin["name"]: lin["weight_shape"] for g in recorded["groups"] for lin in g["linears"]}
    assert linears == reference["shapes"]  # every block linear, none left out, none invented
    for group in recorded["groups"]:
        assert {lin["weight_shape"][1] for lin in group["linears"]} == {group["in_features"]}


def test_a_plan_folder_records_its_model_and_every_file(plan_dir, tiny_llama):
    manifest = _manifest(plan_dir)
    assert (manifest["format"], manifest["schema_version"]) == ("freeact-export plan", 1)
    _check_facts(manifest["model"], _model_reference(tiny_llama))
    assert set(manifest["files"]) == _files(plan_dir) == {"plan.json", "plan.safetensors", "report.json"}
    for name, entry in manifest["files"].items():
        assert entry == {"bytes": (plan_dir / name).stat().st_size, "sha256": _sha256(plan_dir / name)}
    assert Plan.load(plan_dir).model == {"architecture": "LlamaForCausalLM", "num_layers": 2}


def test_a_rewritten_folder_records_its_model_and_every_file(rewritten):
    manifest = _manifest(rewritten)
    assert (manifest["format"], manifest["schema_version"]) == ("freeact-export rewritten folder", 1)
    _check_facts(manifest["model"], _model_reference(rewritten.parent / "llama-hf"))
    assert {"plugin.onnx", "portable.onnx", "plan/plan.json", "plan/plan.safetensors", "report.json",
            "source.json", "tokenizer.json"} <= set(manifest["files"])
    assert set(manifest["files"]) == _files(rewritten)
    for name, entry in manifest["files"].items():
        assert entry == {"bytes": (rewritten / name).stat().st_size, "sha256": _sha256(rewritten / name)}
    assert not (rewritten / "plan" / "manifest.json").exists()  # the folder's manifest covers plan/


def test_a_plan_cut_short_is_refused(capsys, plan_dir, copy_of, tiny_text_file):
    code, out, _ = run_cli(capsys, "eval", "--plan", str(plan_dir), "--corpus", str(tiny_text_file), *EVAL)
    assert code == 0 and "perplexity" in out  # the intact plan runs
    folder = copy_of(plan_dir)
    schema = json.loads((folder / "plan.json").read_text())
    schema["groups"] = schema["groups"][:5]
    (folder / "plan.json").write_text(json.dumps(schema, indent=2) + "\n")
    code, out, err = run_cli(capsys, "eval", "--plan", str(folder), "--corpus", str(tiny_text_file), *EVAL)
    assert_one_line_error(code, err, f"{folder / 'plan.json'} does not match its manifest (")
    assert AGAIN_PLAN in err and "perplexity" not in out


def test_a_plan_tensor_file_changed_in_place_is_refused(plan_dir, copy_of):
    folder = copy_of(plan_dir)
    data = bytearray((folder / "plan.safetensors").read_bytes())
    data[-1] ^= 0x01  # same size: only the hash can tell
    (folder / "plan.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"plan\.safetensors does not match its manifest \(sha256 differs\)"):
        Plan.load(folder)


def test_a_hand_edited_manifest_must_still_describe_the_plan(plan_dir, copy_of):
    folder = copy_of(plan_dir)
    manifest = _manifest(folder)
    manifest["model"]["groups"] = manifest["model"]["groups"][:5]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="records other layers than the plan holds"):
        Plan.load(folder)


@pytest.mark.parametrize("kind", ["plan", "rewritten"])
def test_a_folder_without_a_manifest_is_refused(capsys, plan_dir, rewritten, copy_of, tiny_text_file, kind):
    folder = copy_of(plan_dir if kind == "plan" else rewritten)
    (folder / "manifest.json").unlink()
    if kind == "plan":
        code, _, err = run_cli(capsys, "eval", "--plan", str(folder), "--corpus", str(tiny_text_file), *EVAL)
        assert_one_line_error(code, err, f"{folder} has no manifest.json (written by an older freeact-export")
        assert AGAIN_PLAN in err
    else:
        for command in ("check", "triton", "build", "bundle"):
            output = [] if command == "check" else ["-o", str(folder.parent / "out")]
            code, _, err = run_cli(capsys, command, str(folder), *output)
            assert_one_line_error(code, err, f"{folder} has no manifest.json")
            assert AGAIN_FOLDER in err
        assert not (folder.parent / "out").exists()


def test_a_manifest_of_another_schema_is_refused(rewritten, copy_of):
    folder = copy_of(rewritten)
    manifest = _manifest(folder)
    manifest["schema_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="has schema version 99, this freeact-export reads 1"):
        load_rewritten(folder)


def _other_model(root, **change):
    """A tiny Llama differing from the plan's by `change` (a config field), or a tiny Qwen2."""
    if change.pop("arch", None) == "qwen2":
        return save_tiny_model("qwen2", root / "qwen2")
    config = LlamaConfig(**{**tiny_config("llama").to_dict(), **change})
    folder = root / "-".join(f"{k}{v}" for k, v in change.items())
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer(adds_bos=False).save_pretrained(folder)
    return folder


# What differs, as the configs say it: layer count, a group's in_features, a linear's weight shape.
OTHER_MODELS = {
    "qwen2": ({"arch": "qwen2"}, "architecture: the plan's LlamaForCausalLM, the model's Qwen2ForCausalLM"),
    "fewer layers": ({"num_hidden_layers": 1}, "layer count: the plan's 2, the model's 1"),
    "more layers": ({"num_hidden_layers": 3}, "layer count: the plan's 2, the model's 3"),
    "wider": ({"hidden_size": 128}, "in_features of group model.layers.0.self_attn.q_proj+k_proj+v_proj: "
                                    "the plan's 64, the model's 128"),
    "wider mlp": ({"intermediate_size": 256}, "weight shape of model.layers.0.mlp.gate_proj: the plan's [128, 64], "
                                              "the model's [256, 64]"),
}


@pytest.mark.parametrize("case", OTHER_MODELS)
def test_a_plan_on_another_model_names_what_differs(capsys, plan_dir, tmp_path, tiny_text_file, case):
    change, fragment = OTHER_MODELS[case]
    other = _other_model(tmp_path, **dict(change))
    capsys.readouterr()  # the models' own progress bars
    code, out, err = run_cli(capsys, "eval", "--plan", str(plan_dir), "--model", str(other),
                             "--corpus", str(tiny_text_file), *EVAL)
    assert_one_line_error(code, err, f"the plan in {plan_dir} (made for ")
    assert f"does not fit {other} ({fragment});" in err and "perplexity" not in out


def test_without_recorded_facts_the_layers_themselves_are_compared(plan_dir, tmp_path):
    """A plan held in memory without its model facts still refuses a model that lacks its layers."""
    plan = Plan.load(plan_dir)
    plan.model = {}
    fewer = AutoModelForCausalLM.from_pretrained(_other_model(tmp_path, num_hidden_layers=1))
    assert plan_mismatch(fewer, plan) == "layer model.layers.1.self_attn.q_proj: the model has no linear layer " \
                                         "of that name"
    same = AutoModelForCausalLM.from_config(tiny_config("llama"))
    assert plan_mismatch(same, Plan.load(plan_dir)) is None


def test_the_float_model_in_place_of_the_portable_graph_is_refused(capsys, rewritten, copy_of):
    folder = copy_of(rewritten)
    shutil.copy2(rewritten.parent / "llama-onnx" / "model.onnx", folder / "portable.onnx")
    for command in ("triton", "check", "build", "bundle"):
        output = [] if command == "check" else ["-o", str(folder.parent / "out")]
        code, _, err = run_cli(capsys, command, str(folder), *output)
        assert_one_line_error(code, err, f"{folder / 'portable.onnx'} does not match its manifest (")
        assert AGAIN_FOLDER in err
    assert not (folder.parent / "out").exists()


def test_plan_bits_changed_in_a_rewritten_folder_are_refused(capsys, rewritten, copy_of):
    folder = copy_of(rewritten)
    schema = json.loads((folder / "plan" / "plan.json").read_text())
    assert schema["act_spec"]["bits"] == 8
    schema["act_spec"]["bits"] = 4
    (folder / "plan" / "plan.json").write_text(json.dumps(schema, indent=2) + "\n")
    for command in ("check", "triton"):
        output = [] if command == "check" else ["-o", str(folder.parent / "out")]
        code, _, err = run_cli(capsys, command, str(folder), *output)
        assert_one_line_error(code, err, f"{folder / 'plan' / 'plan.json'} does not match its manifest (sha256 "
                                         "differs): the folder was changed after it was written")
        assert AGAIN_FOLDER in err
    with pytest.raises(UserError, match="plan.json does not match its manifest"):
        Plan.load(folder / "plan")  # the plan/ alone is verified against the folder's manifest too


def _flip_plugin_codes(folder, group: int, linear: int) -> None:
    graph = onnx.load(str(folder / "plugin.onnx"))
    init = next(i for i in graph.graph.initializer if i.name == f"freeact/g{group}/l{linear}/weight")
    packed = onnx.numpy_helper.to_array(init)
    flipped = (packed.view(np.uint8) ^ np.uint8(0x11)).view(packed.dtype)  # both codes of every byte
    init.CopyFrom(onnx.numpy_helper.from_array(flipped, init.name))
    onnx.save(graph, str(folder / "plugin.onnx"))


def test_graph_weights_name_the_first_layer_whose_codes_differ(rewritten, copy_of):
    _, plan, _ = load_rewritten(rewritten)
    layers = sum(len(g.linears) for g in plan.groups)
    intact = verify_graph_weights(rewritten, plan)
    assert intact == {name: {"layers_checked": layers, "layers_different": 0, "first_different": None}
                      for name in ("plugin.onnx", "portable.onnx")}
    folder = copy_of(rewritten)
    _flip_plugin_codes(folder, 2, 1)  # layer 0's up_proj
    _flip_plugin_codes(folder, 4, 0)  # layer 1's q_proj
    record = verify_graph_weights(folder, plan)
    expected = f"{plan.groups[2].name} / {plan.groups[2].linears[1].name}"
    assert record["plugin.onnx"] == {"layers_checked": layers, "layers_different": 2, "first_different": expected}
    assert record["portable.onnx"]["layers_different"] == 0
    with pytest.raises(UserError) as info:
        require_graph_weights(folder, plan)
    assert str(info.value).startswith(f"{folder / 'plugin.onnx'} does not hold the plan's INT4 weights: the codes "
                                      f"of {expected} differ (2 of {layers} layers differ)")
    # The manifest refuses the folder before any of this runs.
    with pytest.raises(UserError, match="plugin.onnx does not match its manifest"):
        load_rewritten(folder)


def test_the_float_model_holds_none_of_the_plans_weights(rewritten, copy_of):
    _, plan, _ = load_rewritten(rewritten)
    folder = copy_of(rewritten)
    shutil.copy2(rewritten.parent / "llama-onnx" / "model.onnx", folder / "portable.onnx")
    record = verify_graph_weights(folder, plan)["portable.onnx"]
    assert record["layers_different"] == record["layers_checked"]
    assert record["first_different"] == f"{plan.groups[0].name} / {plan.groups[0].linears[0].name}"


def test_an_engine_named_explicitly_must_exist(capsys, rewritten, copy_of, tmp_path, tiny_text_file):
    folder = copy_of(rewritten)
    missing, empty = tmp_path / "nonexistent", tmp_path / "empty-engine"
    empty.mkdir()
    for engine, fragment in ((missing, f"the engine {missing} (--engine) does not exist"),
                             (empty, f"no TensorRT engine in {empty} (needs model.plan and build.json)")):
        code, out, err = run_cli(capsys, "check", str(folder), "--no-eval", "--corpus", str(tiny_text_file),
                                 "--engine", str(engine))
        # check.py refuses at its TensorRT step, after the source model's load bar: the last line is the error
        assert code == 1 and "check passed" not in out and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith(f"freeact-export: error: {fragment}")
    assert not (folder / "check").exists()
