"""Seed spread of accuracy-benchmark cells: mean ± std over runs that differ only in --seed.

docs/evaluation.md asks for seeds 0-2 wherever a claim rests on a difference between methods. Each
bench_accuracy.py output folder holds one seed; this tool reads several and writes the spread
per cell, plus paired comparisons (same seed, same evaluation windows) of chosen method pairs.

    python tools/bench_seeds.py results/smollm2-135m results/smollm2-135m/seed1 \
        results/smollm2-135m/seed2 --pair freeact/w4a4:flatquant/w4a4 --out results/smollm2-135m/seeds.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
from pathlib import Path


def load_runs(folders: list[Path]) -> dict[str, dict[int, dict]]:
    """{cell: {seed: record}} over every bench_accuracy.json given (FP is seed-free and skipped)."""
    cells: dict[str, dict[int, dict]] = {}
    for folder in folders:
        path = folder / "bench_accuracy.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: give folders written by tools/bench_accuracy.py")
        for key, record in json.loads(path.read_text()).items():
            if key == "fp":
                continue
            seed = int(record["seed"])
            if seed in cells.setdefault(key, {}):
                raise ValueError(f"{key}: seed {seed} appears in two folders")
            cells[key][seed] = record
    return cells


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired(first: dict[int, dict], second: dict[int, dict]) -> dict:
    """Perplexity ratio first / second per shared seed, from the mean NLL over the same windows."""
    seeds = sorted(set(first) & set(second))
    ratios = [math.exp(first[s]["eval"]["nll_mean"] - second[s]["eval"]["nll_mean"]) for s in seeds]
    wins = [sum(a < b for a, b in zip(first[s]["eval"]["window_nll_means"], second[s]["eval"]["window_nll_means"],
                                      strict=True)) for s in seeds]
    return {"seeds": seeds, "ratios": ratios, "windows_first_lower": wins,
            "windows": [len(first[s]["eval"]["window_nll_means"]) for s in seeds]}


def table(cells: dict[str, dict[int, dict]], pairs: list[tuple[str, str]]) -> str:
    lines = ["| cell | seeds | perplexity per seed | mean ± std |", "|---|---|---|---|"]
    for key in sorted(cells, key=lambda k: (k.split("/")[1], k)):
        runs = cells[key]
        values = [runs[s]["eval"]["perplexity"] for s in sorted(runs)]
        mean, std = spread(values)
        lines.append(f"| {key} | {', '.join(map(str, sorted(runs)))} | {' / '.join(f'{v:.2f}' for v in values)} | "
                     f"{mean:.2f} ± {std:.2f} |")
    for first, second in pairs:
        if first not in cells or second not in cells:
            raise KeyError(f"pair {first}:{second}: both cells must have been run")
        result = paired(cells[first], cells[second])
        per_seed = ", ".join(f"seed {s}: {r:.3f} ({w}/{n} windows lower)" for s, r, w, n in
                             zip(result["seeds"], result["ratios"], result["windows_first_lower"], result["windows"],
                                 strict=True))
        lines += ["", f"{first} / {second} perplexity ratio, paired by seed: {per_seed}"]
    return "\n".join(lines) + "\n"


def _split_pair(text: str) -> tuple[str, str]:
    """CELL:CELL, a cell being METHOD[RULES]/BITS; the rules may hold ':' themselves (sink=pos:1)."""
    match = re.fullmatch(r"(.+?/w4a\d+):(.+/w4a\d+)", text)
    if match is None:
        raise ValueError("--pair takes CELL:CELL, e.g. freeact/w4a4:flatquant/w4a4")
    return match[1], match[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="bench_accuracy.py output folders, one seed each")
    parser.add_argument("--pair", action="append", default=[], metavar="CELL:CELL",
                        help="compare two cells seed by seed, e.g. freeact/w4a4:flatquant/w4a4 (repeatable)")
    parser.add_argument("--out", type=Path, help="write the Markdown here as well (not overwritten unless --force)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    try:
        pairs = [_split_pair(p) for p in args.pair]
        text = table(load_runs(args.folders), pairs)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"bench_seeds: error: {str(err).strip(chr(39))}", file=sys.stderr)
        return 1
    print(text, end="")
    if args.out:
        if args.out.exists() and not args.force:
            print(f"bench_seeds: error: {args.out} exists; pass --force to replace it", file=sys.stderr)
            return 1
        tmp = args.out.with_suffix(args.out.suffix + ".partial")
        tmp.write_text(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
