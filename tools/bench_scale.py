"""Scale benchmark: peak memory and time of each step against model size, on random Llama-shaped models.

The tool writes deterministic random-weight models with the shapes of real ones (bfloat16 safetensors
shards, one tensor generated and written at a time, smollm2-135m's tokenizer beside them), then runs
each step on each model in its own process and records that process's peak resident memory
(wait4's ru_maxrss) and wall time:

    quantize   freeact-export quantize --layerwise on: quarot+gptq W4A4 on a minimal calibration
               (--calib-windows / --calib-seqlen), no evaluation
    eval       freeact-export eval --layerwise on: the floating-point model's perplexity on
               --eval-windows windows (one decoder layer at a time)
    export     freeact-export export --stream on --dtype bfloat16: traced without weights, each
               weight written from the shards (not verified: ONNX Runtime has no bfloat16 kernels)

The ONNX rewrite does not stream yet (issue 21): it is not a step here until it does.
Writes <out>/bench_scale.json (every record; resumable), bench_scale.md and bench_scale.png.

    python tools/bench_scale.py --sizes 0.5b,1.5b,3b,8b --out results/scale
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name: (hidden, layers, heads, kv heads, intermediate, vocab, tied embeddings) of the model it is shaped as
SIZES = {
    "tiny": (64, 2, 4, 2, 128, 49152, True),  # for the tool's own test
    "0.5b": (896, 24, 14, 2, 4864, 151936, True),  # Qwen2.5-0.5B
    "1.5b": (1536, 28, 12, 2, 8960, 151936, True),  # Qwen2.5-1.5B
    "3b": (3072, 28, 24, 8, 8192, 128256, True),  # Llama-3.2-3B
    "8b": (4096, 32, 32, 8, 14336, 128256, False),  # Llama-3-8B
}
STEPS = ("quantize", "eval", "export")
SHARD_BYTES = 2 * 10**9


def llama_config(size: str):
    from transformers import LlamaConfig

    hidden, layers, heads, kv, ffn, vocab, tied = SIZES[size]
    return LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv, intermediate_size=ffn, vocab_size=vocab, tie_word_embeddings=tied,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
                       dtype="bfloat16")


def parameter_count(size: str) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(llama_config(size)).parameters())


def write_model(size: str, folder: Path, tokenizer_folder: Path) -> None:
    """A random bfloat16 model of `size` in shards, written a tensor at a time (seeded by its name)."""
    import hashlib

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    config = llama_config(size)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))  # ours alone
    weight_map, pending, shard = {}, {}, 0

    def flush():
        nonlocal pending, shard
        if pending:
            shard += 1
            save_file(pending, str(tmp / f"model-{shard:05d}.safetensors"), metadata={"format": "pt"})
            weight_map.update({name: f"model-{shard:05d}.safetensors" for name in pending})
            pending = {}

    for name, param in skeleton.named_parameters():
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        gen = torch.Generator().manual_seed(seed)
        if param.dim() == 1:  # norms: near one
            value = 1 + 0.02 * torch.randn(param.shape, generator=gen)
        else:  # std 0.02, as Llama's initialiser
            value = 0.02 * torch.randn(param.shape, generator=gen)
        pending[name] = value.to(torch.bfloat16)
        if sum(t.nbytes for t in pending.values()) >= SHARD_BYTES:
            flush()
    flush()
    index = {"metadata": {"total_size": sum(p.numel() * 2 for p in skeleton.parameters())}, "weight_map": weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(tmp)
    for file in tokenizer_folder.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(file, tmp / file.name)
    os.replace(tmp, folder)


def _run(command: list[str]) -> dict:
    """Run one step in its own process; its wall time and peak resident memory."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"step failed with exit code {code}: {' '.join(command)}")
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2)}


def step_command(step: str, folder: Path, args: argparse.Namespace, out: Path) -> list[str]:
    cli = [sys.executable, "-m", "freeact_export"]
    if step == "quantize":
        return [*cli, "quantize", "--model", str(folder), "--corpus", args.corpus, "--method", "quarot+gptq",
                "--bits", "w4a4", "--layerwise", "on", "--device", "cpu", "--calib-windows", str(args.calib_windows),
                "--calib-seqlen", str(args.calib_seqlen), "--no-eval", "-o", str(out / "plan"), "--overwrite"]
    if step == "eval":
        return [*cli, "eval", "--model", str(folder), "--corpus", args.corpus, "--layerwise", "on", "--device", "cpu",
                "--windows", str(args.eval_windows), "--seqlen", str(args.eval_seqlen)]
    if step == "export":
        return [*cli, "export", "--model", str(folder), "--stream", "on", "--dtype", "bfloat16", "-o",
                str(out / "onnx"), "--overwrite"]
    raise ValueError(step)


def table(records: dict) -> str:
    params = {r["size"]: r["params"] for r in records.values()}
    sizes = sorted(params, key=params.get)
    lines = ["| model shape | parameters | bf16 on disk | " + " | ".join(STEPS) + " |",
             "|---|---|---|" + "---|" * len(STEPS)]
    for size in sizes:
        first = next(r for r in records.values() if r["size"] == size)
        cells = []
        for step in STEPS:
            r = records.get(f"{size}/{step}")
            cells.append(f"{r['peak_rss_gb']:.1f} GB, {r['wall_s']:.0f} s" if r else "–")
        lines.append(f"| {size} | {first['params'] / 1e9:.2f} B | {first['params'] * 2 / 1e9:.1f} GB | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(records: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, wall) = plt.subplots(1, 2, figsize=(10, 4))
    for step in STEPS:
        points = sorted((r["params"] / 1e9, r["peak_rss_gb"], r["wall_s"]) for r in records.values()
                        if r["step"] == step)
        if points:
            mem.plot([p[0] for p in points], [p[1] for p in points], "o-", label=step)
            wall.plot([p[0] for p in points], [p[2] for p in points], "o-", label=step)
    mem.set(xlabel="parameters (billions)", ylabel="peak resident memory (GB)", title="peak memory per step")
    wall.set(xlabel="parameters (billions)", ylabel="wall time (s)", title="time per step")
    for ax in (mem, wall):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.5b,1.5b,3b,8b", help=f"comma-separated among {', '.join(SIZES)}")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated among {', '.join(STEPS)}")
    parser.add_argument("--corpus", default="wiki")
    parser.add_argument("--calib-windows", type=int, default=16)
    parser.add_argument("--calib-seqlen", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=2)
    parser.add_argument("--eval-seqlen", type=int, default=256)
    parser.add_argument("--models", default="out/scale-models", help="where the random models are written (kept)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    steps = args.steps.split(",")
    for name, known in ((sizes, SIZES), (steps, STEPS)):
        unknown = [n for n in name if n not in known]
        if unknown:
            raise SystemExit(f"unknown {unknown[0]}; choose among {', '.join(known)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_scale.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    from freeact_export.assets import resolve_model
    from freeact_export.models import hf_folder

    tokenizer_folder = hf_folder(resolve_model("smollm2-135m"))
    for size in sizes:
        folder = Path(args.models) / f"llama-{size}"
        if not (folder / "config.json").is_file():
            print(f"== writing the random {size} model into {folder}", flush=True)
            write_model(size, folder, tokenizer_folder)
        for step in steps:
            key = f"{size}/{step}"
            if key in records:
                continue
            print(f"== {key}", flush=True)
            work = Path(args.models) / f"work-{size}"  # the steps' outputs: beside the models, not in the record
            work.mkdir(exist_ok=True)
            measured = _run(step_command(step, folder, args, work))
            records[key] = {"size": size, "step": step, "params": parameter_count(size), **measured,
                            "settings": {k: getattr(args, k) for k in ("corpus", "calib_windows", "calib_seqlen",
                                                                       "eval_windows", "eval_seqlen")}}
            tmp = path.with_name(path.name + ".partial")
            tmp.write_text(json.dumps(records, indent=2) + "\n")
            os.replace(tmp, path)
    text = (f"Random Llama-shaped models (bfloat16 shards), each step in its own process: peak resident memory, wall "
            f"time. quantize: quarot+gptq W4A4 layer by layer, {args.calib_windows} x {args.calib_seqlen} "
            f"calibration tokens; eval: floating-point perplexity layer by layer, {args.eval_windows} x "
            f"{args.eval_seqlen} tokens; export: bfloat16 ONNX streamed from the shards.\n\n{table(records)}\n")
    (out / "bench_scale.md").write_text(text)
    plot(records, out / "bench_scale.png")
    print(text)


if __name__ == "__main__":
    main()
