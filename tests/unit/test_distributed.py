"""Quantizing with several processes (torch.distributed, gloo): the plan equals the single-process plan.

Two ranks on tiny models of the real classes, started the way torchrun starts them (its environment
variables) in spawned processes, and once through torchrun and the CLI.
"""

import json
import os
import pickle
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from test_layerwise import LEARNING, SPEC, TYPES, _assert_same_groups, _model, _windows

from freeact_export.api.layerwise import plan_layer_by_layer
from freeact_export.distributed import Ranks, finish
from freeact_export.plan import Plan


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, arch, method, propagate, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    ranks = Ranks.from_environment()
    plan, massive, counts = plan_layer_by_layer(_model(arch), _windows(), TYPES, SPEC, method, "w4a4",
                                                freeact=LEARNING, propagate=propagate, progress=False, ranks=ranks)
    with open(f"{out}.{rank}", "wb") as f:
        pickle.dump((plan.groups, plan.info.get("learning"), massive.positions, massive.token_ids, counts), f)
    finish(ranks)


@pytest.mark.parametrize("arch, method, propagate, world", [
    ("llama", "quarot+gptq", "fp", 2), ("gemma3", "freeact-general", "fp", 2),
    ("llama", "smoothquant+gptq", "quantized", 2), ("qwen2", "freeact-general", "fp", 3)])
def test_ranks_give_the_single_process_plan(tmp_path, arch, method, propagate, world):
    """Windows split w % N, groups split by size, statistics gathered in window order: every rank ends
    with the single-process plan, codes and scales bit for bit, and rank 0 with its massive tokens."""
    mp.spawn(_rank, args=(world, _free_port(), arch, method, propagate, str(tmp_path / "r")), nprocs=world)
    single, massive, counts = plan_layer_by_layer(_model(arch), _windows(), TYPES, SPEC, method, "w4a4",
                                                  freeact=LEARNING, propagate=propagate, progress=False)
    for rank in range(world):
        groups, learning, positions, token_ids, rank_counts = pickle.loads((tmp_path / f"r.{rank}").read_bytes())
        _assert_same_groups(single.groups, groups)
        assert learning == single.info.get("learning") and rank_counts == counts
    _, _, positions, token_ids, _ = pickle.loads((tmp_path / "r.0").read_bytes())
    assert (positions, token_ids) == (massive.positions, massive.token_ids)


def test_torchrun_quantize_writes_the_single_process_plan(tiny_folders, tmp_path):
    """`torchrun --nproc-per-node 2 -m freeact_export quantize` (2 gloo ranks): one plan folder, written by
    rank 0, equal to the single-process layer-by-layer folder's plan."""
    root, folders = tiny_folders
    common = ["quantize", "--model", str(folders["llama"]), "--corpus", str(root / "tiny.txt"), "--method",
              "quarot+gptq", "--windows", "3", "--seqlen", "64", "--calib-windows", "17", "--calib-seqlen", "32",
              "--layerwise", "on"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "freeact_export", *common, "-o", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(_free_port()), "-m", "freeact_export", *common,
                          "-o", str(tmp_path / "two")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = Plan.load(tmp_path / "one"), Plan.load(tmp_path / "two")
    _assert_same_groups(one.groups, two.groups)
    report_one = json.loads((tmp_path / "one" / "report.json").read_text())
    report_two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report_two["processes"] == 2
    assert report_two["eval"]["window_nll_means"] == report_one["eval"]["window_nll_means"]
    assert run.stdout.count("perplexity") == single.stdout.count("perplexity") == 1  # rank 0 reports
