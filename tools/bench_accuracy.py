"""Accuracy benchmark: perplexity (docs/evaluation.md) of FP and every method at every bit setting, side by side.

One calibration per token-type rule serves every method (baselines ignore types; the first
--types rule is the main one); further --types rules add rows `METHOD[RULES]` for the methods
in --methods whose plan depends on the types (freeact, freeact-general and their +gptq; default
freeact), which measure what each rule gains over one type. Writes <out>/bench_accuracy.json
(every record; resumable: finished cells are kept) and <out>/bench_accuracy.md (the table the
README carries).

    python tools/bench_accuracy.py --model smollm2-135m --corpus wiki --types "sink=pos:1" \
        --types single --out results/smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from freeact_export import api
from freeact_export.config import BITS_PRESETS, EvalSpec
from freeact_export.errors import UserError
from freeact_export.evaluate.difficulty import plan_difficulty, plot_difficulty
from freeact_export.quantize.planner import METHODS

# Methods whose plan depends on the token types: only these get a row per extra --types rule.
TYPED = ("freeact", "freeact-general")


def _table(results: dict, rows: list[str], bits: list[str], header: str) -> str:
    lines = [header, "", "| method | " + " | ".join(b.upper() for b in bits) + " | quantize time | peak RSS so far |",
             "|---|" + "---|" * (len(bits) + 2)]
    fp = results.get("fp")
    if fp:
        fp_cell = f"{fp['perplexity']:.2f}"
        lines.append(f"| FP32 | {' | '.join(fp_cell for _ in bits)} | – | – |")
    for method in rows:
        cells = [results.get(f"{method}/{b}") for b in bits]
        ppl = [f"{c['eval']['perplexity']:.2f}" if c else "–" for c in cells]
        first = next((c for c in cells if c), None)
        # A cell whose process was paused or shared the cores says so instead of a misleading time.
        timing = "–" if not first else f"{first['quantize_s']:.0f} s" + (" *" if first.get("timing_note") else "")
        memory = f"{first['peak_rss_gb']:.1f} GB" if first else "–"
        lines.append(f"| {method} | {' | '.join(ppl)} | {timing} | {memory} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="wiki")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--bits", default=",".join(BITS_PRESETS), help="comma-separated (default: all)")
    parser.add_argument("--types", action="append", metavar="RULES",
                        help="token-type rules; repeat for extra rows of the typed methods (default: sink=pos:1)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=1024, help="eval window length (docs/evaluation.md: 1024)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="folder for bench_accuracy.json / .md")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="keep learned groups under DIR/<cell>/, so a stopped learned cell resumes (gpu preset)")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench_accuracy.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    spec = EvalSpec(seqlen=args.seqlen, windows=args.windows)
    methods, bits = args.methods.split(","), args.bits.split(",")
    rules = args.types or ["sink=pos:1"]
    typed = [m for m in methods if m.removesuffix("+gptq") in TYPED] or ["freeact"]

    def save() -> None:
        tmp = json_path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, json_path)

    try:
        if "fp" not in results:
            results["fp"] = api.evaluate(args.model, args.corpus, spec, device=args.device)
            save()
        for index, rule in enumerate(rules):
            cal = None
            cells = [(m, b, f"{m}/{b}") for b in bits for m in methods] if index == 0 else \
                [(m, b, f"{m}[{rule}]/{b}") for b in bits for m in typed]
            for method, b, key in cells:
                if key in results:
                    continue
                print(f"== {key}", flush=True)
                if cal is None:
                    cal = api.calibrate_model(args.model, args.corpus, rule, args.preset, device=args.device,
                                              eval_spec=spec)
                checkpoint = None
                if args.checkpoint:  # +gptq rounds its method's learned groups: one folder serves both
                    Path(args.checkpoint).mkdir(parents=True, exist_ok=True)
                    checkpoint = Path(args.checkpoint) / f"seed{args.seed}-{key.replace('+gptq', '').replace('/', '-')}"
                plan, report = api.plan_model(cal, method, b, args.seed, checkpoint=checkpoint)
                report["difficulty"] = plan_difficulty(cal.record, plan)
                results[key] = report
                save()
    except UserError as err:
        print(f"bench_accuracy: error: {err}", file=sys.stderr)
        return 1
    fp = results["fp"]
    header = (f"{args.model}, {args.corpus} eval split, {fp['windows']} windows x {fp['seqlen']} tokens, "
              f"{fp['dtype']}, {fp['device']}; calibration preset {args.preset}, token types {rules[0]}, "
              f"seed {args.seed}; perplexity (lower is better); quantize time = calibration + planning of the "
              f"first bit setting (* = not representative, see the cell's timing_note); peak RSS = the process's "
              f"maximum up to that cell (it cannot be reset per cell)")
    # The table and plot cover every cell the JSON holds, so resumed and chained runs build one table.
    cells = [key for key in results if key != "fp"]
    all_bits = [b for b in BITS_PRESETS if any(key.endswith(f"/{b}") for key in cells)]
    all_rows = [m for m in METHODS if any(key.startswith(f"{m}/") for key in cells)]
    all_rows += sorted({key.split("/")[0] for key in cells} - set(all_rows))
    (out / "bench_accuracy.md").write_text(_table(results, all_rows, all_bits, header))
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
