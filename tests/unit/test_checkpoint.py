"""A learning run stopped part-way resumes from its checkpoint and gives the uninterrupted plan."""

import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from freeact_export.calibrate.run import calibrate, calibration_windows
from freeact_export.config import CalibSpec, FreeActSpec
from freeact_export.errors import UserError
from freeact_export.quantize.planner import build_plan, learned_groups, torch_weights
from freeact_export.token_types import TokenTypes
from tiny_models import tiny_config

SPEC = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)
LEARNING = FreeActSpec(steps=6)


def _windows():
    ids = np.random.default_rng(0).integers(4, 384, 4000).tolist()
    return calibration_windows(ids, SPEC, None)


@pytest.fixture(scope="module")
def calibrated():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    return model, calibrate(model, _windows(), TokenTypes.parse("sink=pos:3"), SPEC, progress=False)


def _stopping_at(weights, record, index: int):
    """A weight source that fails like Ctrl-C when the planner reaches group `index`."""
    stop = record.groups[index].linears[0]

    def read(name):
        if name == stop:
            raise KeyboardInterrupt
        return weights(name)

    return read


def _assert_same_plan(a, b):
    assert [g.name for g in a.groups] == [g.name for g in b.groups]
    for ga, gb in zip(a.groups, b.groups, strict=True):
        assert ga.tensors.keys() == gb.tensors.keys()
        for key in ga.tensors:
            assert torch.equal(ga.tensors[key], gb.tensors[key]), (ga.name, key)
        for la, lb in zip(ga.linears, gb.linears, strict=True):
            assert torch.equal(la.codes, lb.codes) and torch.equal(la.scale, lb.scale), la.name
    assert a.info["learning"] == b.info["learning"]


def test_a_stopped_run_resumes_to_the_uninterrupted_plan(calibrated, tmp_path):
    model, record = calibrated
    weights = torch_weights(model)
    whole = build_plan(weights, record, "freeact-general", "w4a4", progress=False, freeact=LEARNING)
    folder = tmp_path / "learned"
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        build_plan(_stopping_at(weights, record, 5), record, "freeact-general", "w4a4", progress=False,
                   freeact=LEARNING, checkpoint=folder)
    interrupted_s = time.perf_counter() - start
    saved = sorted(folder.glob("group-*.safetensors"))
    assert len(saved) == 5  # the groups finished before the stop, each whole
    assert not list(folder.glob("*.partial"))
    stamps = {path: path.stat().st_mtime_ns for path in saved}
    resumed = build_plan(weights, record, "freeact-general", "w4a4", progress=False, freeact=LEARNING,
                         checkpoint=folder)
    _assert_same_plan(whole, resumed)
    assert resumed.info["groups_from_checkpoint"] == 5
    # The resumed run reports what its 5 saved groups took to learn, inside the stopped run's time.
    assert 0 < resumed.info["checkpoint_learn_s"] <= round(interrupted_s, 1)
    assert len(list(folder.glob("group-*.safetensors"))) == len(record.groups)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    # Saved groups are read back, not learned again: a mark written into one shows in the next plan.
    learned = learned_groups(folder, record, "freeact-general", "w4a4", 0, LEARNING)
    tensors, weight_clip, info = learned.load(0, record.groups[0].name)
    learned.save(0, tensors, weight_clip, {**info, "objective_after": -1.0}, learn_s=1000.0)
    again = build_plan(weights, record, "freeact-general", "w4a4", progress=False, freeact=LEARNING,
                       checkpoint=folder)
    assert again.info["learning"][0]["objective_after"] == -1.0
    assert again.info["checkpoint_learn_s"] >= 1000.0
    # +gptq quantizes the same learned transforms differently: it may share the folder.
    with_gptq = build_plan(weights, record, "freeact-general+gptq", "w4a4", progress=False, freeact=LEARNING,
                           checkpoint=folder)
    assert with_gptq.info["learning"] == again.info["learning"]
    # A group saved before learning times were kept still loads; the total is then unknown, not short.
    payload = {**tensors, "weight_clip": weight_clip}
    save_file(payload, str(folder / "group-0000.safetensors"), metadata={"info": json.dumps(info)})
    older = build_plan(weights, record, "freeact-general", "w4a4", progress=False, freeact=LEARNING,
                       checkpoint=folder)
    _assert_same_plan(whole, older)
    assert older.info["checkpoint_learn_s"] is None


def test_a_checkpoint_of_other_settings_is_refused(calibrated, tmp_path):
    model, record = calibrated
    folder = tmp_path / "learned"
    build_plan(torch_weights(model), record, "flatquant", "w4a4", progress=False, freeact=LEARNING,
               checkpoint=folder)
    with pytest.raises(UserError, match=r"other settings \(different seed\)"):
        build_plan(torch_weights(model), record, "flatquant", "w4a4", seed=1, progress=False, freeact=LEARNING,
                   checkpoint=folder)
    with pytest.raises(UserError, match=r"other settings \(different bits, learning\)"):
        build_plan(torch_weights(model), record, "flatquant", "w4a8", progress=False,
                   freeact=FreeActSpec(steps=7), checkpoint=folder)
    other_model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()  # other random weights
    other = calibrate(other_model, _windows(), TokenTypes.parse("sink=pos:3"), SPEC, progress=False)
    with pytest.raises(UserError, match=r"other settings \(different calibration statistics\)"):
        build_plan(torch_weights(other_model), other, "flatquant", "w4a4", progress=False, freeact=LEARNING,
                   checkpoint=folder)
    # a schedule the method does not use is not a setting of its groups: FlatQuant-style has no branch
    build_plan(torch_weights(model), record, "flatquant", "w4a4", progress=False,
               freeact=dataclasses.replace(LEARNING, branch_steps=3), checkpoint=folder)
    general = tmp_path / "general"
    build_plan(torch_weights(model), record, "freeact-general", "w4a4", progress=False, freeact=LEARNING,
               checkpoint=general)
    with pytest.raises(UserError, match=r"other settings \(different learning\)"):
        build_plan(torch_weights(model), record, "freeact-general", "w4a4", progress=False,
                   freeact=dataclasses.replace(LEARNING, branch_steps=3), checkpoint=general)
    with pytest.raises(UserError, match="does not exist; create it first"):
        build_plan(torch_weights(model), record, "flatquant", "w4a4", progress=False, freeact=LEARNING,
                   checkpoint=tmp_path / "missing" / "learned")


def test_the_cli_resumes_and_says_so(capsys, tiny_llama, tiny_text_file, tmp_path):
    from freeact_export.cli import main

    argv = ["quantize", "--model", str(tiny_llama), "--corpus", str(tiny_text_file), "--method", "flatquant",
            "--types", "single", "--calib-windows", "4", "--calib-seqlen", "48", "--steps", "2", "--no-eval",
            "--checkpoint", str(tmp_path / "learned")]
    assert main([*argv, "-o", str(tmp_path / "first")]) == 0
    assert "read from the checkpoint" not in capsys.readouterr().out
    assert main([*argv, "-o", str(tmp_path / "again")]) == 0
    groups = len(list((tmp_path / "learned").glob("group-*.safetensors")))
    assert groups > 0 and f"({groups} learned groups read from the checkpoint, learned earlier in " \
        in capsys.readouterr().out
    first, again = (tmp_path / name / "plan.safetensors" for name in ("first", "again"))
    assert first.read_bytes() == again.read_bytes()
