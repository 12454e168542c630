"""Kernel benchmark: the Triton Int4MatMul, FreeActQuantize and the pair against fp16 cuBLAS, FP8 and torch's int4.

For every (K, N) and token count, in one run on one GPU: the median time over --iters timed
iterations (CUDA events) with the L2 cache flushed before each (a buffer of at least twice the
L2 size is written between iterations, outside the timed region), so weights never time from
L2; the achieved bandwidth against the device copy bandwidth measured in the same run (a large
tensor copy, read + write), and TOPS. Ratios are of times measured in the same run.

    python tools/bench_kernels.py --out results/kernels-h100
    python tools/bench_kernels.py --quick --out /tmp/bench      # a short smoke run

Baselines: `torch.mm` in fp16 (cuBLAS; x [t, K] times Wᵀ), FP8 `torch._scaled_mm` (e4m3 operands,
per-tensor scales, fp16 output: what an H100 user would pick instead; it needs a token count that is
a multiple of 16), and torch's int4 weight-only kernel
(`aten._weight_int4pack_mm`, W4A16 with bf16 activations, groups of 128 — 64 where 128 does not
divide K — the only layout it takes). Int4MatMul runs with INT4 activations per token and INT4
weights per output channel (W4A4 of docs/evaluation.md), fp16 output; FreeActQuantize takes fp16 x with
shared Kronecker factors of the planner's split (quantize.freeact.kron_dims).

Writes <out>/bench_kernels.json (settings, every timing, derived figures), bench_kernels.md (the
table) and bench_kernels.png (speed-up over fp16 against tokens, one panel per shape); the GPU's
name is in each. Without a CUDA GPU it prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

SHAPES = ((576, 1536), (4096, 4096), (4096, 14336), (14336, 4096))
TOKENS = (1, 16, 128, 2048)
QUICK_SHAPES = ((4096, 4096),)
QUICK_TOKENS = (1, 128)
OPS = ("fp16", "fp8", "torch_int4", "int4_matmul", "freeact_quantize", "pair")
OP_LABELS = {"fp16": "fp16 cuBLAS", "fp8": "FP8 _scaled_mm", "torch_int4": "torch int4 (W4A16)",
             "int4_matmul": "Int4MatMul",
             "freeact_quantize": "FreeActQuantize", "pair": "FreeActQuantize + Int4MatMul"}
MIN_FLUSH_BYTES = 128 * 2**20


# ---- arguments and arithmetic (no GPU) -------------------------------------------------------

def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    try:
        pairs = tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shapes are KxN,KxN,... (got {text!r})") from None
    if any(len(p) != 2 or min(p) <= 0 or p[0] % 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"shapes are KxN with positive N and even K (got {text!r})")
    return pairs


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"token counts must be positive (got {text!r})")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for bench_kernels.json / .md / .png")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {'x'.join(map(str, QUICK_SHAPES[0]))} at {QUICK_TOKENS} tokens, "
                             "10 iterations")
    parser.add_argument("--shapes", type=_pairs, help="KxN,... (default: " + ",".join(f"{k}x{n}" for k, n in SHAPES)
                        + ")")
    parser.add_argument("--tokens", type=_ints, help=f"token counts (default: {','.join(map(str, TOKENS))})")
    parser.add_argument("--iters", type=int, help="timed iterations per measurement (default: 50; --quick 10)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (default: 5)")
    parser.add_argument("--act-bits", type=int, default=4, choices=[4, 8], help="activation codes (default: 4)")
    args = parser.parse_args(argv)
    args.shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    args.tokens = args.tokens or (QUICK_TOKENS if args.quick else TOKENS)
    args.iters = args.iters or (10 if args.quick else 50)
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    return args


def torch_int4_group(k: int) -> int:
    """Group size for torch's int4 kernel: 128 where it divides K, else the largest of 64/32 that does."""
    for group in (128, 64, 32):
        if k % group == 0:
            return group
    raise ValueError(f"torch's int4 kernel needs K divisible by 32 (got {k})")


def traffic_bytes(op: str, k: int, n: int, tokens: int, act_bits: int = 4, d1: int = 1, d2: int = 1) -> int:
    """Bytes an op must move at least (each input read once, each output written once)."""
    codes = tokens * k * act_bits // 8 + tokens * 4  # activation codes + per-token scales
    quantize = tokens * k * 2 + tokens * 4 + codes + (k + d1 * d1 + d2 * d2) * 4  # fp16 x, types, out, constants
    matmul = n * k // 2 + n * 4 + codes + tokens * n * 2  # INT4 weight, its scales, codes, fp16 y
    if op == "fp16":
        return 2 * (tokens * k + n * k + tokens * n)
    if op == "fp8":
        return tokens * k + n * k + 2 * tokens * n
    if op == "torch_int4":
        return n * k // 2 + (k // torch_int4_group(k)) * n * 4 + 2 * tokens * k + 2 * tokens * n
    if op == "int4_matmul":
        return matmul
    if op == "freeact_quantize":
        return quantize
    if op == "pair":
        return quantize + matmul
    raise ValueError(f"unknown op {op}")


def operations(op: str, k: int, n: int, tokens: int, d1: int = 1, d2: int = 1) -> int:
    """Arithmetic operations (multiply + add = 2): the GEMM's 2·t·K·N, the transform's 2·t·K·(d1 + d2)."""
    gemm = 2 * tokens * k * n
    transform = 2 * tokens * k * (d1 + d2)
    return {"fp16": gemm, "fp8": gemm, "torch_int4": gemm, "int4_matmul": gemm, "freeact_quantize": transform,
            "pair": gemm + transform}[op]


def derive(results: dict) -> list[dict]:
    """One row per (K, N, tokens): median times, speed-ups, GB/s, fraction of copy bandwidth, TOPS."""
    rows: dict[tuple[int, int, int], dict] = {}
    for rec in results["records"]:
        key = (rec["k"], rec["n"], rec["tokens"])
        row = rows.setdefault(key, {"k": rec["k"], "n": rec["n"], "tokens": rec["tokens"], "ops": {}})
        if rec.get("error"):
            row["ops"][rec["op"]] = {"error": rec["error"]}
            continue
        seconds = rec["median_ms"] / 1e3
        gbps = rec["bytes"] / seconds / 1e9
        row["ops"][rec["op"]] = {"median_ms": rec["median_ms"], "gbps": gbps,
                                 "copy_fraction": gbps / results["copy_gbps"],
                                 "tops": rec["operations"] / seconds / 1e12}
    for row in rows.values():
        ops = row["ops"]
        for base in ("fp16", "fp8", "torch_int4"):
            if "median_ms" not in ops.get(base, {}):
                continue
            for op in ("int4_matmul", "pair", "torch_int4"):
                if op != base and "median_ms" in ops.get(op, {}):
                    row[f"{op}_vs_{base}"] = ops[base]["median_ms"] / ops[op]["median_ms"]
    return sorted(rows.values(), key=lambda r: (r["k"], r["n"], r["tokens"]))


def _us(cell: dict | None) -> str:
    if not cell:
        return "–"
    return "n/a" if "error" in cell else f"{1e3 * cell['median_ms']:.1f}"


def markdown_table(results: dict) -> str:
    """The table the README carries: times in µs, ratios of the same run, bandwidth against the copy's."""
    rows = derive(results)
    lines = [f"Kernel benchmark on **{results['gpu']}** (torch {results['torch']}, CUDA {results['cuda']}); "
             f"median of {results['iters']} iterations, L2 flushed before each "
             f"({results['flush_bytes'] / 2**20:.0f} MB written); device copy bandwidth "
             f"{results['copy_gbps']:.0f} GB/s (read + write, measured in this run); "
             f"Int4MatMul with INT{results['act_bits']} activations, per-channel INT4 weights, fp16 output.",
             "",
             "| K x N | tokens | fp16 cuBLAS µs | FP8 µs | torch int4 µs | Int4MatMul µs | FreeActQuantize µs "
             "| pair µs | Int4MatMul / fp16 | pair / fp16 | Int4MatMul / FP8 | Int4MatMul / torch int4 "
             "| Int4MatMul GB/s (of copy) | FreeActQuantize GB/s (of copy) | Int4MatMul TOPS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ratio(row: dict, key: str) -> str:
        return f"{row[key]:.2f}x" if key in row else "–"

    for row in rows:
        ops = row["ops"]
        mm = ops.get("int4_matmul", {})
        fq = ops.get("freeact_quantize", {})
        bandwidth = (f"{mm['gbps']:.0f} ({100 * mm['copy_fraction']:.0f} %)" if "gbps" in mm else "–")
        fq_bandwidth = (f"{fq['gbps']:.0f} ({100 * fq['copy_fraction']:.0f} %)" if "gbps" in fq else "–")
        tops = f"{mm['tops']:.1f}" if "tops" in mm else "–"
        lines.append(f"| {row['k']} x {row['n']} | {row['tokens']} | {_us(ops.get('fp16'))} | {_us(ops.get('fp8'))} | "
                     f"{_us(ops.get('torch_int4'))} | {_us(mm)} | {_us(fq)} | "
                     f"{_us(ops.get('pair'))} | {ratio(row, 'int4_matmul_vs_fp16')} | {ratio(row, 'pair_vs_fp16')} | "
                     f"{ratio(row, 'int4_matmul_vs_fp8')} | {ratio(row, 'int4_matmul_vs_torch_int4')} | {bandwidth} | "
                     f"{fq_bandwidth} | {tops} |")
    errors = sorted({f"{OP_LABELS[r['op']]}: {r['error']}" for r in results["records"] if r.get("error")})
    if errors:
        lines += ["", *(f"n/a: {e}" for e in errors)]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Speed-up over fp16 cuBLAS against tokens, one panel per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = derive(results)
    shapes = sorted({(r["k"], r["n"]) for r in rows})
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes), 3.8), squeeze=False, sharey=True)
    for ax, (k, n) in zip(axes[0], shapes, strict=True):
        mine = [r for r in rows if (r["k"], r["n"]) == (k, n)]
        for key, label, style in (("int4_matmul_vs_fp16", "Int4MatMul", "o-"),
                                  ("pair_vs_fp16", "FreeActQuantize + Int4MatMul", "s-"),
                                  ("torch_int4_vs_fp16", "torch int4 (W4A16)", "^--")):
            points = [(r["tokens"], r[key]) for r in mine if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_title(f"K x N = {k} x {n}")
        ax.set_xlabel("tokens")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("speed-up over fp16 cuBLAS")
    fig.suptitle(f"{results['gpu']}: L2 flushed, median of {results['iters']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: dict, out: Path) -> list[Path]:
    """bench_kernels.json (records + derived rows), .md and .png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench_kernels.json", out / "bench_kernels.md", out / "bench_kernels.png"]
    paths[0].write_text(json.dumps({**results, "rows": derive(results)}, indent=2) + "\n")
    paths[1].write_text(markdown_table(results))
    plot(results, paths[2])
    return paths


# ---- measurement (GPU) ------------------------------------------------------------------------

def _timer(torch, flush, iters: int, warmup: int):
    """fn -> per-iteration milliseconds, L2 flushed (buffer written) before each timed call."""
    def run(fn) -> list[float]:
        for _ in range(warmup):
            fn()
        events = []
        for _ in range(iters):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in events]
    return run


def copy_bandwidth(torch, time_fn, size: int = 2**30) -> float:
    """Device copy bandwidth in GB/s, read + write counted, from a `size`-byte tensor copy."""
    src = torch.empty(size, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    median = statistics.median(time_fn(lambda: dst.copy_(src)))
    return 2 * size / (median / 1e3) / 1e9


def _torch_int4_weight(torch, codes, k: int):
    """Our signed INT4 codes [n, k] as torch's int4 kernel takes them: (packed weight, bf16 scales and zeros)."""
    group = torch_int4_group(k)
    q = (codes.to(torch.int32) + 8).to(torch.uint8)  # unsigned 0..15, zero point 8
    packed = (q[:, ::2] << 4 | q[:, 1::2]).contiguous()  # CUDA layout: even element in the high nibble
    inner_k_tiles = next(t for t in (8, 4, 2) if k % (t * 16) == 0)
    weight = torch.ops.aten._convert_weight_to_int4pack(packed, inner_k_tiles)
    n = codes.shape[0]
    scales_zeros = torch.zeros(k // group, n, 2, dtype=torch.bfloat16, device=codes.device)
    scales_zeros[..., 0] = 0.01  # dequantized w = (q - 8) · scale + zero
    return weight, scales_zeros, group


def _shape_records(torch, launch, k: int, n: int, tokens_list, act_bits: int, time_fn) -> list[dict]:
    from freeact_export.quantize.freeact import kron_dims

    d1, d2 = kron_dims(k)
    gen = torch.Generator(device="cuda").manual_seed(0)
    w16 = torch.randn(n, k, device="cuda", dtype=torch.float16, generator=gen) * 0.02
    w8, unit = w16.to(torch.float8_e4m3fn), torch.ones((), device="cuda")
    codes = torch.randint(-8, 8, (n, k), device="cuda", dtype=torch.int8, generator=gen)
    packed = ((codes[:, 0::2] & 0xF) | ((codes[:, 1::2] & 0xF) << 4)).to(torch.int8).contiguous()
    weight_scale = torch.full((n, 1), 0.01, device="cuda")
    smooth = torch.ones(k, device="cuda")
    kron_1 = torch.linalg.qr(torch.randn(d1, d1, device="cuda", generator=gen))[0].contiguous()
    kron_2 = torch.linalg.qr(torch.randn(d2, d2, device="cuda", generator=gen))[0].contiguous()
    masks, clip = torch.ones(2, k, device="cuda"), torch.ones(2, device="cuda")
    try:
        int4_weight, scales_zeros, group = _torch_int4_weight(torch, codes, k)
        int4_error = None
    except Exception as err:  # this torch's int4 kernel may refuse the shape or have another signature
        int4_error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    records = []
    for tokens in tokens_list:
        x = torch.randn(tokens, k, device="cuda", dtype=torch.float16, generator=gen)
        x_bf16, x8 = x.to(torch.bfloat16), x.to(torch.float8_e4m3fn)
        types = torch.zeros(tokens, dtype=torch.int32, device="cuda")
        a_codes, a_scale = launch.freeact_quantize(x, types, smooth, kron_1, kron_2, masks, clip, act_bits, 1)

        def pair(x=x, types=types):
            c, s = launch.freeact_quantize(x, types, smooth, kron_1, kron_2, masks, clip, act_bits, 1)
            return launch.int4_matmul(c, s, packed, weight_scale, None, act_bits, 0, torch.float16)

        fns = {
            "fp16": lambda x=x: torch.mm(x, w16.t()),
            "fp8": lambda x8=x8: torch._scaled_mm(x8, w8.t(), scale_a=unit, scale_b=unit, out_dtype=torch.float16),
            "int4_matmul": lambda c=a_codes, s=a_scale: launch.int4_matmul(c, s, packed, weight_scale, None, act_bits,
                                                                           0, torch.float16),
            "freeact_quantize": lambda x=x, types=types: launch.freeact_quantize(x, types, smooth, kron_1, kron_2,
                                                                                 masks, clip, act_bits, 1),
            "pair": pair,
        }
        if int4_error is None:
            fns["torch_int4"] = lambda xb=x_bf16: torch.ops.aten._weight_int4pack_mm(xb, int4_weight, group,
                                                                                     scales_zeros)
        for op in OPS:
            base = {"k": k, "n": n, "tokens": tokens, "op": op,
                    "bytes": traffic_bytes(op, k, n, tokens, act_bits, d1, d2),
                    "operations": operations(op, k, n, tokens, d1, d2)}
            if op not in fns:
                records.append({**base, "error": int4_error})
                continue
            try:
                times = time_fn(fns[op])
            except Exception as err:  # one failing baseline must not lose the others' figures
                records.append({**base, "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"})
                continue
            records.append({**base, "median_ms": statistics.median(times), "times_ms": times})
        print(f"  {k} x {n}, {tokens} tokens: " + ", ".join(
            f"{r['op']} {1e3 * r['median_ms']:.1f} µs" for r in records[-len(OPS):] if "median_ms" in r), flush=True)
    return records


def measure(args: argparse.Namespace) -> dict:
    import torch

    from freeact_export.kernels import launch

    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    flush_bytes = max(MIN_FLUSH_BYTES, 2 * l2)
    flush = torch.empty(flush_bytes, dtype=torch.uint8, device="cuda")
    time_fn = _timer(torch, flush, args.iters, args.warmup)
    copy_gbps = copy_bandwidth(torch, time_fn)
    print(f"{props.name}: device copy {copy_gbps:.0f} GB/s; L2 {l2 / 2**20:.0f} MB, "
          f"flushing {flush_bytes / 2**20:.0f} MB", flush=True)
    records = []
    for k, n in args.shapes:
        records += _shape_records(torch, launch, k, n, args.tokens, args.act_bits, time_fn)
    return {"gpu": props.name, "capability": f"sm_{props.major}{props.minor}", "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "triton": _triton_version(), "copy_gbps": copy_gbps, "l2_bytes": l2,
            "flush_bytes": flush_bytes, "iters": args.iters, "warmup": args.warmup, "act_bits": args.act_bits,
            "shapes": [list(s) for s in args.shapes], "tokens": list(args.tokens), "records": records}


def _triton_version() -> str:
    import triton

    return triton.__version__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from freeact_export.errors import UserError

    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU here (torch.cuda.is_available() is False); the kernel benchmark needs one",
              file=sys.stderr)
        return 1
    try:
        results = measure(args)
    except (UserError, ImportError) as err:
        print(f"bench_kernels: {err}", file=sys.stderr)
        return 1
    paths = write_outputs(results, Path(args.out))
    print(markdown_table(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
