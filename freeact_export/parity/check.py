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
  codes and   each graph against the simulation, by replay (parity/replay.py): the three compute
  logits      the transform in float32 in different orders, so a value within float rounding of a
              half-integer may land on the neighbouring code, and everything downstream then reads a
              slightly different input. So the simulation runs again on the graph's own codes: then
              each group's codes must equal the graph's but for such ties (a few codes, each one step,
              each within float rounding of its boundary), and the logits must agree to float
              precision. Without the simulation the two graphs are compared with each other (first
              differences tie-like, logits SQNR above LOGITS_MIN_SQNR_DB);
  perplexity  the portable graph's (ONNX Runtime) against the spread of equally valid references: the
              simulation and the same simulation with its transform in float64 differ window by window
              by float-order noise alone; the portable graph may differ from their mean by
              PERPLEXITY_Z standard errors of that noise, or by a 0.5 % floor, whichever is larger
              (see _judge_perplexity).
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
import onnxruntime as ort
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.comparator import Comparator, RunResults
from polygraphy.comparator.struct import IterationResult
from polygraphy.json import save_json
from polygraphy.logger import G_LOGGER

from freeact_export.assets import ModelSource, resolve_corpus, resolve_model
from freeact_export.config import EvalSpec
from freeact_export.errors import UserError
from freeact_export.evaluate.perplexity import corpus_windows, perplexity
from freeact_export.files import atomic_path
from freeact_export.models import load_tokenizer, load_torch_model
from freeact_export.onnx_in.session import exact_session_options, session_with_outputs
from freeact_export.ops.reference import session_options
from freeact_export.parity.logits import sample_batches
from freeact_export.parity.replay import replay, runner_codes, tie_like
from freeact_export.parity.trt_compare import TRT_RUNNER, compare_tensorrt, engine_dir_for, tensorrt_runner
from freeact_export.parity.weights import require_graph_weights
from freeact_export.plan import Plan
from freeact_export.rewrite.folder import PLUGIN_GRAPH, PORTABLE_GRAPH, load_rewritten, read_rewritten_graph
from freeact_export.rewrite.graphs import codes_name
from freeact_export.runtime.ort_lm import OrtLogits
from freeact_export.simulate.fake_quant import SimulatedLogits

# Without the simulation (an ONNX model not from our exporter) the two graphs are compared with each
# other, without replay: first differences tie-like (parity/replay.py), logits above this SQNR.
LOGITS_MIN_SQNR_DB = 30.0
# The TensorRT engine is judged against the float32 runners by SQNR (parity/trt_compare.py); a float32
# engine is held to the float64-transform simulation's distance from the float32 one, less this margin.
FLOOR_MARGIN_DB = 6.0
FLOOR_RUNNER = "simulation (float64 transform)"
# Perplexity: a 0.5 % floor (docs/parity.md), or PERPLEXITY_Z standard errors of the float-order noise, if larger.
PERPLEXITY_RTOL = 0.005
PERPLEXITY_Z = 4.0
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


def check(folder: str | Path, *, corpus: str = "wiki", eval_spec: EvalSpec | None = EvalSpec(),
          progress: bool = True, engine: str | Path | None = None) -> dict:
    """Run the three-way comparison and (unless eval_spec is None) both perplexities; write DIR/check/.

    The TensorRT engine in `engine` (an engine folder or its model.plan; default DIR/engine/) joins
    when it can run here.
    """
    path, plan, _ = load_rewritten(folder)  # its manifest verified: every file as written
    engine_dir_for(path, engine)  # an --engine that is not there: one line, before any slow work
    weights = require_graph_weights(path, plan)  # one line naming the first layer whose INT4 codes differ
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
    group_names = [g.name for g in plan.groups]
    packed = plan.act_spec is not None and plan.act_spec.bits == 4
    floor = _logits_stats(results, "simulation", FLOOR_RUNNER, feeds) if simulated else None
    min_sqnr = min(LOGITS_MIN_SQNR_DB, floor["logits_sqnr_db"] - FLOOR_MARGIN_DB) if floor else LOGITS_MIN_SQNR_DB
    if simulated is not None:
        # before replay, for the record: how far apart float order alone took the two
        comparisons = [{"logits_sqnr_db": _logits_stats(results, "simulation", graph, feeds)["logits_sqnr_db"],
                        **replay(simulated, feeds, list(results[graph]), group_names, packed and graph == "plugin",
                                 graph)} for graph in ("plugin", "portable")]
    else:
        comparisons = [_compare_graphs(results, group_names, packed, feeds)]
    logits_only = RunResults()  # saved: the activation codes (GBs for a real model) are summarised in check.json
    for name, iterations in results.items():
        logits_only.append((name, [IterationResult({"logits": it["logits"]}, runner_name=name) for it in iterations]))
    record = {"kind": "check", "folder": str(path), "runners": names, "simulation_skipped": why_not,
              "noise_floor": floor, "weights": weights, "comparisons": comparisons,
              "run_s": round(time.perf_counter() - start, 1)}
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


def _logits_stats(results, a: str, b: str, feeds: list[dict]) -> dict:
    """Two runners' logits over valid positions: max |difference| and SQNR."""
    max_abs = signal = noise = 0.0
    for it_a, it_b, feed in zip(results[a], results[b], feeds, strict=True):
        keep = feed["attention_mask"].astype(bool)
        la, lb = it_a["logits"][keep].astype(np.float64), it_b["logits"][keep].astype(np.float64)
        max_abs = max(max_abs, float(np.abs(la - lb).max()))
        signal += float((la**2).sum())
        noise += float(((la - lb) ** 2).sum())
    return {"pair": [a, b], "logits_max_abs_diff": max_abs,
            "logits_sqnr_db": 10 * math.log10(signal / noise) if noise > 0 else float("inf")}


def _compare_graphs(results, group_names: list[str], packed: bool, feeds: list[dict]) -> dict:
    """plugin vs portable where no simulation can replay ties: where their codes first differ, and the logits.

    Once one code differs, everything downstream reads a (slightly) different input, so codes of later
    groups are not judged; the first difference in each batch must look like a tie.
    """
    record = _logits_stats(results, "plugin", "portable", feeds)
    first_differences, diverging = [], None
    for batch, (it_a, it_b, feed) in enumerate(zip(results["plugin"], results["portable"], feeds, strict=True)):
        keep = feed["attention_mask"].astype(bool)
        for index, group in enumerate(group_names):
            ca, cb = runner_codes(it_a, index, packed), runner_codes(it_b, index, False)
            if ca is None or cb is None or not bool((ca != cb)[keep].any()):
                continue
            differ = (ca != cb) & keep[..., None]
            first = {"batch": batch, "group": group, "codes_different": int(differ.sum()),
                     "codes": int(keep.sum()) * ca.shape[-1], "max_code_difference": int(np.abs(ca - cb)[differ].max())}
            first_differences.append(first)
            if diverging is None and not tie_like(first["codes_different"], first["max_code_difference"],
                                                  first["codes"]):
                diverging = f"{group} ({codes_name(index)}, batch {batch}: {first['codes_different']} codes differ, " \
                            f"up to {first['max_code_difference']} steps)"
            break
    record.update(first_differences=first_differences, first_diverging=diverging,
                  passed=bool(diverging is None and record["logits_sqnr_db"] >= LOGITS_MIN_SQNR_DB))
    return record


def _perplexities(portable: OrtLogits, simulated: SimulatedLogits | None, floor: SimulatedLogits | None, tok,
                  text, spec: EvalSpec, progress: bool) -> dict:
    """The portable graph's perplexity, the simulation's, and its float64-transform twin's; judged by
    _judge_perplexity where the simulation is available."""
    windows = corpus_windows(tok, text, spec)
    record = {"windows": len(windows.input_ids), "seqlen": spec.seqlen, "corpus": text.name}
    runs = {}
    for name, runner in (("portable", portable), ("simulation", simulated), ("floor", floor)):
        if runner is not None:
            start = time.perf_counter()
            runs[name] = perplexity(runner, windows, progress)
            record[name] = runs[name].perplexity
            record[f"{name}_s"] = round(time.perf_counter() - start, 1)
    # kept, so that the judgement below can be redone from check.json alone
    record["window_nll_means"] = {name: run.window_nll_means for name, run in runs.items()}
    if simulated is not None:
        record["relative_difference"] = abs(record["portable"] / record["simulation"] - 1)
        record["floor_relative_difference"] = abs(record["floor"] / record["simulation"] - 1)
        record.update(_judge_perplexity(runs["simulation"].window_nll_means, runs["floor"].window_nll_means,
                                        runs["portable"].window_nll_means))
    return record


def _judge_perplexity(reference: list[float], twin: list[float], candidate: list[float]) -> dict:
    """Is the candidate's perplexity as close to the plan's as float order alone allows?

    log(perplexity) is the mean over windows of each window's mean loss (every window has the same
    number of predictions), so a log-ratio of two perplexities is the mean of per-window differences.
    The float32 simulation and its float64-transform twin are equally valid runs of the plan: their
    per-window differences are float-order noise, independent between windows (each window is its own
    sequence) and centred on zero (neither rounding order is favoured), with a per-run spread of
    sd(twin - reference) / sqrt(2). The candidate is compared with the two references' mean, from which
    an equally valid run differs by that spread times sqrt(1 + 1/2) per window; it passes within
    PERPLEXITY_Z standard errors of that, or within the 0.5 % floor where float-order noise is smaller.
    """
    ref, tw, cand = np.asarray(reference), np.asarray(twin), np.asarray(candidate)
    shift = float(np.mean(cand - (ref + tw) / 2))
    noise = tw - ref
    # One window gives no spread: its own difference stands in for the per-run spread.
    per_run = float(np.std(noise, ddof=1)) / math.sqrt(2) if len(noise) > 1 else abs(float(noise[0]))
    standard_error = per_run * math.sqrt(1.5 / len(noise))
    tolerance = max(math.log1p(PERPLEXITY_RTOL), PERPLEXITY_Z * standard_error)
    return {"log_ratio_to_references": shift, "float_order_standard_error": standard_error,
            "twin_log_ratio": float(np.mean(noise)), "tolerance_log_ratio": tolerance,
            "tolerance_relative": math.expm1(tolerance), "passed": abs(shift) <= tolerance}


def _passed(record: dict) -> bool:
    weights_ok = all(v["layers_different"] == 0 for v in record["weights"].values())
    ppl_ok = record.get("perplexity", {}).get("passed", True)
    trt_ok = not isinstance(record.get("tensorrt"), dict) or record["tensorrt"]["passed"]
    return bool(weights_ok and ppl_ok and trt_ok and all(c["passed"] for c in record["comparisons"]))
