"""`eval --runtime kernels`: a plan executed by the Triton kernels, here in Triton's interpreter.

A tiny model rewritten by `freeact-export MODEL.onnx` runs through the kernel runtime and through
its portable graph in ONNX Runtime on the same inputs. The kernels' activation codes must equal the
portable graph's in every group except at rounding ties (float order), and replaying the kernels'
codes in the simulation (parity/replay.py, as `check` judges the graphs) must pass: ties only,
then logits equal to float precision. Then the CLI's one-line refusals.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from rewritten_tiny import rewritten_tiny

from freeact_export.kernels import launch
from freeact_export.onnx_in.session import exact_session_options
from freeact_export.parity.check import _simulation, _tapped_session
from freeact_export.parity.replay import replay, runner_codes, tie_like
from freeact_export.rewrite.folder import PORTABLE_GRAPH, load_rewritten
from freeact_export.rewrite.graphs import codes_name
from freeact_export.runtime.kernel_model import Int4Linear, KernelLogits, QuantizeInput
from freeact_export.runtime.ort_lm import OrtLogits
from test_cli import assert_one_line_error, run_cli

interpreted = pytest.mark.skipif(not launch.interpreter_active(),
                                 reason="runs the kernels in Triton's interpreter (TRITON_INTERPRET=1)")


class _RecordingKernels:
    """KernelLogits that also returns every group's activation codes, as a graph's tapped outputs do."""

    def __init__(self, model, plan):
        self.runner = KernelLogits(model, plan)
        self.sources = [m for m in self.runner.model.modules() if isinstance(m, QuantizeInput)]
        self.codes: dict[int, torch.Tensor] = {}
        for index, source in enumerate(self.sources):
            compute = source.compute

            def recorded(x, index=index, compute=compute):
                out = compute(x)
                self.codes[index] = out[0]
                return out

            source.compute = recorded

    def __call__(self, feed: dict) -> dict:
        ids = feed["input_ids"]
        logits = self.runner(ids, feed.get("attention_mask")).numpy()
        return {"logits": logits, **{codes_name(i): c.reshape(*ids.shape, -1).numpy() for i, c in self.codes.items()}}


@pytest.fixture(scope="module", params=["w4a4", "w4a8", "w4a16"])
def rewritten(request, tmp_path_factory, tiny_text_file):
    """freeact-general on a tiny Llama (per-type factors where they pay, type rule sink=pos:3)."""
    root = tmp_path_factory.mktemp(f"kernels-{request.param}")
    return load_rewritten(rewritten_tiny(root, tiny_text_file, "llama", "freeact-general", request.param))


@interpreted
def test_the_kernels_compute_what_the_portable_graph_computes(rewritten):
    path, plan, _ = rewritten
    simulated, why_not = _simulation(path, plan)
    assert simulated is not None, why_not
    kernels = _RecordingKernels(copy.deepcopy(simulated.base_model), plan)
    modules = list(kernels.runner.model.modules())
    assert sum(isinstance(m, Int4Linear) for m in modules) == sum(len(g.linears) for g in plan.groups)
    assert len(kernels.sources) == (len(plan.groups) if plan.act_spec is not None else 0)

    rng = np.random.default_rng(1)
    ids = rng.integers(4, 384, (2, 40))
    mask = np.ones_like(ids)
    mask[1, 30:] = 0  # a padded row: its codes are not judged
    feed = OrtLogits(path / PORTABLE_GRAPH).feeds(ids, mask)
    groups = len(plan.groups) if plan.act_spec is not None else 0
    session = _tapped_session(path / PORTABLE_GRAPH, exact_session_options(), [codes_name(i) for i in range(groups)])()
    names = [o.name for o in session.get_outputs()]
    portable = dict(zip(names, session.run(None, feed), strict=True))
    ours = kernels(feed)

    packed = plan.act_spec is not None and plan.act_spec.bits == 4
    keep = mask.astype(bool)[..., None]
    for index in range(groups):  # directly: the kernels' codes against the portable graph's
        a, b = runner_codes(ours, index, packed), runner_codes(portable, index, False)
        differ = (a != b) & keep
        step = int(np.abs(a - b)[differ].max()) if differ.any() else 0
        assert not differ.any() or tie_like(int(differ.sum()), step, int(keep.sum()) * a.shape[-1]), \
            f"{plan.groups[index].name}: {int(differ.sum())} codes differ, up to {step} steps"
    record = replay(simulated, [feed], [ours], [g.name for g in plan.groups], packed, "kernels")
    assert record["passed"], record
    la, lb = ours["logits"][mask.astype(bool)], portable["logits"][mask.astype(bool)]
    sqnr = 10 * np.log10((lb.astype(np.float64) ** 2).sum() / max(((la - lb).astype(np.float64) ** 2).sum(), 1e-300))
    assert sqnr > 20  # for the record of what float order left: ties can move whole units of a W4A4 logit


@interpreted
def test_eval_runs_the_kernels_on_the_cpu(capsys, tmp_path, tiny_llama, tiny_text_file):
    """The CLI path: quantize a tiny model, then eval --runtime kernels --device cpu (interpreter)."""
    plan_dir = tmp_path / "plan"
    code, _, err = run_cli(capsys, "quantize", "--model", str(tiny_llama), "--corpus", str(tiny_text_file),
                           "--method", "quarot", "--bits", "w4a8", "--windows", "2", "--seqlen", "32",
                           "--calib-windows", "4", "--calib-seqlen", "48", "--types", "single", "-o", str(plan_dir))
    assert code == 0, err
    args = ("eval", "--plan", str(plan_dir), "--corpus", str(tiny_text_file), "--windows", "2", "--seqlen", "32",
            "--device", "cpu", "--json")
    code, _, err = run_cli(capsys, *args, str(tmp_path / "kernels.json"), "--runtime", "kernels")
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, str(tmp_path / "torch.json"), "--runtime", "torch")
    assert code == 0, err
    import json

    kernels, simulated = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("kernels", "torch"))
    assert abs(kernels["perplexity"] / simulated["perplexity"] - 1) < 0.02


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_eval_with_the_kernels_on_a_missing_gpu_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", "--plan", str(tmp_path), "--runtime", "kernels", "--device", "cuda")
    assert_one_line_error(code, err, "needs a usable CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_the_kernels_on_the_cpu_without_the_interpreter_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "freeact_export", "eval", "--plan", str(tmp_path), "--runtime",
                             "kernels"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TRITON_INTERPRET=1" in lines[0] and "Traceback" not in result.stderr


def test_eval_with_the_kernels_needs_a_plan(capsys):
    code, _, err = run_cli(capsys, "eval", "--model", "smollm2-135m", "--runtime", "kernels")
    assert_one_line_error(code, err, "give --plan DIR")


def test_eval_help_shows_the_kernels_runtime(capsys):
    from freeact_export.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--runtime {torch,kernels}" in out and "TRITON_INTERPRET=1" in out
