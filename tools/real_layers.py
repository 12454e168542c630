"""Real-model layers for the GPU kernel test: smollm2-135m's inputs, plan tensors and weights, small enough to carry.

The smollm2-135m GGUF (98 MB) is more than the GPU machine takes along (64 MiB per call), so the GPU
test runs real layers instead of the whole model: for a few planned groups (the first and last
layer's q/k/v, gate/up and down), the group's real input activations on one eval window, the
FreeActQuantize tensors of the plan (freeact-general per-type factors where the plan has them), and
the first consumer's packed INT4 weight. tests/gpu/test_kernels_gpu.py::test_real_model_layers_through_the_kernels
reads the file (FREEACT_REAL_LAYERS) and checks both kernels against the NumPy reference on it.

    python tools/real_layers.py --out out/gpu_assets/real_layers.npz     # about 2 min on 2 cores, ~10 MB

A `quarot` W4A4 plan (Hadamard factors, no learning) keeps it quick; `--method freeact-general`
learns (about 8 minutes) and gives per-type factors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from freeact_export import api
from freeact_export.config import CalibSpec, EvalSpec, FreeActSpec
from freeact_export.files import atomic_path
from freeact_export.rewrite.op_tensors import activation_tensors, weight_tensors
from freeact_export.token_types import TokenTypes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--method", default="quarot", help="planning method (default: %(default)s)")
    parser.add_argument("--bits", default="w4a4", choices=["w4a4", "w4a8"], help="(default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens of real input per layer (default: %(default)s)")
    args = parser.parse_args(argv)
    cal = api.calibrate_model("smollm2-135m", "wiki", "sink=pos:1", "cpu", device="cpu",
                              eval_spec=EvalSpec(seqlen=args.tokens, windows=1),
                              calib=CalibSpec(windows=8, seqlen=256, min_tokens=4), progress=True)
    plan, _ = api.plan_model(cal, args.method, args.bits, progress=True, freeact=FreeActSpec(steps=50))
    layers = [g for g in plan.groups if g.name.split(".")[2] in ("0", str(_last_layer(plan)))]
    types = TokenTypes.parse(plan.token_types)
    ids = torch.as_tensor(cal.eval_windows.input_ids[:1, : args.tokens])
    captured: dict[str, torch.Tensor] = {}
    modules = dict(cal.torch_model.named_modules())
    hooks = [modules[g.linears[0].name].register_forward_pre_hook(
        lambda _m, inp, name=g.name: captured.__setitem__(name, inp[0].detach().reshape(-1, inp[0].shape[-1])))
        for g in layers]
    with torch.inference_mode():
        cal.torch_model(input_ids=ids, use_cache=False)
    for hook in hooks:
        hook.remove()
    token_types = types.assign(ids).reshape(-1).to(torch.int32).numpy()
    arrays = {}
    for group in layers:
        ops = activation_tensors(group, types.num_types)
        weights = weight_tensors(group.linears[0], group)
        key = group.name
        arrays.update({f"{key}/x": captured[key].float().numpy(), f"{key}/types": token_types,
                       **{f"{key}/{k}": ops[k] for k in ("smooth", "kron_1", "kron_2", "masks", "clip")},
                       f"{key}/kronecker": np.int32(ops["kronecker"]), f"{key}/bits": np.int32(plan.act_spec.bits),
                       f"{key}/weight": weights["weight"], f"{key}/weight_scale": weights["weight_scale"],
                       f"{key}/bias": weights["bias"], f"{key}/group_size": np.int32(weights["group_size"])})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as partial:  # an existing file is refused: move it away first
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
    print(f"{len(layers)} layers ({', '.join(g.name for g in layers)}) → {args.out} "
          f"({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _last_layer(plan) -> int:
    return max(int(g.name.split(".")[2]) for g in plan.groups if g.name.split(".")[2].isdigit())


if __name__ == "__main__":
    sys.exit(main())
