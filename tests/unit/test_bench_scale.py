"""tools/bench_scale.py: random models written a tensor at a time, each step measured in its own process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import bench_scale  # noqa: E402


def test_random_models_are_deterministic_and_load_as_the_shape_they_claim(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    for name in ("a", "b"):
        bench_scale.write_model("tiny", tmp_path / name, tokenizer)
    shards = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert shards and shards == sorted(p.name for p in (tmp_path / "b").glob("*.safetensors"))
    for shard in shards:
        a, b = load_file(str(tmp_path / "a" / shard)), load_file(str(tmp_path / "b" / shard))
        assert all(t.dtype == torch.bfloat16 and torch.equal(t, b[k]) for k, t in a.items())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    hidden, layers, heads, kv, ffn, vocab, _ = bench_scale.SIZES["tiny"]
    assert sum(p.numel() for p in model.parameters()) == bench_scale.parameter_count("tiny")
    assert model.model.layers[0].mlp.down_proj.weight.shape == (hidden, ffn) and len(model.model.layers) == layers
    assert (tmp_path / "a" / "tokenizer.json").is_file() and not list(tmp_path.glob(".*.partial"))


@pytest.mark.real_model
def test_each_step_is_measured_in_its_own_process_and_tabled(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "tools" / "bench_scale.py"), "--sizes", "tiny", "--models",
                    str(tmp_path / "models"), "--out", str(tmp_path / "out")], check=True, cwd=ROOT)
    records = json.loads((tmp_path / "out" / "bench_scale.json").read_text())
    assert set(records) == {"tiny/quantize", "tiny/eval", "tiny/export"}
    for record in records.values():
        assert record["peak_rss_gb"] > 0.1 and record["wall_s"] > 0  # a real process: torch alone takes more
    table = (tmp_path / "out" / "bench_scale.md").read_text()
    q = records["tiny/quantize"]
    assert f"{q['peak_rss_gb']:.1f} GB, {q['wall_s']:.0f} s" in table
    assert (tmp_path / "out" / "bench_scale.png").stat().st_size > 1000
