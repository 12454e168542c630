"""Accuracy benchmark: perplexity (docs/evaluation.md) of FP and every method at every bit setting, side by side.

One calibration per token-type rule serves every method (baselines ignore types; the first
--types rule is the main one); further --types rules add rows `METHOD[RULES]` for the methods
in --methods whose plan depends on the types (freeact, freeact-general and their +gptq; default
freeact), which measure what each rule gains over one type. Each cell runs in its own process
(calibration, planning and evaluation), so its quantize time and peak memory are its own;
--same-process runs every cell in this one (faster: one calibration per rule). Writes
<out>/bench_accuracy.json (every record; resumable: finished cells are kept) and
<out>/bench_accuracy.md (the tables the README carries).

Bit settings: w4a4, w4a8, w4a16 (the protocol's groups: 128, or 64 for a 576-wide input), and the
W4A16 variants w4a16-g32 (groups of 32) and w4a16-channel (one scale per output channel).
--clip-search, --code-range and --act-order (the last for +gptq methods only) set the weight
rounding of every cell; the table's header names them.

    python tools/bench_accuracy.py --model smollm2-135m --corpus wiki --types "sink=pos:1" \
        --types single --out results/smollm2-135m
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from freeact_export import api
from freeact_export.config import EvalSpec, WeightOptions
from freeact_export.errors import UserError
from freeact_export.evaluate.difficulty import plan_difficulty, plot_difficulty
from freeact_export.quantize.planner import METHODS

# Methods whose plan depends on the token types: only these get a row per extra --types rule.
TYPED = ("freeact", "freeact-general")
# Table columns: the bit settings, then W4A16 at other group sizes (-gN: groups of N; -channel: per channel).
COLUMNS = ("w4a4", "w4a8", "w4a16", "w4a16-g32", "w4a16-channel")
TITLES = {"w4a4": "W4A4", "w4a8": "W4A8", "w4a16": "W4A16", "w4a16-g32": "W4A16 g32",
          "w4a16-channel": "W4A16 per channel"}


def column_bits(column: str) -> tuple[str, int | None]:
    """(bit setting, W4A16 group size or None for the protocol's) of a column."""
    bits, _, variant = column.partition("-")
    return bits, None if not variant else 0 if variant == "channel" else int(variant.removeprefix("g"))


def rounding_of(method: str, column: str, args: argparse.Namespace) -> WeightOptions:
    """The cell's weight rounding: the run's flags (act-order for +gptq methods only) and the column's groups."""
    return WeightOptions(clip_search=args.clip_search, code_range=args.code_range,
                         act_order=args.act_order and method.endswith("+gptq"), group_size=column_bits(column)[1])


def _cell(results: dict, key: str) -> str:
    record = results.get(key)
    return f"{record['eval']['perplexity']:.2f}" if record else "–"


def _cost(record: dict | None) -> str:
    """Quantize time and peak memory of a cell; * where the process was paused or shared the cores."""
    if not record:
        return "–"
    note = " *" if record.get("timing_note") else ""
    return f"{record['quantize_s']:.0f} s, {record['peak_rss_gb']:.1f} GB{note}"


def _table(results: dict, rows: list[str], columns: list[str], header: str) -> str:
    head = "| method | " + " | ".join(TITLES[c] for c in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [header, "", head, rule]
    fp = results.get("fp")
    if fp:
        fp_cell = f"{fp['perplexity']:.2f}"
        lines.append(f"| FP32 | {' | '.join(fp_cell for _ in columns)} |")
    for method in rows:
        lines.append(f"| {method} | {' | '.join(_cell(results, f'{method}/{c}') for c in columns)} |")
    lines += ["", "Quantize time (calibration + planning) and peak resident memory of each cell's process:", "",
              head, rule]
    for method in rows:
        lines.append(f"| {method} | {' | '.join(_cost(results.get(f'{method}/{c}')) for c in columns)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="wiki")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--bits", default="w4a4,w4a8,w4a16",
                        help=f"comma-separated columns among {', '.join(COLUMNS)} (default: w4a4,w4a8,w4a16)")
    parser.add_argument("--types", action="append", metavar="RULES",
                        help="token-type rules; repeat for extra rows of the typed methods (default: sink=pos:1)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=1024, help="eval window length (docs/evaluation.md: 1024)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip-search", action=argparse.BooleanOptionalAction, default=False,
                        help="search each weight slice's clip (QuaRot's w_clip)")
    parser.add_argument("--code-range", choices=["symmetric", "full"], default="symmetric",
                        help="INT4 weight codes: symmetric ±7 or full (ONNX Runtime's rule)")
    parser.add_argument("--act-order", action="store_true", help="GPTQ's act-order, for the +gptq methods")
    parser.add_argument("--steps", type=int, help="learning steps per group of the learned methods (the preset's)")
    parser.add_argument("--same-process", action="store_true",
                        help="run every cell in this process (one calibration per rule; times and memory shared)")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # a child process runs this one cell
    parser.add_argument("--out", required=True, help="folder for bench_accuracy.json / .md")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="keep learned groups under DIR/<cell>/, so a stopped learned cell resumes (gpu preset)")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench_accuracy.json"
    spec = EvalSpec(seqlen=args.seqlen, windows=args.windows)
    methods, columns = args.methods.split(","), args.bits.split(",")
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        print(f"bench_accuracy: error: unknown column {', '.join(unknown)}; choose among {', '.join(COLUMNS)}",
              file=sys.stderr)
        return 2
    rules = args.types or ["sink=pos:1"]
    typed = [m for m in methods if m.removesuffix("+gptq") in TYPED] or ["freeact"]
    # (key, method, column, rule) of every cell, FP first
    wanted = [("fp", None, None, None)] + [(f"{m}/{c}", m, c, rules[0]) for c in columns for m in methods]
    wanted += [(f"{m}[{rule}]/{c}", m, c, rule) for rule in rules[1:] for c in columns for m in typed]
    calibrations: dict[str, api.Calibrated] = {}

    def load() -> dict:
        return json.loads(json_path.read_text()) if json_path.exists() else {}

    def save(results: dict) -> None:
        tmp = json_path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, json_path)

    def run_cell(key: str, method: str | None, column: str | None, rule: str | None) -> dict:
        if key == "fp":
            return api.evaluate(args.model, args.corpus, spec, device=args.device)
        if rule not in calibrations:
            calibrations[rule] = api.calibrate_model(args.model, args.corpus, rule, args.preset, device=args.device,
                                                     eval_spec=spec)
        cal = calibrations[rule]
        checkpoint = None
        if args.checkpoint:  # +gptq rounds its method's learned groups: one folder serves both
            Path(args.checkpoint).mkdir(parents=True, exist_ok=True)
            checkpoint = Path(args.checkpoint) / f"seed{args.seed}-{key.replace('+gptq', '').replace('/', '-')}"
        learning = None if args.steps is None else dataclasses.replace(api.FREEACT_PRESETS[args.preset],
                                                                       steps=args.steps)
        plan, report = api.plan_model(cal, method, column_bits(column)[0], args.seed, freeact=learning,
                                      checkpoint=checkpoint, rounding=rounding_of(method, column, args))
        report["difficulty"] = plan_difficulty(cal.record, plan)
        report["column"] = column
        return report

    try:
        if args.cell:  # a child: one cell, recorded in the shared JSON (the parent runs children one at a time)
            cell = next(c for c in wanted if c[0] == args.cell)
            record = run_cell(*cell)
            results = load()
            results[args.cell] = record
            save(results)
            return 0
        for cell in wanted:
            if cell[0] in load():
                continue
            print(f"== {cell[0]}", flush=True)
            if args.same_process:
                record = run_cell(*cell)
                results = load()
                results[cell[0]] = record
                save(results)
            else:
                child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--cell", cell[0]])
                if child.returncode:
                    return child.returncode
    except UserError as err:
        print(f"bench_accuracy: error: {err}", file=sys.stderr)
        return 1
    results = load()
    fp = results["fp"]
    label = WeightOptions(clip_search=args.clip_search, code_range=args.code_range).label()
    label = ",".join(filter(None, (label, "act-order for +gptq" if args.act_order else "")))
    header = (f"{args.model}, {args.corpus} eval split, {fp['windows']} windows x {fp['seqlen']} tokens, "
              f"{fp['dtype']}, {fp['device']}; calibration preset {args.preset}, token types {rules[0]}, "
              f"seed {args.seed}; weight rounding: {label or 'standard (symmetric ±7, no clip search)'}; "
              "perplexity (lower is better)")
    # The tables and plot cover every cell the JSON holds, so resumed and chained runs build one table.
    cells = [key for key in results if key != "fp"]
    all_columns = [c for c in COLUMNS if any(key.endswith(f"/{c}") for key in cells)]
    all_rows = [m for m in METHODS if any(key.startswith(f"{m}/") for key in cells)]
    all_rows += sorted({key.split("/")[0] for key in cells} - set(all_rows))
    (out / "bench_accuracy.md").write_text(_table(results, all_rows, all_columns, header))
    # GPTQ changes only weights and rtn has no transform (its line is "before"): neither adds a line.
    plotted = [key for key in (f"{m}/w4a4" for m in all_rows)
               if key in results and "[" not in key and "+gptq" not in key and not key.startswith("rtn/")]
    if plotted:
        plot_difficulty({key.split("/")[0]: results[key]["difficulty"] for key in plotted},
                        out / "bench_difficulty.png",
                        f"{args.model}: quantization difficulty per layer and token type, before and after "
                        f"each method's transform (W4A4 plans; +gptq variants share their method's transform)")
    print((out / "bench_accuracy.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
