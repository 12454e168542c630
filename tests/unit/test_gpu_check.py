"""tools/gpu_check.sh's CPU-side parts: its verdict (a skipped GPU test fails it) and the real layers it carries.

On this machine (no CUDA) the script runs the GPU tests, which skip, and must fail saying so. The
summary is checked on JUnit files of a clean and a skipped run. tools/real_layers.py writes the
smollm2-135m layers the GPU test reads, and the same check passes on them here, in the interpreter.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_bounds import check_real_layers

from freeact_export.kernels import launch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_summary  # noqa: E402
import real_layers  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the verdict on a machine without a GPU")
def test_without_a_gpu_the_check_fails_and_says_why(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 1
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["passed"] is False and record["skipped"] >= 2 and record["device"]["gpu"] is None
    assert "a skip counts as a failure" in result.stdout and "no CUDA GPU" in result.stdout


def _junit(path: Path, cases: str) -> None:
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')


def test_the_summary_passes_only_when_every_test_ran_and_passed(tmp_path):
    ok = '<testcase classname="tests.gpu.a" name="t1"/><testcase classname="tests.gpu.a" name="t2"/>'
    _junit(tmp_path / "gpu_tests.xml", ok)
    assert gpu_summary.summarise(tmp_path, 0, 5, "0")["passed"]
    assert not gpu_summary.summarise(tmp_path, 0, 5, "1")["passed"]  # the benchmark failed
    _junit(tmp_path / "gpu_tests.xml", ok + '<testcase classname="tests.gpu.a" name="t3">'
           '<skipped message="no CUDA GPU here"/></testcase>')
    record = gpu_summary.summarise(tmp_path, 0, 5, "0")
    assert not record["passed"] and record["skipped"] == 1 and "no CUDA GPU here" in record["problems"][0]
    (tmp_path / "gpu_tests.xml").unlink()
    assert not gpu_summary.summarise(tmp_path, 124, 330, "0")["passed"]  # pytest timed out


@pytest.mark.real_model
@pytest.mark.skipif(not launch.interpreter_active(), reason="runs the kernels in Triton's interpreter")
def test_real_layers_are_written_and_pass_in_the_interpreter(tmp_path):
    """smollm2-135m's first and last layer (8 groups), as the GPU machine gets them (about 1 min)."""
    out = tmp_path / "real_layers.npz"
    assert real_layers.main(["--out", str(out), "--tokens", "64"]) == 0
    assert out.stat().st_size < 16 * 2**20
    assert check_real_layers(out, torch.device("cpu")) == 8
