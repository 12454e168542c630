"""The TensorRT engine in `check`: its runner (or why it cannot run here) and its error statistics.

The engine runs the plugin graph with the CUDA kernels, in fp16 where it was built with fp16, so
it is judged apart from the float32 runners: per output (logits, present keys/values), against
each float32 runner, by SQNR over valid positions, with thresholds that depend on its precision.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from freeact_export.errors import UserError
from freeact_export.runtime import trt_engine

TRT_RUNNER = "tensorrt"
# fp16 activations shift values across INT4 rounding boundaries in every layer, so an fp16 engine
# cannot meet the float32 runners' noise floor; 20 dB (10 % RMS error on the logits) is a
# provisional bound, not yet measured on a GPU. A float32 engine is held to the check's own floor.
FP16_MIN_SQNR_DB = 20.0


def engine_dir_for(folder: Path, engine: str | Path | None) -> Path:
    """The engine folder `check` compares (default DIR/engine/); UserError where an explicitly named
    engine is not there: a comparison the user asked for must not quietly turn into a skipped one."""
    if engine is None:
        return trt_engine.default_engine_dir(folder)
    path = Path(engine)
    if not path.exists():
        raise UserError(f"the engine {engine} (--engine) does not exist; give an engine folder written by "
                        "'freeact-export build' or its model.plan, or leave --engine out")
    engine_dir = path.parent if path.is_file() else path  # --engine may name the plan itself
    trt_engine.read_build_record(engine_dir)  # one line where it holds no engine
    return engine_dir


def tensorrt_runner(folder: Path, engine: str | Path | None, feeds: list[dict]):
    """(runner, build record) when the engine can run here, else (None, "skipped: <reason>").

    UserError (not a skip) where `engine` is given and holds no engine: see engine_dir_for.
    """
    engine_dir = engine_dir_for(folder, engine)
    if engine is None and not (engine_dir / trt_engine.ENGINE_FILE).is_file():
        return None, f"skipped: no engine at {engine_dir / trt_engine.ENGINE_FILE} (build one with " \
                     f"'freeact-export build {folder}')"
    try:
        runner, record = trt_engine.check_runner(engine_dir, feeds, TRT_RUNNER)
    except UserError as err:
        return None, f"skipped: {err}"
    return runner, {**record, "engine_path": str(engine_dir / trt_engine.ENGINE_FILE)}


def _stats(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = a.astype(np.float64), b.astype(np.float64)
    noise = float(((a - b) ** 2).sum())
    return {"max_abs_diff": float(np.abs(a - b).max(initial=0.0)), "mean_abs_diff": float(np.abs(a - b).mean()),
            "max_abs_reference": float(np.abs(b).max(initial=0.0)),
            "sqnr_db": 10 * math.log10(float((b**2).sum()) / noise) if noise > 0 else float("inf")}


def compare_tensorrt(results, references: list[str], feeds: list[dict], record: dict, min_sqnr_db: float) -> dict:
    """Per-output statistics of the engine against each reference runner, with pass / fail.

    Args:
        results: Polygraphy RunResults holding the engine's and the references' outputs.
        references: the float32 runners to compare with (simulation, portable, ...).
        feeds: the saved inputs (attention_mask selects the valid logits positions).
        record: the engine's build record.
        min_sqnr_db: the check's threshold for float32 pairs (used for a float32 engine).
    """
    fp16 = bool(record["tensorrt"].get("fp16"))
    threshold = FP16_MIN_SQNR_DB if fp16 else min_sqnr_db
    engine_outputs = results[TRT_RUNNER]
    comparisons = []
    for reference in references:
        outputs = {}
        for name in engine_outputs[0].keys():
            if name not in results[reference][0]:
                continue
            parts_a, parts_b = [], []
            for it_a, it_b, feed in zip(engine_outputs, results[reference], feeds, strict=True):
                a, b = np.asarray(it_a[name]), np.asarray(it_b[name])
                if name == "logits":
                    keep = feed["attention_mask"].astype(bool)
                    keep = keep[:, -a.shape[1]:]  # KV graphs: the mask spans past + new tokens
                    a, b = a[keep], b[keep]
                parts_a.append(a.reshape(-1))
                parts_b.append(b.reshape(-1))
            stats = _stats(np.concatenate(parts_a), np.concatenate(parts_b))
            stats["passed"] = bool(stats["sqnr_db"] >= threshold)
            outputs[name] = stats
        comparisons.append({"pair": [TRT_RUNNER, reference], "outputs": outputs,
                            "passed": bool(outputs) and all(o["passed"] for o in outputs.values())})
    return {"engine": record.get("engine_path"), "tensorrt_version": record["tensorrt"]["version"],
            "gpu": record["gpu"], "precision": "fp16" if fp16 else "fp32", "min_sqnr_db": threshold,
            "comparisons": comparisons, "passed": all(c["passed"] for c in comparisons)}
