"""Layer by layer: each method's output error in every group of linear layers, on the evaluation text.

Where one method's perplexity is above another's, this says where: the model runs in floating point
over the first --windows windows of the eval split (docs/evaluation.md), and at every group's input
each method's plan computes the group's outputs as the deployed model would (its activation
transform and quantizer, its dequantized weights) from that same floating-point input. The error of
a group is Σ ‖y_plan − y‖² / Σ ‖y‖² over its consumers' outputs, per token type and over all tokens.
Each method is planned from one calibration (the cpu preset); learned methods read their groups from
--checkpoint as tools/bench_accuracy.py leaves them (DIR/seed{S}-{method}-{bits}). Writes OUT.json,
OUT.md (per group kind: the geometric mean of each method's error relative to the first method's,
and in how many layers each method is lowest) and OUT.png (error per layer, one panel per group kind).

    python tools/layer_errors.py --model smollm2-135m --bits w4a8 --clip-search --code-range full \
        --act-order --methods quarot+gptq,freeact-general+gptq --checkpoint out/learned-branch \
        --out results/smollm2-135m/layer-errors/w4a8
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from freeact_export.api.torch_in import calibrate_model  # noqa: E402
from freeact_export.calibrate.stats import TypeContext  # noqa: E402
from freeact_export.config import CALIB_PRESETS, FREEACT_PRESETS, EvalSpec, WeightOptions  # noqa: E402
from freeact_export.plan import Plan  # noqa: E402
from freeact_export.quantize.planner import build_plan, torch_weights  # noqa: E402
from freeact_export.quantize.quantizers import Quantized, dequantize  # noqa: E402
from freeact_export.simulate.fake_quant import ActivationPath  # noqa: E402


def group_errors(model: torch.nn.Module, windows, token_types, plans: dict[str, Plan]) -> dict:
    """{method: {group: {"all": error, type name: error}}} over `windows` (floating-point inputs)."""
    context = TypeContext(token_types.num_types)
    names = token_types.names
    first = next(iter(plans.values()))
    sums = {m: {g.name: torch.zeros(len(names), 2, dtype=torch.float64) for g in first.groups} for m in plans}
    hooks = []
    for index, group in enumerate(first.groups):
        consumers = [model.get_submodule(lin.name) for lin in group.linears]
        paths = {}
        for method, plan in plans.items():
            planned = plan.groups[index]
            weights = [dequantize(Quantized(lin.codes, lin.scale, lin.zero), planned.weight_spec).float()
                       for lin in planned.linears]
            paths[method] = (ActivationPath(planned, plan.act_spec, context), weights, planned.linears)

        def hook(module, args, name=group.name, consumers=consumers, paths=paths):
            x = args[0].detach().float()
            types = context.types.reshape(x.shape[:-1]).long()
            exact = [F.linear(x, c.weight.float(), None if c.bias is None else c.bias.float()) for c in consumers]
            for method, (path, weights, linears) in paths.items():
                xt = path(x)
                for y, w, lin in zip(exact, weights, linears, strict=True):
                    err = (F.linear(xt, w, None if lin.bias is None else lin.bias.float()) - y).double().pow(2).sum(-1)
                    energy = y.double().pow(2).sum(-1)
                    for k in range(len(names)):
                        at = types == k
                        sums[method][name][k, 0] += err[at].sum()
                        sums[method][name][k, 1] += energy[at].sum()

        hooks.append(model.get_submodule(group.linears[0].name).register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for row in windows:
                ids = torch.as_tensor(row)[None, :]
                context.types = token_types.assign(ids).reshape(-1)
                model(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for method, per_group in sums.items():
        out[method] = {}
        for name, s in per_group.items():
            row = {"all": float(s[:, 0].sum() / s[:, 1].sum())}
            row.update({names[k]: float(s[k, 0] / s[k, 1]) if s[k, 1] > 0 else None for k in range(len(names))})
            out[method][name] = row
    return out


def _kind(name: str) -> tuple[int, str]:
    """(layer index, group kind) of a group name such as model.layers.3.self_attn.q_proj+k_proj+v_proj."""
    match = re.search(r"\.(\d+)\.(.+)$", name)
    return int(match.group(1)), match.group(2)


def table(errors: dict, methods: list[str]) -> str:
    reference = methods[0]
    kinds = sorted({_kind(g)[1] for g in errors[reference]}, key=lambda k: min(
        _kind(g)[0] * 10 + i for i, g in enumerate(errors[reference]) if _kind(g)[1] == k))
    lines = [f"Output error per group relative to `{reference}` (geometric mean over layers; lower is better), "
             "and the layers where each method's error is lowest", "",
             "| group | " + " | ".join(f"`{m}`" for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for kind in kinds:
        groups = [g for g in errors[reference] if _kind(g)[1] == kind]
        cells = []
        for m in methods:
            ratio = math.exp(sum(math.log(errors[m][g]["all"] / errors[reference][g]["all"]) for g in groups)
                             / len(groups))
            lowest = sum(min(methods, key=lambda x, g=g: errors[x][g]["all"]) == m for g in groups)
            cells.append(f"{ratio:.3f} (lowest in {lowest}/{len(groups)})")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(errors: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(_kind(g)[1] for g in errors[methods[0]]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for m in methods:
            points = sorted((_kind(g)[0], e["all"]) for g, e in errors[m].items() if _kind(g)[1] == kind)
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", ms=3, label=m)
        ax.set(title=kind.split(".")[-1], xlabel="layer", ylabel="relative output error", yscale="log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="wiki")
    parser.add_argument("--types", default="sink=pos:1")
    parser.add_argument("--bits", default="w4a8")
    parser.add_argument("--methods", required=True, help="comma-separated; the first is the reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", type=int, default=4, help="eval windows the errors are taken on (default: 4)")
    parser.add_argument("--clip-search", action="store_true")
    parser.add_argument("--code-range", default="symmetric", choices=["symmetric", "full"])
    parser.add_argument("--act-order", action="store_true", help="GPTQ's act-order, for +gptq methods")
    parser.add_argument("--checkpoint", metavar="DIR", help="learned groups, as tools/bench_accuracy.py keeps them")
    parser.add_argument("--calib-windows", type=int, help="calibration windows (default: the cpu preset's)")
    parser.add_argument("--out", required=True, help="writes OUT.json, OUT.md, OUT.png")
    args = parser.parse_args()
    methods = args.methods.split(",")
    calib = CALIB_PRESETS["cpu"]
    if args.calib_windows:
        import dataclasses

        calib = dataclasses.replace(calib, windows=args.calib_windows)
    cal = calibrate_model(args.model, args.corpus, args.types, "cpu", eval_spec=EvalSpec(windows=args.windows),
                          calib=calib)
    plans = {}
    for method in methods:
        rounding = WeightOptions(clip_search=args.clip_search, code_range=args.code_range,
                                 act_order=args.act_order and "+gptq" in method)
        checkpoint = None
        if args.checkpoint:
            checkpoint = Path(args.checkpoint) / f"seed{args.seed}-{method.replace('+gptq', '')}-{args.bits}"
        plans[method] = build_plan(torch_weights(cal.torch_model), cal.record, method, args.bits, args.seed,
                                   freeact=FREEACT_PRESETS["cpu"], checkpoint=checkpoint, rounding=rounding)
    errors = group_errors(cal.torch_model, cal.eval_windows.input_ids, cal.record.token_types, plans)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = table(errors, methods)
    out.with_suffix(".json").write_text(json.dumps({"model": args.model, "bits": args.bits, "types": args.types,
                                                    "seed": args.seed, "eval_windows": args.windows,
                                                    "methods": methods, "clip_search": args.clip_search,
                                                    "code_range": args.code_range, "act_order": args.act_order,
                                                    "errors": errors}, indent=1) + "\n")
    out.with_suffix(".md").write_text(f"{args.model} {args.bits}, {args.windows} eval windows x 1024 tokens, seed "
                                      f"{args.seed}\n\n{text}\n")
    plot(errors, methods, out.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
