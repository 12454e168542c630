"""tools/bench_kernels.py without a GPU: arguments, traffic arithmetic, table and plot from a results dict.

The timing records below are SYNTHETIC (made-up numbers chosen to make the arithmetic easy to
check): these tests check formatting and arithmetic, not performance.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_kernels", ROOT / "tools" / "bench_kernels.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def synthetic_results() -> dict:
    """A made-up run: two shapes x two token counts; torch int4 refused one shape."""
    records = []
    for k, n in ((576, 1536), (4096, 4096)):
        for tokens in (1, 128):
            times = {"fp16": 0.020, "fp8": 0.012, "torch_int4": 0.010, "int4_matmul": 0.005, "freeact_quantize": 0.002,
                     "pair": 0.008}
            for op in bench.OPS:
                rec = {"k": k, "n": n, "tokens": tokens, "op": op, "bytes": 10**6, "operations": 10**9}
                if op == "torch_int4" and k == 576:
                    rec["error"] = "RuntimeError: synthetic refusal"
                else:
                    rec.update(median_ms=times[op], times_ms=[times[op]] * 3)
                records.append(rec)
    return {"gpu": "SYNTHETIC GPU (no measurement)", "capability": "sm_90", "torch": "x", "cuda": "y",
            "copy_gbps": 2000.0, "l2_bytes": 50 * 2**20, "flush_bytes": 128 * 2**20, "iters": 3, "warmup": 1,
            "act_bits": 4, "records": records}


def _documented_defaults(capsys, monkeypatch) -> dict:
    """The defaults as `--help` states them, read from the printed text and parsed here (not from the module)."""
    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping inside the values
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())

    def find(pattern: str) -> tuple[str, ...]:
        match = re.search(pattern, text)
        assert match, f"--help no longer documents {pattern!r}:\n{text}"
        return match.groups()

    def shapes(spec: str) -> tuple[tuple[int, int], ...]:
        return tuple((int(k), int(n)) for k, n in (item.split("x") for item in spec.split(",")))

    (shapes_text,) = find(r"--shapes SHAPES KxN,\.\.\. \(default: ([0-9x,]+)\)")
    (tokens_text,) = find(r"--tokens TOKENS token counts \(default: ([0-9,]+)\)")
    iters, quick_iters = find(r"--iters ITERS timed iterations per measurement \(default: (\d+); --quick (\d+)\)")
    quick_shape, quick_tokens, quick_iters_again = find(r"--quick smoke run: (\d+x\d+) at \(([0-9, ]+)\) tokens, "
                                                        r"(\d+) iterations")
    (warmup,) = find(r"--warmup WARMUP untimed iterations first \(default: (\d+)\)")
    (act_bits,) = find(r"--act-bits \{4,8\} activation codes \(default: (\d+)\)")
    assert quick_iters == quick_iters_again  # the two places that state --quick's iterations agree
    return {"shapes_text": shapes_text, "tokens_text": tokens_text, "shapes": shapes(shapes_text),
            "tokens": tuple(int(t) for t in tokens_text.split(",")), "iters": int(iters),
            "quick_shapes": shapes(quick_shape), "quick_tokens": tuple(int(t) for t in quick_tokens.split(",")),
            "quick_iters": int(quick_iters), "warmup": int(warmup), "act_bits": int(act_bits)}


def test_defaults_are_what_help_documents(capsys, monkeypatch):
    doc = _documented_defaults(capsys, monkeypatch)
    args = bench.parse_args(["--out", "o"])
    assert (args.shapes, args.tokens, args.iters, args.warmup, args.act_bits, args.quick) == (
        doc["shapes"], doc["tokens"], doc["iters"], doc["warmup"], doc["act_bits"], False)
    quick = bench.parse_args(["--out", "o", "--quick"])
    assert (quick.shapes, quick.tokens, quick.iters, quick.warmup) == (
        doc["quick_shapes"], doc["quick_tokens"], doc["quick_iters"], doc["warmup"])
    # The documented default spelled out on the command line gives the same run as leaving it out.
    spelled = bench.parse_args(["--out", "o", "--shapes", doc["shapes_text"], "--tokens", doc["tokens_text"],
                                "--iters", str(doc["iters"]), "--warmup", str(doc["warmup"]),
                                "--act-bits", str(doc["act_bits"])])
    assert vars(spelled) == vars(args)
    # --quick is a smaller run than the default, and every documented shape is a valid one (even K).
    assert set(doc["quick_shapes"]) <= set(doc["shapes"]) and set(doc["quick_tokens"]) <= set(doc["tokens"])
    assert doc["quick_iters"] < doc["iters"] and all(k % 2 == 0 for k, _ in doc["shapes"])


def test_arguments_overrides_and_rejections():
    custom = bench.parse_args(["--out", "o", "--shapes", "576x1536,14336x4096", "--tokens", "1,2048", "--iters", "7"])
    assert custom.shapes == ((576, 1536), (14336, 4096)) and custom.tokens == (1, 2048) and custom.iters == 7
    # Explicit values win over --quick's.
    quick = bench.parse_args(["--out", "o", "--quick", "--shapes", "64x32", "--tokens", "3", "--iters", "2"])
    assert (quick.shapes, quick.tokens, quick.iters) == (((64, 32),), (3,), 2)
    for bad in (["--shapes", "576by1536"], ["--shapes", "575x1536"], ["--shapes", "0x1536"], ["--tokens", "0"],
                ["--tokens", "1,x"], ["--iters", "-1"], ["--warmup", "-1"], ["--act-bits", "3"]):
        with pytest.raises(SystemExit):
            bench.parse_args(["--out", "o", *bad])


def test_traffic_and_operations_arithmetic():
    # fp16 GEMM: x [1, 4096], W [4096, 4096], y [1, 4096], 2 bytes each.
    assert bench.traffic_bytes("fp16", 4096, 4096, 1) == 2 * (4096 + 4096 * 4096 + 4096)
    # Int4MatMul: half a byte per weight, fp32 scale per channel, packed codes + fp32 token scale, fp16 y.
    assert bench.traffic_bytes("int4_matmul", 4096, 4096, 1) == 4096 * 2048 + 4096 * 4 + (2048 + 4) + 4096 * 2
    assert bench.traffic_bytes("int4_matmul", 4096, 4096, 1, act_bits=8) == (4096 * 2048 + 4096 * 4 + (4096 + 4)
                                                                             + 4096 * 2)
    assert bench.traffic_bytes("pair", 576, 1536, 16, 4, 24, 24) == (
        bench.traffic_bytes("freeact_quantize", 576, 1536, 16, 4, 24, 24)
        + bench.traffic_bytes("int4_matmul", 576, 1536, 16, 4, 24, 24))
    assert bench.operations("int4_matmul", 4096, 14336, 128) == 2 * 128 * 4096 * 14336
    assert bench.operations("freeact_quantize", 4096, 14336, 128, 64, 64) == 2 * 128 * 4096 * 128
    assert bench.torch_int4_group(4096) == 128 and bench.torch_int4_group(576) == 64


def test_derived_figures_from_synthetic_records():
    rows = bench.derive(synthetic_results())
    assert [(r["k"], r["n"], r["tokens"]) for r in rows] == [(576, 1536, 1), (576, 1536, 128), (4096, 4096, 1),
                                                             (4096, 4096, 128)]
    big = rows[-1]
    assert big["int4_matmul_vs_fp16"] == pytest.approx(4.0)
    assert big["pair_vs_fp16"] == pytest.approx(2.5)
    assert big["int4_matmul_vs_torch_int4"] == pytest.approx(2.0)
    mm = big["ops"]["int4_matmul"]
    assert mm["gbps"] == pytest.approx(10**6 / 5e-6 / 1e9)  # 200 GB/s
    assert mm["copy_fraction"] == pytest.approx(0.1)
    assert mm["tops"] == pytest.approx(10**9 / 5e-6 / 1e12)
    assert "int4_matmul_vs_torch_int4" not in rows[0] and rows[0]["ops"]["torch_int4"] == {
        "error": "RuntimeError: synthetic refusal"}


def test_table_json_and_plot_are_written_with_the_gpu_name(tmp_path):
    results = synthetic_results()
    paths = bench.write_outputs(results, tmp_path / "out")
    assert [p.name for p in paths] == ["bench_kernels.json", "bench_kernels.md", "bench_kernels.png"]
    table = paths[1].read_text()
    assert "SYNTHETIC GPU (no measurement)" in table
    assert ("| 4096 x 4096 | 128 | 20.0 | 12.0 | 10.0 | 5.0 | 2.0 | 8.0 | 4.00x | 2.50x | 2.40x | 2.00x | 200 (10 %) "
            "| 500 (25 %) | 200.0 |") in table
    assert "| 576 x 1536 | 1 | 20.0 | 12.0 | n/a |" in table
    assert "n/a: torch int4 (W4A16): RuntimeError: synthetic refusal" in table
    saved = json.loads(paths[0].read_text())
    assert saved["gpu"] == results["gpu"] and len(saved["rows"]) == 4
    assert paths[2].stat().st_size > 10_000


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_kernels.py"), "--quick", "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "bench_kernels: no CUDA GPU here (torch.cuda.is_available() is False); the kernel benchmark needs one"]
    assert not (tmp_path / "b").exists()
