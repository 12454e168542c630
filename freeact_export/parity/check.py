"""`freeact-export check DIR`: three-way parity of a rewritten model, with Polygraphy.

Runners, on the same saved inputs (sample texts, a padded batch, and an eval-corpus window):
  simulation  the plan executed by fake quantization in PyTorch (needs the source PyTorch model,
              named in source.json; skipped with the reason where it is not available)
  plugin      plugin.onnx in ONNX Runtime, FreeActQuantize / Int4MatMul by the NumPy reference ops
  portable    portable.onnx in ONNX Runtime, standard ops only
  tensorrt    the TensorRT engine of plugin.onnx (DIR/engine/ from 'build', or engine=) where
              TensorRT and the GPU it was built for are present; judged apart, per output
              (parity/trt_compare.py); otherwise check.json says "tensorrt": "skipped: <reason>"

What must hold:
  weights     the INT4 codes in both graphs are the plan's, exactly;
  activations every group's integer activation codes agree between runners. The three compute
              the transform in float32 in different orders, so a value within float rounding of
              a half-integer may land on the neighbouring code, and everything downstream then
              reads a slightly different input. So in each batch the first group whose codes
              differ must differ like such a tie (a few codes, each by one); otherwise it is
              named as the first diverging node;
  logits      compared with Polygraphy's Comparator and by SQNR, against the measured noise floor
              of float rounding order (see LOGITS_MIN_SQNR_DB below);
  perplexity  the portable graph's (ONNX Runtime) within 0.5 % of the simulation's (EVAL.md).
Inputs and every runner's logits are saved with Polygraphy under DIR/check/ (polygraphy inspect
data / run --load-inputs read them); the codes comparison is summarised in check.json.
"""

from __future__ import annotations

import collections
import json
import math
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.comparator import Comparator, RunResults
from polygraphy.comparator.compare import SimpleCompareFunc
from polygraphy.comparator.struct import IterationResult
from polygraphy.json import save_json
from polygraphy.logger import G_LOGGER

from freeact_export.assets import ModelSource, resolve_corpus, resolve_model
from freeact_export.config import EvalSpec
from freeact_export.errors import UserError
from freeact_export.evaluate.perplexity import bos_context_id, eval_windows, perplexity
from freeact_export.files import atomic_path
from freeact_export.models import load_tokenizer, load_torch_model
from freeact_export.onnx_in.job import PLUGIN_GRAPH, PORTABLE_GRAPH, load_rewritten, read_rewritten_graph
from freeact_export.ops.reference import session_options, unpack_int4
from freeact_export.parity.logits import sample_batches
from freeact_export.parity.trt_compare import TRT_RUNNER, compare_tensorrt, tensorrt_runner
from freeact_export.plan import Plan
from freeact_export.rewrite.graphs import codes_name, weight_name
from freeact_export.runtime.ort_lm import OrtLogits, exact_session_options, session_with_outputs
from freeact_export.simulate.fake_quant import SimulatedLogits

# Logits tolerance. Two fp32 pipelines that differ only in summation order agree to ~1e-6 of
# |logit| until a rounding tie flips one activation code; that code moves by a whole step and
# a W4A4 model can amplify it layer after layer. How far is measured, not guessed: the
# simulation is run a second time with its activation transform in float64 (same plan, other
# rounding of the ties), and every pair must stay within FLOOR_MARGIN_DB of that noise floor
# (Polygraphy's absolute tolerance: FLOOR_ATOL_FACTOR times the floor's max difference).
# Without the simulation, a fixed LOGITS_MIN_SQNR_DB stands in for the floor.
LOGITS_MIN_SQNR_DB = 30.0
FLOOR_MARGIN_DB = 6.0
FLOOR_ATOL_FACTOR = 2.0
MIN_ATOL = 1e-4
FALLBACK_ATOL = 1.0
FLOOR_RUNNER = "simulation (float64 transform)"
# The first group whose codes differ may differ in at most this many codes (each by one).
TIE_CODES, TIE_FRACTION = 8, 1e-4
PERPLEXITY_RTOL = 0.005
CHECK_DIR = "check"
CORPUS_WINDOW = 256


class SimulationRunner(BaseRunner):
    """Polygraphy runner around the PyTorch fake-quant simulation; also returns each group's codes."""

    def __init__(self, simulated: SimulatedLogits, example_feed: dict[str, np.ndarray], name: str = "simulation"):
        super().__init__(name=name, prefix="simulation")
        self.simulated = simulated
        self.example_feed = example_feed  # the graphs' inputs; past caches (empty) are accepted and unused

    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata

        meta = TensorMetadata()
        for name, value in self.example_feed.items():
            meta.add(name, value.dtype, tuple(-1 for _ in value.shape))
        return meta

    def activate_impl(self):
        pass

    def deactivate_impl(self):
        pass

    def infer_impl(self, feed_dict):
        for path in self.simulated.paths:
            path.recorded = []
        ids = feed_dict["input_ids"]
        start = time.perf_counter()
        logits = self.simulated(ids, feed_dict.get("attention_mask"))
        self.inference_time = time.perf_counter() - start
        outputs = collections.OrderedDict(logits=logits.numpy())
        for index, path in enumerate(self.simulated.paths):
            if path.recorded:
                outputs[codes_name(index)] = path.recorded[0].codes.reshape(*ids.shape, -1).float().numpy()
            path.recorded = None
        return outputs


def _tapped_session(path: Path, options: ort.SessionOptions, extra: list[str]):
    """A loader (for OnnxrtRunner) of the graph with `extra` tensors added as outputs."""
    model = read_rewritten_graph(path)  # read now: a damaged file is one line, not a traceback
    return lambda: session_with_outputs(model, path.parent, dict.fromkeys(extra), options, ["CPUExecutionProvider"])


def plugin_session_options() -> ort.SessionOptions:
    """Reference custom ops registered, and exact DequantizeLinear + MatMul (see exact_session_options)."""
    options = session_options()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    options.log_severity_level = 3
    return options


def _check_weights(folder: Path, plan: Plan) -> dict:
    """Every INT4 weight initializer of both graphs against the plan's codes."""
    result = {}
    for graph_name, portable in ((PLUGIN_GRAPH, False), (PORTABLE_GRAPH, True)):
        model = read_rewritten_graph(folder / graph_name, external_data=True)
        inits = {i.name: i for i in model.graph.initializer}
        checked = different = 0
        for g, group in enumerate(plan.groups):
            for j, lin in enumerate(group.linears):
                name = weight_name(g, j, portable)
                if name not in inits:  # W4A16 plugin graphs hold the portable form
                    name = weight_name(g, j, True)
                stored = onnx.numpy_helper.to_array(inits[name])
                codes = stored.astype(np.int32).T if name.endswith("weight_int4") else unpack_int4(stored)
                checked += 1
                different += int(not np.array_equal(codes.astype(np.int32), lin.codes.numpy().astype(np.int32)))
        result[graph_name] = {"layers_checked": checked, "layers_different": different}
    return result


def check(folder: str | Path, *, corpus: str = "wiki", eval_spec: EvalSpec | None = EvalSpec(),
          progress: bool = True, engine: str | Path | None = None) -> dict:
    """Run the three-way comparison and (unless eval_spec is None) both perplexities; write DIR/check/.

    The TensorRT engine in `engine` (an engine folder or its model.plan; default DIR/engine/) joins
    when it can run here.
    """
    path, plan, _ = load_rewritten(folder)
    extra = [codes_name(i) for i in range(len(plan.groups))] if plan.act_spec is not None else []
    # Both graphs are read first, so a damaged file fails in one line before any slow work.
    plugin_session = _tapped_session(path / PLUGIN_GRAPH, plugin_session_options(), extra)
    portable_session = _tapped_session(path / PORTABLE_GRAPH, exact_session_options(), extra)
    source = ModelSource(str(path), "onnx", path / PORTABLE_GRAPH, path)
    tok = load_tokenizer(source)
    text = resolve_corpus(corpus)
    ids = tok(text.eval_text, add_special_tokens=False).input_ids[:CORPUS_WINDOW]
    batches = [*sample_batches(tok), (np.asarray([ids], np.int64), np.ones((1, len(ids)), np.int64))]
    portable_runner = OrtLogits(path / PORTABLE_GRAPH)
    feeds = [portable_runner.feeds(i, m) for i, m in batches]  # with empty past caches where the graph has them
    simulated, why_not = _simulation(path, plan)
    floor_sim = None
    runners = []
    if simulated is not None:
        runners.append(SimulationRunner(simulated, feeds[0]))
        floor_sim = SimulatedLogits(simulated.base_model, plan)
        for p in floor_sim.paths:
            p.compute_dtype = torch.float64
        runners.append(SimulationRunner(floor_sim, feeds[0], name=FLOOR_RUNNER))
    runners.append(OnnxrtRunner(plugin_session, name="plugin"))
    runners.append(OnnxrtRunner(portable_session, name="portable"))
    trt_runner, trt_info = tensorrt_runner(path, engine, feeds)
    if trt_runner is not None:
        runners.append(trt_runner)
    start = time.perf_counter()
    G_LOGGER.module_severity = G_LOGGER.WARNING if progress else G_LOGGER.ERROR
    results = Comparator.run(runners, data_loader=feeds)
    names = [r.name for r in runners if r.name not in (FLOOR_RUNNER, TRT_RUNNER)]
    floor = _compare(results, "simulation", FLOOR_RUNNER, [], False, feeds, True) if simulated else None
    atol = max(MIN_ATOL, FLOOR_ATOL_FACTOR * floor["logits_max_abs_diff"]) if floor else FALLBACK_ATOL
    min_sqnr = min(LOGITS_MIN_SQNR_DB, floor["logits_sqnr_db"] - FLOOR_MARGIN_DB) if floor else LOGITS_MIN_SQNR_DB
    index = {name: i for i, name in enumerate(r.name for r in runners)}
    pairs = [(index[a], index[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    packed = plan.act_spec is not None and plan.act_spec.bits == 4
    group_names = [g.name for g in plan.groups]
    logits_only = RunResults()  # saved: the activation codes (GBs for a real model) are summarised in check.json
    for name, iterations in results.items():
        logits_only.append((name, [IterationResult({"logits": it["logits"]}, runner_name=name) for it in iterations]))
    accuracy = Comparator.compare_accuracy(logits_only, compare_func=SimpleCompareFunc(atol=atol, rtol=0.0),
                                           comparisons=pairs, fail_fast=False)
    record = {"kind": "check", "folder": str(path), "runners": names, "simulation_skipped": why_not,
              "noise_floor": floor, "logits_atol": atol, "logits_min_sqnr_db": min_sqnr,
              "weights": _check_weights(path, plan), "comparisons": [], "run_s": round(time.perf_counter() - start, 1)}
    for a, b in pairs:
        a_name, b_name = runners[a].name, runners[b].name
        passed = all(map(bool, accuracy[0][(a_name, b_name)]))
        record["comparisons"].append(_compare(results, a_name, b_name, group_names, packed, feeds, passed, min_sqnr))
    record["tensorrt"] = trt_info if trt_runner is None else compare_tensorrt(results, names, feeds, trt_info, min_sqnr)
    if eval_spec is not None:
        record["perplexity"] = _perplexities(portable_runner, simulated, floor_sim, tok, text, eval_spec, progress)
    record["passed"] = _passed(record)
    with atomic_path(path / CHECK_DIR, overwrite=True) as out:  # a check replaces the previous one, whole
        out.mkdir()
        save_json(feeds, str(out / "inputs.json"))
        logits_only.save(str(out / "outputs.json"))
        (out / "check.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _simulation(path: Path, plan: Plan) -> tuple[SimulatedLogits | None, str | None]:
    source_json = path / "source.json"
    if not source_json.is_file():
        return None, "no source.json: the ONNX model did not come from 'freeact-export export'"
    name = json.loads(source_json.read_text()).get("model")
    try:
        source = resolve_model(name)
        model = load_torch_model(source, "float32", "cpu")
    except UserError as err:
        return None, f"source model {name} not loadable ({err})"
    return SimulatedLogits(model, plan), None


def _compare(results, a: str, b: str, group_names: list[str], packed: bool, feeds: list[dict],
             logits_passed: bool, min_sqnr: float = LOGITS_MIN_SQNR_DB) -> dict:
    """Logits statistics over valid positions, and where the activation codes first differ.

    Once one code differs, everything downstream reads a (slightly) different input, so codes
    of later groups are counted but not judged; the first difference in each batch must look
    like a rounding tie decided by float order: a few codes, each off by one.
    """
    max_abs = signal = noise = 0.0
    codes_total = codes_diff = 0
    first_differences, diverging = [], None
    for iteration, (it_a, it_b, feed) in enumerate(zip(results[a], results[b], feeds, strict=True)):
        keep = feed["attention_mask"].astype(bool)
        la, lb = it_a["logits"][keep].astype(np.float64), it_b["logits"][keep].astype(np.float64)
        max_abs = max(max_abs, float(np.abs(la - lb).max()))
        signal += float((la**2).sum())
        noise += float(((la - lb) ** 2).sum())
        first = None
        for index, group in enumerate(group_names):
            ca = _unpacked(it_a, index, packed and a == "plugin")
            cb = _unpacked(it_b, index, packed and b == "plugin")
            if ca is None or cb is None:
                continue
            differ = int((ca != cb).sum())
            codes_total += ca.size
            codes_diff += differ
            if differ and first is None:
                first = {"batch": iteration, "group": group, "codes_different": differ, "codes": int(ca.size),
                         "max_code_difference": int(np.abs(ca - cb).max())}
                first_differences.append(first)
                tie_like = first["max_code_difference"] == 1 and differ <= max(TIE_CODES, TIE_FRACTION * ca.size)
                if not tie_like and diverging is None:
                    diverging = f"{group} ({codes_name(index)}, batch {iteration}: {differ} codes differ, " \
                                f"up to {first['max_code_difference']})"
    sqnr = 10 * math.log10(signal / noise) if noise > 0 else float("inf")
    return {"pair": [a, b], "logits_max_abs_diff": max_abs, "logits_sqnr_db": sqnr,
            "polygraphy_logits_passed": logits_passed, "codes_compared": codes_total, "codes_different": codes_diff,
            "first_differences": first_differences, "first_diverging": diverging,
            "passed": bool(logits_passed and sqnr >= min_sqnr and diverging is None)}


def _unpacked(outputs, index: int, packed: bool) -> np.ndarray | None:
    """A group's activation codes as int32 [..., d], from any runner's form of them."""
    name = codes_name(index)
    if name not in outputs:
        return None
    value = outputs[name]
    return unpack_int4(value).astype(np.int32) if packed else np.rint(value).astype(np.int32)


def _perplexities(portable: OrtLogits, simulated: SimulatedLogits | None, floor: SimulatedLogits | None, tok,
                  text, spec: EvalSpec, progress: bool) -> dict:
    """Both perplexities, and the noise floor's: how far the simulation moves when only tie rounding changes.

    The pass criterion stays EVAL.md's 0.5 %; the floor tells whether a miss is float-order noise.
    """
    token_ids = tok(text.eval_text, add_special_tokens=False).input_ids
    windows = eval_windows(token_ids, spec, bos_context_id(tok), text.name)
    record = {"windows": spec.windows, "seqlen": spec.seqlen, "corpus": text.name}
    start = time.perf_counter()
    record["portable"] = perplexity(portable, windows, progress).perplexity
    record["portable_s"] = round(time.perf_counter() - start, 1)
    if simulated is not None:
        start = time.perf_counter()
        record["simulation"] = perplexity(simulated, windows, progress).perplexity
        record["simulation_s"] = round(time.perf_counter() - start, 1)
        record["relative_difference"] = abs(record["portable"] / record["simulation"] - 1)
        record["passed"] = record["relative_difference"] <= PERPLEXITY_RTOL
        record["floor"] = perplexity(floor, windows, progress).perplexity
        record["floor_relative_difference"] = abs(record["floor"] / record["simulation"] - 1)
    return record


def _passed(record: dict) -> bool:
    weights_ok = all(v["layers_different"] == 0 for v in record["weights"].values())
    ppl_ok = record.get("perplexity", {}).get("passed", True)
    trt_ok = not isinstance(record.get("tensorrt"), dict) or record["tensorrt"]["passed"]
    return bool(weights_ok and ppl_ok and trt_ok and all(c["passed"] for c in record["comparisons"]))
