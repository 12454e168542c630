"""Streamed export (traced without weights, each weight written from the shards) against the export of
the model held in memory, on tiny models of the real classes."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from safetensors.torch import load_file

from freeact_export import api
from freeact_export.config import CalibSpec, ExportSpec
from freeact_export.plan import Plan
from tiny_models import save_tiny_model

IDS = np.random.default_rng(0).integers(4, 300, size=(2, 12)).astype(np.int64)


def _logits(folder, past=None):
    feeds = {"input_ids": IDS, "attention_mask": np.ones_like(IDS)}
    session = ort.InferenceSession(str(folder / "model.onnx"))
    if past is not None:  # a decode step after `past` cached positions
        feeds["attention_mask"] = np.ones((2, past + IDS.shape[1]), dtype=np.int64)
        for value in session.get_inputs()[2:]:
            feeds[value.name] = np.random.default_rng(1).standard_normal((2, value.shape[1], past, value.shape[3]),
                                                                         dtype=np.float32)
    return session.run(None, feeds)


@pytest.mark.parametrize("arch, kv_cache", [("llama", False), ("qwen2", True), ("gemma3", False)])
def test_streamed_graph_computes_what_the_in_memory_export_computes(tmp_path, arch, kv_cache):
    """Same ONNX Runtime outputs bit for bit (logits, and the present keys/values with a KV cache); the
    streamed folder always keeps its weights in model.onnx.data and verifies against PyTorch the same way."""
    hf = save_tiny_model(arch, tmp_path / "hf")
    spec = ExportSpec(kv_cache=kv_cache)
    whole = api.export(str(hf), tmp_path / "whole", spec, stream="off")
    streamed = api.export(str(hf), tmp_path / "streamed", spec, stream="on")
    assert streamed["streamed"] and not whole["streamed"] and "model.onnx.data" in streamed["files"]
    assert json.loads((tmp_path / "streamed" / "export.json").read_text()) == streamed
    past = 3 if kv_cache else None
    for a, b in zip(_logits(tmp_path / "whole", past), _logits(tmp_path / "streamed", past), strict=True):
        assert np.array_equal(a, b)
    assert streamed["parity_vs_torch"]["max_abs_diff"] == whole["parity_vs_torch"]["max_abs_diff"]


def test_16_bit_graphs_hold_the_shards_values(tmp_path):
    """float16 and bfloat16: every linear weight in the graph is its shard tensor rounded to the dtype (and
    transposed for MatMul); float16 is verified by ONNX Runtime, bfloat16 is recorded as not verifiable."""
    hf = save_tiny_model("llama", tmp_path / "hf")
    shards = load_file(hf / "model.safetensors")
    for dtype, onnx_type in (("float16", onnx.TensorProto.FLOAT16), ("bfloat16", onnx.TensorProto.BFLOAT16)):
        record = api.export(str(hf), tmp_path / dtype, ExportSpec(dtype=dtype), stream="on")
        assert record["dtype"] == dtype and record["outputs"] == [f"logits [batch, sequence, vocab] {dtype}"]
        graph = onnx.load(tmp_path / dtype / "model.onnx").graph
        found = 0
        for init in graph.initializer:
            if init.data_type != onnx_type or len(init.dims) != 2:
                continue
            raw = numpy_helper.to_array(init)
            value = torch.from_numpy(raw.copy().view(np.uint16)).view(torch.bfloat16) if dtype == "bfloat16" else \
                torch.from_numpy(raw.copy())
            found += any(torch.equal(value.T, w.to(value.dtype)) for name, w in shards.items() if ".layers." in name
                         and w.shape == value.T.shape)
        assert found >= 7 * 2  # q, k, v, o, gate, up, down of both layers
        if dtype == "float16":
            assert record["parity_vs_torch"]["sqnr_db"] > 40
        else:
            assert "parity_vs_torch" not in record and "bfloat16" in record["verify_skipped"]


def test_the_rewrite_of_a_streamed_graph_is_the_rewrite_of_the_whole_export(tmp_path, tiny_text_file):
    """`freeact-export model.onnx` on the streamed graph: the same plan, code for code."""
    hf = save_tiny_model("llama", tmp_path / "hf")
    calib = CalibSpec(windows=4, seqlen=32, samples_per_type=64, min_tokens=4)
    plans = []
    for stream in ("off", "on"):
        api.export(str(hf), tmp_path / stream, ExportSpec(), stream=stream)
        api.rewrite_onnx(str(tmp_path / stream), tmp_path / f"{stream}-rewritten", corpus=str(tiny_text_file),
                         method="quarot+gptq", calib=calib, progress=False)
        plans.append(Plan.load(tmp_path / f"{stream}-rewritten" / "plan"))
    assert [g.name for g in plans[0].groups] and len(plans[0].groups) == len(plans[1].groups)
    for a, b in zip(plans[0].groups, plans[1].groups, strict=True):
        for la, lb in zip(a.linears, b.linears, strict=True):
            assert torch.equal(la.codes, lb.codes) and torch.equal(la.scale, lb.scale)
