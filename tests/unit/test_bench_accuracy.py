"""tools/bench_accuracy.py end to end on a tiny model: table, records and plot are written."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_writes_table_records_and_plot(tmp_path, tiny_llama, tiny_text_file):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_accuracy.py"), "--model", str(tiny_llama),
           "--corpus", str(tiny_text_file), "--methods", "rtn,quarot+gptq,freeact,freeact-general+gptq",
           "--bits", "w4a4", "--types", "sink=pos:1", "--types", "single", "--windows", "2", "--seqlen", "256",
           "--device", "cpu", "--clip-search", "--code-range", "full", "--act-order", "--steps", "20",
           "--out", str(out), "--checkpoint", str(tmp_path / "learned")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "bench_accuracy.json").read_text())
    assert results["freeact/w4a4"]["learning_spec"]["steps"] == 20  # --steps over the preset's
    # The extra rule adds rows only for the methods whose plan depends on the types.
    assert set(results) == {"fp", "rtn/w4a4", "quarot+gptq/w4a4", "freeact/w4a4", "freeact-general+gptq/w4a4",
                            "freeact[single]/w4a4", "freeact-general+gptq[single]/w4a4"}
    assert results["freeact/w4a4"]["types"] == "sink=pos:1"
    assert results["freeact[single]/w4a4"]["types"] == "single"
    assert results["freeact-general+gptq[single]/w4a4"]["method"] == "freeact-general+gptq"
    # The run's rounding reaches every cell; act-order only the +gptq ones.
    assert all(r["weights"]["clip_search"] and r["weights"]["code_range"] == "full"
               for k, r in results.items() if k != "fp")
    assert results["quarot+gptq/w4a4"]["weights"]["act_order"] and not results["rtn/w4a4"]["weights"]["act_order"]
    # Each cell ran in its own process: its own calibration, time and memory.
    assert all(r["calibration_s"] > 0 for k, r in results.items() if k != "fp")
    table = (out / "bench_accuracy.md").read_text()
    for row in ("| FP32 |", "| rtn |", "| quarot+gptq |", "| freeact |", "| freeact[single] |",
                "| freeact-general+gptq[single] |"):
        assert row in table
    assert (out / "bench_difficulty.png").stat().st_size > 10_000
    # Learned cells keep their groups; a +gptq cell shares its method's folder.
    folders = {p.name for p in (tmp_path / "learned").iterdir()}
    assert folders == {"seed0-freeact-w4a4", "seed0-freeact-general-w4a4", "seed0-freeact[single]-w4a4",
                       "seed0-freeact-general[single]-w4a4"}
    assert all(len(list((tmp_path / "learned" / f).glob("group-*.safetensors"))) == 8 for f in folders)


def test_bench_reports_w4a16_at_the_protocols_groups_at_32_and_per_channel(tmp_path, tiny_llama, tiny_text_file):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "tools" / "bench_accuracy.py"), "--model", str(tiny_llama),
           "--corpus", str(tiny_text_file), "--methods", "rtn", "--bits", "w4a16,w4a16-g32,w4a16-channel",
           "--windows", "2", "--seqlen", "256", "--device", "cpu", "--same-process", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "bench_accuracy.json").read_text())
    groups = {key: results[key]["weights"]["group_size"] for key in results if key != "fp"}
    assert groups == {"rtn/w4a16": None, "rtn/w4a16-g32": 32, "rtn/w4a16-channel": 0}
    table = (out / "bench_accuracy.md").read_text()
    assert "| method | W4A16 | W4A16 g32 | W4A16 per channel |" in table
    assert "weight rounding: standard" in table
