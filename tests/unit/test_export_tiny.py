"""Export of tiny Llama / Qwen2 / Gemma3 models: ONNX Runtime must compute what PyTorch does."""

import json

import numpy as np
import onnx
import pytest

from freeact_export import api
from freeact_export.assets import resolve_model
from freeact_export.config import EvalSpec, ExportSpec
from freeact_export.files import MARKER
from freeact_export.models import load_torch_model
from freeact_export.parity.logits import compare_logits
from freeact_export.runtime.ort_lm import OrtLogits
from freeact_export.runtime.torch_lm import TorchLogits
from tiny_models import ARCHITECTURES, save_tiny_model

# fp32 through 2 layers: the two runtimes differ only in summation order (~1e-6 of |logit|);
# 1e-4 absolute leaves two orders of margin yet catches any wrong op (errors of 1e-2 and up).
LOGITS_ATOL = 1e-4


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    hf = save_tiny_model(request.param, root / "hf")
    record = api.export(str(hf), root / "onnx", ExportSpec())
    return request.param, hf, root / "onnx", record


def test_export_folder_and_record(exported):
    _, _, out, record = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(
        {"model.onnx", "export.json", "config.json", "tokenizer.json", "tokenizer_config.json", MARKER}
        | {p.name for p in out.iterdir() if p.name.startswith("special_tokens")})
    assert json.loads((out / "export.json").read_text()) == record
    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert all(dims), "batch and sequence must be symbolic"
    assert record["parity_vs_torch"]["max_abs_diff"] < LOGITS_ATOL


def test_dynamic_shapes_and_masked_batches_match_torch(exported):
    arch, hf, out, _ = exported
    torch_runner = TorchLogits(load_torch_model(resolve_model(str(hf))))
    ort_runner = OrtLogits(out / "model.onnx")
    gen = np.random.default_rng(1)
    batches = []
    for batch, length in [(1, 1), (3, 17), (2, 100)]:
        ids = gen.integers(4, 384, size=(batch, length))
        mask = np.ones_like(ids)
        mask[0, length // 2:] = 0  # right padding on the first row
        mask[0, 0] = 1
        batches.append((ids, mask))
    parity = compare_logits(torch_runner, ort_runner, batches)
    assert parity.max_abs_diff < LOGITS_ATOL
    assert parity.sqnr_db > 80


def test_onnx_perplexity_equals_torch(exported, tiny_text_file):
    arch, hf, out, _ = exported
    spec = EvalSpec(seqlen=64, windows=4)
    ref = api.evaluate(str(hf), str(tiny_text_file), spec, device="cpu", progress=False)
    got = api.evaluate(str(out), str(tiny_text_file), spec, device="cpu", progress=False)
    assert (ref["runtime"], got["runtime"]) == ("torch", "onnxruntime")
    assert got["windows"] == ref["windows"] == 4
    assert got["perplexity"] == pytest.approx(ref["perplexity"], rel=5e-3)  # the 0.5 %
    assert got["perplexity"] == pytest.approx(ref["perplexity"], rel=1e-5)  # what fp32 really gives
    assert got["bos_context"] == ref["bos_context"] == (arch == "gemma3")  # Gemma's tokenizer adds BOS


def test_external_data_always(tmp_path, tiny_llama):
    record = api.export(str(tiny_llama), tmp_path / "ext", ExportSpec(external_data="always", verify=True))
    assert record["files"] == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "ext" / "model.onnx.data").stat().st_size > (tmp_path / "ext" / "model.onnx").stat().st_size
    assert record["parity_vs_torch"]["max_abs_diff"] < LOGITS_ATOL
