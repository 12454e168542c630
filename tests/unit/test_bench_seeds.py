"""tools/bench_seeds.py on synthetic benchmark records (made-up perplexities: this tests the
statistics and the report, not any method)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _record(seed: int, windows: list[float]) -> dict:
    nll = float(np.mean(windows))
    return {"seed": seed, "eval": {"perplexity": math.exp(nll), "nll_mean": nll, "window_nll_means": windows}}


def _write(folder: Path, cells: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "bench_accuracy.json").write_text(json.dumps({"fp": {"perplexity": 10.0}, **cells}))
    return folder


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "bench_seeds.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_spread_and_paired_ratios_per_seed(tmp_path):
    a = {0: [3.0, 3.2, 2.9], 1: [3.1, 3.0, 3.0], 2: [2.8, 3.3, 3.1]}
    b = {0: [3.1, 3.1, 3.0], 1: [3.0, 3.2, 3.1], 2: [2.9, 3.2, 3.0]}
    x = "x[sink=pos:1]/w4a4"  # a rule row: its key holds ':' itself
    folders = [_write(tmp_path / f"s{s}", {x: _record(s, a[s]), "y/w4a4": _record(s, b[s])}) for s in a]
    out = tmp_path / "seeds.md"
    proc = _run(*folders, "--pair", f"{x}:y/w4a4", "--out", out)
    assert proc.returncode == 0, proc.stderr
    ppl = [math.exp(np.mean(a[s])) for s in a]
    assert f"{np.mean(ppl):.2f} ± {np.std(ppl, ddof=1):.2f}" in out.read_text()
    ratio_1 = math.exp(np.mean(a[1])) / math.exp(np.mean(b[1]))
    assert f"seed 1: {ratio_1:.3f} (2/3 windows lower)" in proc.stdout
    again = _run(*folders, "--out", out)  # never overwrites without --force
    assert again.returncode == 1 and "exists" in again.stderr


def test_bad_input_is_one_line(tmp_path):
    folder = _write(tmp_path / "s0", {"x/w4a4": _record(0, [3.0])})
    cases = ([tmp_path / "missing"], [folder, folder], [folder, "--pair", "x/w4a4:z/w4a4"], [folder, "--pair", "x"])
    for args in cases:
        proc = _run(*args)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
