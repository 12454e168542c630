"""Screen FreeAct learning settings on a few real groups: held-out objective and time per group.

A full W4A4 run takes half an hour at the cpu preset and hours at the gpu preset; this screen takes
minutes. It calibrates once (the cpu preset's 32 x 512 windows, 8192 samples kept per type), holds
out the last 2048 samples of every type that has more than 4096 (rarer types, such as sinks, are
learned and scored on all theirs), learns the chosen groups with each setting, and scores every
result on the held-out samples with the learning objective written out here (token-weighted squared
output error relative to the target's, docs/design.md). The first --spec is the reference: the
table gives each setting's held-out objective relative to it, per group and as a geometric mean.

    python tools/screen_learning.py --spec "gpu:clip_start=none" --spec cpu \
        --spec "steps=100,batch_tokens=256,lr=0.005,clip_start=none,samples=2048" \
        --out results/smollm2-135m/fast-preset/screen

A --spec is a preset name or comma-separated FreeActSpec fields, optionally on top of a preset
("gpu:clip_start=none"); `samples=N` learns on the first N training samples only (the old cpu
preset kept 2048). Time the screen with nothing else running.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freeact_export.api.torch_in import calibrate_model  # noqa: E402
from freeact_export.config import CALIB_PRESETS, FREEACT_PRESETS, FreeActSpec, bits_preset  # noqa: E402
from freeact_export.quantize.freeact import learn_freeact  # noqa: E402
from freeact_export.quantize.quantizers import fake_quantize  # noqa: E402
from freeact_export.transforms.apply import for_type, kron_apply  # noqa: E402

HELD_OUT = 2048
GROUPS = ("model.layers.2.self_attn.q_proj+k_proj+v_proj", "model.layers.2.mlp.down_proj",
          "model.layers.14.self_attn.o_proj", "model.layers.14.mlp.gate_proj+up_proj", "model.layers.27.mlp.down_proj")


def parse_spec(text: str) -> tuple[FreeActSpec, int | None]:
    """'gpu', 'steps=200,lr=0.02' or 'cpu:clip_start=none,samples=2048' -> (spec, training samples or None)."""
    preset, _, fields = text.rpartition(":") if ":" in text else ("", "", text)
    if not preset and text in FREEACT_PRESETS:
        preset, fields = text, ""
    spec = FREEACT_PRESETS[preset] if preset else FreeActSpec()
    samples, given = None, {}
    types = {f.name: f.type for f in dataclasses.fields(FreeActSpec)}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        if key == "samples":
            samples = int(value)
        elif types.get(key) in ("int", int):
            given[key] = int(value)
        elif types.get(key) in ("float", float):
            given[key] = float(value)
        elif types.get(key) in ("bool", bool):
            given[key] = value.lower() in ("1", "true", "yes")
        elif key in types:
            given[key] = value
        else:
            raise SystemExit(f"--spec {text}: {key} is not a FreeActSpec field (nor samples)")
    return dataclasses.replace(spec, **given), samples


def held_out_objective(tensors: dict, weight_clip: torch.Tensor, weight: torch.Tensor, held: list[torch.Tensor],
                       counts: list[int], weight_spec, act_spec) -> float:
    """Σ_k share_k ‖X_k Wᵀ − Q(X̃_k) Q(W̃)ᵀ‖² / Σ_k share_k ‖X_k Wᵀ‖² on held-out rows, float64 accumulation."""
    smooth = tensors["smooth"].float()
    folded = kron_apply(weight * smooth, torch.linalg.inv(tensors["kron_1"].float()).T,
                        torch.linalg.inv(tensors["kron_2"].float()).T)
    w_q = fake_quantize(folded, weight_spec, weight_clip.float())
    share = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    error = energy = 0.0
    for k, x in enumerate(held):
        typed = for_type(tensors, k)
        xt = kron_apply(x / smooth, typed["kron_1"].float(), typed["kron_2"].float())
        if "masks" in tensors:
            xt = xt * tensors["masks"][k].float()
        if act_spec is not None:
            xt = fake_quantize(xt, act_spec, tensors["clip"][k].float())
        target = x @ weight.T
        error += float(share[k]) * float((xt @ w_q.T - target).double().pow(2).mean())
        energy += float(share[k]) * float(target.double().pow(2).mean())
    return error / energy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="wiki")
    parser.add_argument("--types", default="sink=pos:1")
    parser.add_argument("--bits", default="w4a4")
    parser.add_argument("--method", default="freeact-general", choices=["freeact-general", "freeact", "flatquant"])
    parser.add_argument("--group", action="append", help="group name (repeat; default: five groups of smollm2-135m)")
    parser.add_argument("--spec", action="append", required=True, help="preset or fields; the first is the reference")
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    specs = [(text, *parse_spec(text)) for text in args.spec]
    calib = dataclasses.replace(CALIB_PRESETS["cpu"], samples_per_type=8192)
    cal = calibrate_model(args.model, args.corpus, args.types, "cpu", calib=calib, progress=True)
    groups = args.group or list(GROUPS)
    rows = []
    for text, spec, samples in specs:
        for name in groups:
            stats = cal.record.stats[name]
            group = next(g for g in cal.record.groups if g.name == name)
            weights = [cal.torch_model.get_submodule(n).weight.detach() for n in group.linears]
            train, held = [], []
            for s in stats:
                rows_k = s.samples
                if len(rows_k) > 2 * HELD_OUT:
                    fit = rows_k[:len(rows_k) - HELD_OUT]
                    train.append(dataclasses.replace(s, samples=fit if samples is None else fit[:samples]))
                    held.append(rows_k[len(rows_k) - HELD_OUT:])
                else:
                    train.append(s)
                    held.append(rows_k)
            weight_spec, act_spec = bits_preset(args.bits, group.in_features)
            start = time.perf_counter()
            tensors, clip, info = learn_freeact(name, train, weights, weight_spec, act_spec, spec,
                                                args.method == "flatquant", 0, args.method == "freeact-general")
            seconds = time.perf_counter() - start
            objective = held_out_objective(tensors, clip, torch.cat(weights).float(), held, [s.count for s in stats],
                                           weight_spec, act_spec)
            rows.append({"spec": text, "learning": spec.to_dict(), "train_samples": samples, "group": name,
                         "learn_s": round(seconds, 1), "held_out": objective, "train": info["objective_after"],
                         "per_type_factors": info["per_type_factors"]})
            print(f"{text:50s} {name:48s} {seconds:7.1f} s  held-out {objective:.5f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"model": args.model, "bits": args.bits, "method": args.method,
                                                    "types": args.types, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(rows, args) + "\n")
    print(table(rows, args))
    return 0


def table(rows: list[dict], args) -> str:
    reference = {r["group"]: r["held_out"] for r in rows if r["spec"] == rows[0]["spec"]}
    groups = list(reference)
    lines = [f"{args.model}, {args.method} {args.bits}, types {args.types}: held-out objective relative to "
             f"`{rows[0]['spec']}` per group (lower is better), learning seconds for the {len(groups)} groups",
             "", "| setting | learn time | geometric mean | "
             + " | ".join(g.removeprefix("model.") for g in groups) + " |",
             "|---|---|---|" + "---|" * len(groups)]
    for spec in dict.fromkeys(r["spec"] for r in rows):
        mine = {r["group"]: r for r in rows if r["spec"] == spec}
        ratios = [mine[g]["held_out"] / reference[g] for g in groups]
        mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        seconds = sum(mine[g]["learn_s"] for g in groups)
        lines.append(f"| `{spec}` | {seconds:.0f} s | {mean:.3f} | " + " | ".join(f"{q:.2f}" for q in ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
