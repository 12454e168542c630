"""The ONNX-in path on tiny models: plugin graph rules, portable graph, three-way parity, bad input."""

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
import torch

from freeact_export import api
from freeact_export.api import rewrite_onnx
from freeact_export.cli import main
from freeact_export.config import CalibSpec, EvalSpec, ExportSpec, FreeActSpec, WeightOptions
from freeact_export.onnx_in.graph import load_onnx
from freeact_export.ops import schema
from freeact_export.parity.check import check
from freeact_export.plan import Plan
from freeact_export.rewrite.op_tensors import _hadamard_kron
from freeact_export.rewrite.type_graph import token_types_tensor
from freeact_export.token_types import TokenTypes
from freeact_export.transforms.hadamard import hadamard
from test_cli import assert_one_line_error
from tiny_models import save_tiny_model

CALIB = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)
CHECK_EVAL = EvalSpec(seqlen=64, windows=4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tiny Llama (prefill graph, weights in an external data file) and tiny Qwen2 (KV-cache inputs
    and outputs), from our exporter."""
    root = tmp_path_factory.mktemp("rewrite")
    graphs = {}
    for arch, kv in (("llama", False), ("qwen2", True)):
        hf = save_tiny_model(arch, root / f"{arch}-hf")
        api.export(str(hf), root / f"{arch}-onnx", ExportSpec(kv_cache=kv, external_data="never" if kv else "always"))
        graphs[arch] = root / f"{arch}-onnx"
    return root, graphs


def _rewrite(exported, tiny_text_file, arch, method, bits, name, rounding=WeightOptions()):
    root, graphs = exported
    out = root / name
    if not out.exists():
        rewrite_onnx(str(graphs[arch]), out, corpus=str(tiny_text_file), method=method, bits=bits,
                     types="sink=pos:3", calib=CALIB, freeact=FreeActSpec(steps=6), progress=False, rounding=rounding)
    return out


# Every code used and signed scales (the extreme on -8, ONNX Runtime's rule), searched clips, act-order.
ROUNDED = WeightOptions(clip_search=True, code_range="full", act_order=True)


@pytest.mark.parametrize(("arch", "method", "bits", "rounding"), [
    ("llama", "freeact", "w4a4", WeightOptions()), ("qwen2", "smoothrot+gptq", "w4a8", WeightOptions()),
    ("llama", "rtn", "w4a16", WeightOptions()), ("qwen2", "freeact-general", "w4a4", WeightOptions()),
    ("llama", "quarot+gptq", "w4a8", ROUNDED), ("qwen2", "quarot+gptq", "w4a16", ROUNDED)])
def test_three_way_parity(exported, tiny_text_file, arch, method, bits, rounding):
    name = "-".join(filter(None, (arch, method, bits, rounding.label())))  # shared with the tests below
    out = _rewrite(exported, tiny_text_file, arch, method, bits, name, rounding)
    plan = Plan.load(out / "plan")
    if rounding.code_range == "full":  # signed scales reach all three runners
        assert all(g.weight_spec.code_range == "full" for g in plan.groups)
        assert any((lin.scale < 0).any() for g in plan.groups for lin in g.linears)
    if method == "freeact-general":  # the per-type factors reach all three runners (portable: one branch per type)
        assert any("type_kron_1" in g.tensors for g in plan.groups)
    record = check(out, corpus=str(tiny_text_file), eval_spec=CHECK_EVAL, progress=False)
    assert record["passed"], json.dumps(record, indent=1)
    assert record["runners"] == ["simulation", "plugin", "portable"]
    assert [c["pair"] for c in record["comparisons"]] == [["simulation", "plugin"], ["simulation", "portable"]]
    for comparison in record["comparisons"]:
        assert comparison["first_diverging"] is None
        # Whatever ties this CPU's float order decided the other way were replayed, each a code off by one
        # within float rounding of its boundary; then every code agrees and the logits to float precision.
        assert all(t["max_code_difference"] == 1 and t["max_tie_room"] < 1e-3 for t in comparison["replayed"])
        assert comparison["replayed_logits_sqnr_db"] > 100
    perplexity = record["perplexity"]
    assert perplexity["passed"] and abs(perplexity["log_ratio_to_references"]) <= perplexity["tolerance_log_ratio"]
    assert all(w["layers_different"] == 0 and w["layers_checked"] == 7 * 2 for w in record["weights"].values())
    assert (out / "check" / "inputs.json").is_file() and (out / "check" / "outputs.json").is_file()
    if arch == "llama":
        assert (exported[1]["llama"] / "model.onnx.data").is_file()  # calibrated and rewritten from external data


def test_plugin_graph_follows_the_parser_rules_and_the_schemas(exported, tiny_text_file):
    out = _rewrite(exported, tiny_text_file, "llama", "freeact", "w4a4", "llama-freeact-w4a4")
    plugin = onnx.load(str(out / "plugin.onnx"))
    onnx.checker.check_model(plugin)
    types = schema.graph_value_types(plugin.graph)
    custom = [n for n in plugin.graph.node if n.op_type in schema.SCHEMAS]
    assert [n.op_type for n in custom].count("FreeActQuantize") == 4 * 2  # one per group
    assert [n.op_type for n in custom].count("Int4MatMul") == 7 * 2  # one per linear
    for node in custom:
        schema.check_node(node, types)
        assert {a.name: a.s.decode() for a in node.attribute if a.name.startswith("plugin_")} == {
            "plugin_version": schema.PLUGIN_VERSION, "plugin_namespace": schema.PLUGIN_NAMESPACE}
        assert all(a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.STRING) for a in node.attribute)
    # Everything but the replaced linears (and their weights) is untouched.
    original = onnx.load(str(exported[1]["llama"] / "model.onnx"))
    replaced = {lin.node for lin in load_onnx(exported[1]["llama"] / "model.onnx").linears.values()}
    kept = {n.name for n in original.graph.node} - replaced
    assert kept <= {n.name for n in plugin.graph.node}
    assert not replaced & {n.name for n in plugin.graph.node}
    report = json.loads((out / "report.json").read_text())
    assert report["weight_bytes_after"] < report["weight_bytes_before"] / 3


def test_portable_graph_is_standard_onnx_with_int4_weights(exported, tiny_text_file):
    out = _rewrite(exported, tiny_text_file, "llama", "freeact", "w4a4", "llama-freeact-w4a4")
    portable = onnx.load(str(out / "portable.onnx"))
    assert {n.domain for n in portable.graph.node} <= {"", "ai.onnx"}
    assert {o.domain: o.version for o in portable.opset_import}[""] >= 21
    int4 = [i for i in portable.graph.initializer if i.data_type == onnx.TensorProto.INT4]
    assert len(int4) == 7 * 2


@pytest.mark.parametrize("rules", ["sink=pos:2", "m=ids:7,9", "m=ids:7;sink=pos:3", "sink=pos:3;m=ids:7"])
@pytest.mark.parametrize("past", [0, 2])
def test_token_types_computed_in_the_graph_match_the_rules(rules, past):
    token_types = TokenTypes.parse(rules)
    ids_in = gs.Variable("input_ids", np.int64, ["batch", "seq"])
    mask_in = gs.Variable("attention_mask", np.int64, ["batch", "total"])
    graph = gs.Graph(inputs=[ids_in, mask_in], opset=21)
    types = token_types_tensor(graph, token_types)
    graph.outputs = [types]
    session = ort.InferenceSession(gs.export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(5, 11, (3, 6))
    (got,) = session.run(None, {"input_ids": ids, "attention_mask": np.ones((3, past + 6), np.int64)})
    full = np.concatenate([np.full((3, past), 100), ids], axis=1)  # the cache holds `past` earlier tokens
    want = token_types.assign(torch.from_numpy(full))[:, past:].numpy()
    assert got.dtype == np.int32 and np.array_equal(got, want)


@pytest.mark.parametrize("d", [64, 576, 1536, 4096])
def test_hadamard_splits_into_two_kronecker_factors(d):
    k1, k2 = _hadamard_kron(d)
    assert np.allclose(np.kron(k1, k2), hadamard(d).numpy(), atol=1e-12)
    assert k1.shape[0] * k2.shape[0] == d and max(k1.shape[0], k2.shape[0]) <= 128


def _toy_graph(path, widths):
    """input_ids → embedding → MatMul chain with the given widths → logits (the last MatMul)."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((16, widths[0])).astype(np.float32)
    nodes, inits, x = [], [onnx.numpy_helper.from_array(emb, "emb")], "h0"
    nodes.append(onnx.helper.make_node("Gather", ["emb", "input_ids"], [x]))
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal((a, b)).astype(np.float32), f"w{i}"))
        y = "logits" if i == len(widths) - 2 else f"h{i + 1}"
        nodes.append(onnx.helper.make_node("MatMul", [x, f"w{i}"], [y], name=f"mm{i}"))
        x = y
    ids = onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["b", "s"])
    logits = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph(nodes, "toy", [ids], [logits], inits)
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)]), str(path))
    return path


def test_layers_a_kernel_cannot_take_stay_in_float_and_are_listed(tmp_path):
    model = load_onnx(_toy_graph(tmp_path / "toy.onnx", [6, 5, 6, 16]))
    assert [lin.node for lin in model.linears.values()] == ["mm0"]
    assert model.skipped == {"mm1": "input width 5 is odd: INT4 codes are packed two per byte",
                             "mm2": "output projection (logits) stays in floating point"}


def test_unsupported_weight_types_stay_in_float_and_are_listed(tmp_path):
    path = _toy_graph(tmp_path / "toy.onnx", [6, 8, 6, 16])
    model = onnx.load(str(path))
    w1 = next(i for i in model.graph.initializer if i.name == "w1")
    w1.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w1).astype(np.float64), "w1"))
    onnx.save(model, str(path))
    assert load_onnx(path).skipped["mm1"] == "weights of type double are not supported yet (float32 only)"


def test_bad_onnx_inputs_are_one_line_errors(capsys, tmp_path, exported, tiny_text_file):
    code = main([str(_toy_graph(tmp_path / "none.onnx", [6, 16])), "-o", str(tmp_path / "o1"), "--no-check"])
    assert_one_line_error(code, capsys.readouterr().err, "no MatMul or Gemm with a constant 2-D weight")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    code = main([str(corrupt), "-o", str(tmp_path / "o2"), "--no-check"])
    assert_one_line_error(code, capsys.readouterr().err, "is not a readable ONNX model")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    code = main([str(empty), "-o", str(tmp_path / "o4"), "--no-check"])
    assert_one_line_error(code, capsys.readouterr().err, "holds no graph")
    existing = tmp_path / "exists"
    existing.mkdir()
    code = main([str(exported[1]["llama"]), "-o", str(existing), "--no-check"])
    assert_one_line_error(code, capsys.readouterr().err, "exists")
    code = main([str(exported[1]["llama"]), "-o", str(tmp_path / "o3"), "--types", "v=input:vision_mask",
                 "--corpus", str(tiny_text_file), "--calib-windows", "4", "--calib-seqlen", "48", "--no-check"])
    assert_one_line_error(code, capsys.readouterr().err, "vision_mask")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    assert not (tmp_path / "o4").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))
