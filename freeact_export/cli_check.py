"""The check command: three-way parity of a rewritten folder, and how its record is printed (also after a rewrite)."""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path

from freeact_export.api import UserError
from freeact_export.cli_common import COUNT, formatter, require_folder, settings


def add_check(sub) -> None:
    p = sub.add_parser(
        "check", formatter_class=formatter, help="three-way parity: simulation, plugin graph, portable graph",
        description=textwrap.dedent("""\
            Run with Polygraphy, on saved inputs, the PyTorch fake-quant simulation (when the
            folder's source model is available), the plugin graph in ONNX Runtime (reference
            implementations of the two ops) and the portable graph. INT4 weights must equal the
            plan's. Each graph is then judged against the simulation by replay: the simulation
            runs again on the graph's own activation codes, so both see the same inputs; then
            every group's codes must equal the graph's except where float summation order decided
            a rounding tie (a few codes, each one step and within 1e-3 steps of its boundary), and
            the logits must agree to float precision (SQNR >= 60 dB). So the result is the same
            on every CPU. Last, the portable graph's perplexity must be as close to the plan's as
            float-order noise allows: within 4 standard errors of the per-window noise between the
            simulation and its float64-transform twin, from their mean (at least 0.5 %; docs/parity.md). Inputs,
            outputs and check.json go to DIR/check/ (replaced on each run). Exit status 1 when
            anything fails; the first diverging group is named."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export check out/smollm2-freeact-w4a4
              freeact-export check out/q --no-eval"""))
    p.add_argument("folder", metavar="DIR", help="a folder written by 'freeact-export MODEL.onnx'")
    p.add_argument("--corpus", default="wiki", metavar="C", help="(default: wiki)")
    p.add_argument("--windows", type=COUNT, default=32, help="eval windows for the perplexities (default: 32)")
    p.add_argument("--no-eval", action="store_true", help="parity only, no perplexities")
    p.add_argument("--engine", metavar="PATH",
                   help="TensorRT engine folder (or its model.plan) to add to the comparison (default: DIR/engine "
                        "when it exists; needs TensorRT and the GPU it was built for)")
    p.set_defaults(run=_run_check)


def _run_check(args: argparse.Namespace) -> None:
    require_folder(args.folder, "a folder written by 'freeact-export MODEL.onnx'")
    check_and_print(args.folder, args.corpus, None if args.no_eval else args.windows, args.engine)


def check_and_print(folder: str, corpus: str, windows: int | None, engine: str | None = None) -> None:
    from freeact_export.api import EvalSpec, check, require_room, writing

    require_room(Path(folder) / "check")  # written at the end of minutes of work
    spec = None if windows is None else settings(EvalSpec, windows=windows)
    with writing(Path(folder) / "check"):
        record = check(folder, corpus=corpus, eval_spec=spec, engine=engine)
    if record["simulation_skipped"]:
        print(f"simulation skipped: {record['simulation_skipped']}")
    for graph, w in record["weights"].items():
        print(f"weights {graph}: {w['layers_checked'] - w['layers_different']}/{w['layers_checked']} layers "
              "hold exactly the plan's INT4 codes")
    for c in record["comparisons"]:
        _print_comparison(c)
    _print_tensorrt(record["tensorrt"])
    if "perplexity" in record:
        p = record["perplexity"]
        line = f"perplexity ({p['windows']} x {p['seqlen']}, {p['corpus']}): portable (onnxruntime) {p['portable']:.3f}"
        if "simulation" in p:
            line += (f", simulation {p['simulation']:.3f} and with its transform in float64 {p['floor']:.3f} "
                     f"({100 * p['floor_relative_difference']:.2f} % apart: float order alone); portable is "
                     f"{100 * math.expm1(abs(p['log_ratio_to_references'])):.2f} % from their mean (limit "
                     f"{100 * p['tolerance_relative']:.2f} %: 4 standard errors of that noise, at least 0.5 %) "
                     f"{'pass' if p['passed'] else 'FAIL'}")
        print(line)
    print(f"check {'passed' if record['passed'] else 'FAILED'}; inputs, outputs and check.json in {folder}/check/")
    if not record["passed"]:
        raise UserError(f"parity check failed for {folder} (details in {folder}/check/check.json)")


def _print_comparison(c: dict) -> None:
    """One graph's parity line: the simulation replayed on the graph's codes, or the two graphs side by side."""
    result = "pass" if c["passed"] else "FAIL"
    if "ties" not in c:  # no simulation: the two graphs against each other
        print(f"{' vs '.join(c['pair'])}: logits max|diff| {c['logits_max_abs_diff']:.3g}, SQNR "
              f"{c['logits_sqnr_db']:.1f} dB {result}")
    else:
        tied = sum(t["codes_different"] for t in c["replayed"])
        print(f"{' vs '.join(c['pair'])}: logits SQNR {c['logits_sqnr_db']:.1f} dB; replayed on {c['pair'][1]}'s "
              f"codes: {tied} codes rounded the other way at ties, logits SQNR {c['replayed_logits_sqnr_db']:.1f} dB, "
              f"max|diff| {c['replayed_logits_max_abs_diff']:.3g} {result}")
    if c["first_diverging"]:
        print(f"  first diverging: {c['first_diverging']}")


def _print_tensorrt(trt) -> None:
    if isinstance(trt, str):
        print(f"tensorrt {trt}")
        return
    print(f"tensorrt engine ({trt['precision']}, TensorRT {trt['tensorrt_version']}, {trt['gpu']['name']}): "
          f"outputs must reach SQNR {trt['min_sqnr_db']:.1f} dB")
    for c in trt["comparisons"]:
        for name, o in c["outputs"].items():
            print(f"  {' vs '.join(c['pair'])} {name}: max|diff| {o['max_abs_diff']:.3g}, mean|diff| "
                  f"{o['mean_abs_diff']:.3g}, SQNR {o['sqnr_db']:.1f} dB {'pass' if o['passed'] else 'FAIL'}")
