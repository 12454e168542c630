"""FreeAct ablation: which part of the recipe moves perplexity (masks, their size, objective weighting).

One calibration serves every variant, so the differences are the recipe's alone. Writes
<out>/freeact_ablation.json.

    python tools/ablate_freeact.py --model smollm2-135m --types "sink=pos:1" --out results/smollm2-135m
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from freeact_export import api
from freeact_export.config import FREEACT_PRESETS, EvalSpec
from freeact_export.errors import UserError
from freeact_export.quantize.freeact import MASK_SELECTION

VARIANTS = {  # name: (dedicated_fraction, type_weighting)
    "no masks, equal weighting": (0.0, "equal"),
    "masks d/32, token weighting (default)": (1 / 32, "tokens"),
    "no masks, token weighting": (0.0, "tokens"),
    "masks d/32, equal weighting": (1 / 32, "equal"),
    "masks d/64, token weighting": (1 / 64, "tokens"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="wiki")
    parser.add_argument("--types", default="sink=pos:1")
    parser.add_argument("--bits", default="w4a4")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "freeact_ablation.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in [n for n in results if n in VARIANTS]:  # an earlier mask selection's figures keep a labelled name
        entry = results[name]
        if entry["learning_spec"]["dedicated_fraction"] > 0 and entry.get("mask_selection") != MASK_SELECTION:
            old = entry.get("mask_selection", "v1: fixed in the starting basis")
            results[f"{name} [{old.split(':')[0]}]"] = {**results.pop(name), "mask_selection": old}
    try:
        cal = None
        for name, (fraction, weighting) in VARIANTS.items():
            if name in results and (fraction == 0 or results[name].get("mask_selection") == MASK_SELECTION):
                continue
            cal = cal or api.calibrate_model(args.model, args.corpus, args.types, args.preset,
                                             eval_spec=EvalSpec(windows=args.windows))
            spec = dataclasses.replace(FREEACT_PRESETS[args.preset], dedicated_fraction=fraction,
                                       type_weighting=weighting)
            _, report = api.plan_model(cal, "freeact", args.bits, args.seed, True, spec)
            results[name] = {"perplexity": report["eval"]["perplexity"], "learning_spec": spec.to_dict(),
                             "mask_selection": MASK_SELECTION,
                             "types": args.types, "bits": args.bits, "seed": args.seed, "windows": args.windows}
            print(f"{name}: {results[name]['perplexity']:.3f}", flush=True)
            tmp = path.with_suffix(".json.partial")
            tmp.write_text(json.dumps(results, indent=2) + "\n")
            os.replace(tmp, path)
    except UserError as err:
        print(f"ablate_freeact: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
