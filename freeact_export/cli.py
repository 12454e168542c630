"""Thin argparse front: parse, call freeact_export.api, print. No logic lives here."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from pathlib import Path

from freeact_export import __version__
from freeact_export.errors import UserError

PROG = "freeact-export"

OVERVIEW = """\
Quantize LLMs, multimodal LLMs and diffusion LLMs with FreeAct (4-bit weights, 4- or 8-bit
activations, one activation transform per token type), export them to ONNX, rewrite their
linear layers into FreeActQuantize + Int4MatMul, build TensorRT engines, prove parity, and
deploy to Triton or edge GPUs.

The pipeline, one stage per command:
  eval      perplexity of a PyTorch or ONNX model (shared/EVAL.md protocol)
  export    floating-point ONNX of a decoder LM, checked against PyTorch
  quantize  a quantization plan and its simulated perplexity (FreeAct and every baseline)
  MODEL.onnx  the ONNX-in path: calibrate, plan, rewrite to plugin + portable graphs, check
  check     three-way parity: simulation, plugin graph, portable graph (Polygraphy)
  build     TensorRT engine from the plugin graph (needs TensorRT and an NVIDIA GPU)
  bundle    edge bundle: engine, plugin library, manifest, standalone runner.py
  triton    Triton Inference Server model repository (TensorRT, ONNX Runtime, text in/out)
  serve     a Triton repository served here (CPU tritonserver, loopback) until Ctrl-C

Models: a name (smollm2-135m), a Hugging Face folder, a .gguf file, or an ONNX model.
Corpora: a name (wiki) or a UTF-8 text file. Nothing is downloaded at run time.
"""

EXAMPLES = """\
examples:
  freeact-export eval --model smollm2-135m --corpus wiki
  freeact-export export --model smollm2-135m -o out/smollm2-135m-fp32
  freeact-export eval --model out/smollm2-135m-fp32 --corpus wiki --json out/ppl-onnx.json
  freeact-export out/smollm2-135m-fp32 --method freeact --bits w4a4 -o out/smollm2-freeact-w4a4
  freeact-export check out/smollm2-freeact-w4a4
  freeact-export triton out/smollm2-freeact-w4a4 -o out/triton-repo
  freeact-export serve out/triton-repo
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", formatter_class=_formatter, help="perplexity of a PyTorch or ONNX model",
        description=textwrap.dedent("""\
            Perplexity on a corpus's eval split, exactly per shared/EVAL.md: the eval text is
            tokenized once without special tokens, cut into consecutive windows of --seqlen
            tokens, each window one sequence without KV cache; BOS is prefixed as context only
            where the tokenizer adds it by default. PyTorch models run in --dtype on --device;
            ONNX models run in ONNX Runtime with exact session options. With --plan (a folder
            from 'quantize -o') the PyTorch model executes the plan: --runtime torch simulates
            it with fake quantization, --runtime kernels runs the real CUDA kernels
            (FreeActQuantize + Int4MatMul from the plugin library, no TensorRT; --device cuda)."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export eval --model smollm2-135m --corpus wiki
              freeact-export eval --model ./my-hf-folder --corpus notes.txt --windows 8 --seqlen 512
              freeact-export eval --model out/smollm2-135m-fp32 --corpus wiki --json ppl.json
              freeact-export eval --model other.onnx --tokenizer smollm2-135m --corpus wiki
              freeact-export eval --plan out/freeact-w4a4 --runtime kernels --device cuda"""))
    p.add_argument("--model", metavar="M",
                   help="name, Hugging Face folder, .gguf, .onnx, or a folder from 'export' "
                        "(default with --plan: the plan's model)")
    p.add_argument("--corpus", default="wiki", metavar="C", help="name or UTF-8 text file (default: wiki)")
    p.add_argument("--seqlen", type=int, default=1024, help="tokens per window (default: 1024)")
    p.add_argument("--windows", type=int, default=32, help="windows from the start of the eval text (default: 32)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="PyTorch weight dtype (default: float32; ONNX keeps its own)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = CUDA when present (default: auto)")
    p.add_argument("--tokenizer", metavar="T", help="tokenizer source for an ONNX file that has none beside it")
    p.add_argument("--plan", metavar="DIR", help="execute this quantization plan (a folder from 'quantize -o')")
    p.add_argument("--runtime", default="torch", choices=["torch", "kernels"],
                   help="with --plan: torch = fake-quant simulation, kernels = the CUDA kernels (default: torch)")
    p.add_argument("--json", metavar="PATH", help="also write the full record (settings, per-window NLL) here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> None:
    from pathlib import Path

    from freeact_export import api
    from freeact_export.config import EvalSpec
    from freeact_export.files import check_new_output

    spec = _spec(EvalSpec, seqlen=args.seqlen, windows=args.windows)
    if args.json:
        check_new_output(Path(args.json), args.overwrite)  # fail before the long run
    record = api.evaluate(args.model, args.corpus, spec, dtype=args.dtype, device=args.device,
                          tokenizer=args.tokenizer, plan=args.plan, runtime=args.runtime)
    windows = f"{record['windows']} windows x {record['seqlen']} tokens"
    if record["windows"] < record["windows_requested"]:
        windows += f" (only {record['windows_available']} fit in the corpus)"
    plan = f" plan={args.plan} ({record['method']} {record['bits']})" if args.plan else ""
    print(f"perplexity {record['perplexity']:.3f}  model={record['model']}{plan} corpus={args.corpus} (eval split) "
          f"{windows} dtype={record['dtype']} device={record['device']} runtime={record['runtime']} "
          f"[{record['wall_s']:.0f} s]")
    if args.json:
        api.write_json(record, Path(args.json), args.overwrite)
        print(f"wrote {args.json}")


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", formatter_class=_formatter, help="floating-point ONNX of a decoder LM",
        description=textwrap.dedent("""\
            Export a decoder LM's prefill graph to ONNX (dynamo exporter): inputs input_ids and
            attention_mask [batch, sequence], output logits [batch, sequence, vocab], batch and
            sequence dynamic, no KV cache. Writes a folder: model.onnx (+ model.onnx.data when
            the weights are large), the tokenizer and config, and export.json. ONNX Runtime
            then runs the graph on sample text and the max abs difference of its logits
            against PyTorch's is printed and recorded. The folder is written under a temporary
            name and renamed when complete."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export export --model smollm2-135m -o out/smollm2-135m-fp32
              freeact-export export --model ./Qwen2.5-0.5B -o out/qwen --external-data always"""))
    p.add_argument("--model", required=True, metavar="M", help="name, Hugging Face folder or .gguf file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="export folder to create")
    p.add_argument("--opset", type=int, default=21, help="ONNX opset (default: 21, needed later for INT4)")
    p.add_argument("--external-data", default="auto", choices=["auto", "always", "never"],
                   help="weights in model.onnx.data: auto = only above ~1.8 GB (default: auto)")
    p.add_argument("--kv-cache", action="store_true",
                   help="also take past keys/values and return present ones (past_key_values.{i}.key ...)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch logits check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from freeact_export import api
    from freeact_export.config import ExportSpec

    spec = _spec(ExportSpec, opset=args.opset, external_data=args.external_data, verify=not args.no_verify,
                 kv_cache=args.kv_cache)
    print(f"exporting {args.model} to ONNX (about a minute per 100M parameters on 2 CPU cores)", flush=True)
    record = api.export(args.model, args.output, spec, overwrite=args.overwrite)
    print(f"wrote {args.output}/ ({', '.join(record['files'])}) in {record['export_s']:.0f} s")
    if "parity_vs_torch" in record:
        p = record["parity_vs_torch"]
        print(f"ONNX Runtime vs PyTorch logits: max abs diff {p['max_abs_diff']:.3g} "
              f"(max |logit| {p['max_abs_reference']:.3g}), SQNR {p['sqnr_db']:.1f} dB "
              f"over {p['positions']} positions")


def _add_quantize(sub) -> None:
    from freeact_export.config import BITS_PRESETS, CALIB_PRESETS
    from freeact_export.quantize.planner import METHODS

    p = sub.add_parser(
        "quantize", formatter_class=_formatter, help="quantize a PyTorch model into a plan; simulated perplexity",
        description=textwrap.dedent("""\
            Calibrate a PyTorch model per token type, compute a quantization plan, and measure
            its perplexity with fake quantization (EVAL.md protocol) before anything is exported.

            methods: rtn (no transform), smoothquant (alpha 0.5), quarot (randomised Hadamard
            on every linear group's input), smoothrot (smoothing alpha 0.5, then Hadamard),
            flatquant (learned Kronecker transform, smoothing and clipping, one type), freeact
            (the same shared weight transform with per-type activation masks), freeact-general
            (per-type activation factors A_k1 ⊗ A_k2 on the one shared weight fold). Append +gptq
            to any method to quantize its transformed weights with GPTQ (e.g. quarot+gptq).
            bits (EVAL.md): w4a4 / w4a8 = INT4 per-channel weights, INT4 / INT8 per-token
            activations; w4a16 = INT4 weights in groups of 128, float activations.
            types: token-type rules, first match wins, type 0 = every other token:
              single                       one type
              sink=pos:1                   the first token (attention sink) vs the rest
              mask=ids:126336              a mask / image token id set
              vision=input:token_type_ids  an explicit model input
              sink=pos:1;mask=ids:126336   combinations
            presets: cpu = 32 calibration windows x 512 tokens, 100 learning steps per group;
            gpu = 128 x 1024 tokens (EVAL.md), 1500 steps."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export quantize --model smollm2-135m --method freeact --bits w4a4 --types "sink=pos:1" \\
                  --preset cpu -o out/freeact-w4a4
              freeact-export quantize --model smollm2-135m --method quarot --bits w4a4 -o out/quarot-w4a4
              freeact-export quantize --model smollm2-135m --method rtn --bits w4a16 --windows 8
              freeact-export quantize --model ./qwen --method smoothrot --types "sink=pos:1" --device cuda"""))
    p.add_argument("--model", required=True, metavar="M", help="name, Hugging Face folder or .gguf file")
    p.add_argument("--corpus", default="wiki", metavar="C", help="calibration + eval corpus (default: wiki)")
    p.add_argument("--method", default="rtn", choices=METHODS, metavar="METHOD",
                   help=f"one of {', '.join(METHODS)} (default: rtn)")
    p.add_argument("--bits", default="w4a4", choices=BITS_PRESETS, help="standard setting (default: w4a4)")
    p.add_argument("--types", default="single", metavar="RULES", help="token-type rules (default: single)")
    p.add_argument("--preset", default="cpu", choices=list(CALIB_PRESETS), help="calibration size (default: cpu)")
    p.add_argument("--calib-windows", type=int, metavar="N", help="calibration windows (overrides the preset)")
    p.add_argument("--calib-seqlen", type=int, metavar="T", help="calibration window length (overrides the preset)")
    p.add_argument("--steps", type=int, metavar="N", help="FreeAct / FlatQuant learning steps per group (preset's)")
    p.add_argument("--dedicated-fraction", type=float, metavar="F",
                   help="FreeAct: dimensions dedicated to each type, as a fraction of d (default 1/32)")
    p.add_argument("--type-weighting", choices=["tokens", "equal"],
                   help="FreeAct objective: sum over tokens (default) or each type's error equally")
    p.add_argument("--seed", type=int, default=0, help="seed of the method's random choices (default: 0)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: auto)")
    p.add_argument("--windows", type=int, default=32, help="eval windows for the simulated perplexity (default: 32)")
    p.add_argument("--seqlen", type=int, default=1024, help="eval window length (default: 1024)")
    p.add_argument("--no-eval", action="store_true", help="write the plan without measuring perplexity")
    p.add_argument("-o", "--output", metavar="DIR", help="folder for plan.json, plan.safetensors, report.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> None:
    import dataclasses

    from freeact_export import api
    from freeact_export.config import FREEACT_PRESETS, EvalSpec

    eval_spec = None if args.no_eval else _spec(EvalSpec, seqlen=args.seqlen, windows=args.windows)
    calib = _calib_override(args)
    learning = {k: v for k, v in (("steps", args.steps), ("dedicated_fraction", args.dedicated_fraction),
                                  ("type_weighting", args.type_weighting)) if v is not None}
    freeact = _spec(dataclasses.replace, FREEACT_PRESETS[args.preset], **learning) if learning else None
    report = api.quantize(args.model, args.corpus, args.method, args.bits, args.types, args.preset, args.output,
                          seed=args.seed, device=args.device, eval_spec=eval_spec, calib=calib, freeact=freeact,
                          overwrite=args.overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in report["type_token_counts"].items())
    print(f"{args.method} {args.bits}: {report['groups']} linear groups; calibration {report['calibration_s']:.0f} s "
          f"(tokens per type: {counts}), planning {report['plan_s']:.0f} s; peak memory {report['peak_rss_gb']:.1f} GB")
    massive = report["massive_activations"]
    print(f"massive activations (> {massive['factor']:.0f}x the median token, peak {massive['peak_ratio']:.0f}x): "
          f"positions {massive['positions'] or '-'}; tokens {massive['token_ids'] or '-'}; "
          f"rules worth trying: {'; '.join(massive['suggested_rules']) or '-'}")
    if "eval" in report:
        e = report["eval"]
        print(f"simulated perplexity {e['perplexity']:.3f}  model={args.model} corpus={args.corpus} (eval split) "
              f"{e['windows']} windows x {e['seqlen']} tokens dtype={e['dtype']} device={report['device']} "
              f"[{e['wall_s']:.0f} s]")
    if args.output:
        print(f"wrote {args.output}/ (plan.json, plan.safetensors, report.json)")


def _add_rewrite(sub) -> None:
    from freeact_export.config import BITS_PRESETS, CALIB_PRESETS
    from freeact_export.quantize.planner import METHODS

    p = sub.add_parser(
        "rewrite", formatter_class=_formatter, help="the ONNX-in path, also spelled: freeact-export MODEL.onnx ...",
        description=textwrap.dedent("""\
            Quantize an ONNX decoder LM (from 'freeact-export export' or another exporter; KV-cache
            inputs and external data are fine): calibrate it with ONNX Runtime per token type,
            compute the plan (same planner as 'quantize'), and write a folder with
              plugin.onnx    every group of linears sharing an input rewritten into one
                             FreeActQuantize + one Int4MatMul per consumer (TensorRT plugins)
              portable.onnx  the same plan in standard ONNX ops (INT4 DequantizeLinear), for
                             ONNX Runtime or any runtime without the plugins
              plan/, report.json, the tokenizer
            then run 'check' on it (three-way parity and perplexities) unless --no-check.
            The token type is computed inside both graphs from the model's own inputs.
            Layers a kernel cannot take stay in floating point and are listed."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export out/smollm2-135m-fp32 --method freeact --bits w4a4 -o out/smollm2-freeact-w4a4
              freeact-export model.onnx --method quarot+gptq --bits w4a8 --types single --no-check -o out/q
              freeact-export model.onnx --tokenizer ./hf-folder --corpus notes.txt -o out/notes"""))
    p.add_argument("model", metavar="MODEL", help="an .onnx file or a folder holding model.onnx")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="folder to create (default: <model>-<method>-<bits> beside the model)")
    p.add_argument("--method", default="freeact", choices=METHODS, metavar="METHOD",
                   help=f"one of {', '.join(METHODS)} (default: freeact)")
    p.add_argument("--bits", default="w4a4", choices=BITS_PRESETS, help="(default: w4a4)")
    p.add_argument("--types", default="sink=pos:1", metavar="RULES",
                   help="token-type rules as in 'quantize' (default: sink=pos:1, the attention sink)")
    p.add_argument("--corpus", default="wiki", metavar="C", help="calibration + check corpus (default: wiki)")
    p.add_argument("--tokenizer", metavar="T", help="tokenizer source when none lies beside the model")
    p.add_argument("--preset", default="cpu", choices=list(CALIB_PRESETS), help="calibration size (default: cpu)")
    p.add_argument("--calib-windows", type=int, metavar="N", help="calibration windows (overrides the preset)")
    p.add_argument("--calib-seqlen", type=int, metavar="T", help="calibration window length (overrides the preset)")
    p.add_argument("--steps", type=int, metavar="N", help="FreeAct / FlatQuant learning steps per group")
    p.add_argument("--seed", type=int, default=0, help="seed of the method's random choices (default: 0)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check and perplexities")
    p.add_argument("--windows", type=int, default=32, help="eval windows for the check's perplexities (default: 32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=_run_rewrite)


def _run_rewrite(args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from freeact_export.config import FREEACT_PRESETS
    from freeact_export.onnx_in.job import rewrite_onnx

    model = Path(args.model)
    stem = model.stem if model.suffix == ".onnx" else model.name
    output = args.output or str(model.parent / f"{stem}-{args.method}-{args.bits}")
    calib = _calib_override(args)
    freeact = None if args.steps is None else _spec(dataclasses.replace, FREEACT_PRESETS[args.preset],
                                                     steps=args.steps)
    report = rewrite_onnx(args.model, output, corpus=args.corpus, method=args.method, bits=args.bits,
                          types=args.types, preset=args.preset, seed=args.seed, calib=calib, freeact=freeact,
                          tokenizer=args.tokenizer, overwrite=args.overwrite)
    before, after = report["weight_bytes_before"], report["weight_bytes_after"]
    print(f"{args.method} {args.bits}: {report['quantized_layers']} linear layers in {report['groups']} groups "
          f"rewritten; calibration {report['calibration_s']:.0f} s (onnxruntime), planning {report['plan_s']:.0f} s, "
          f"rewrite {report['rewrite_s']:.0f} s")
    print(f"weights of the rewritten layers: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB "
          f"({before / max(after, 1):.1f}x smaller, transforms and scales included)")
    for node, why in report["left_in_float"].items():
        print(f"left in floating point: {node}: {why}")
    print(f"wrote {output}/ (plugin.onnx, portable.onnx, plan/, report.json, tokenizer)")
    if not args.no_check:
        _check_and_print(output, args.corpus, args.windows)


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check", formatter_class=_formatter, help="three-way parity: simulation, plugin graph, portable graph",
        description=textwrap.dedent("""\
            Compare with Polygraphy, on saved inputs, the PyTorch fake-quant simulation (when the
            folder's source model is available), the plugin graph in ONNX Runtime (reference
            implementations of the two ops) and the portable graph: INT4 weights must equal the
            plan's, activation codes must agree (at most a rare ±1 where float order decides a
            rounding tie), logits within tolerance; then the portable graph's perplexity must
            be within 0.5 % of the simulation's. Inputs, outputs and check.json go to DIR/check/
            (replaced on each run). Exit status 1 when anything fails; the first diverging
            group is named."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export check out/smollm2-freeact-w4a4
              freeact-export check out/q --no-eval"""))
    p.add_argument("folder", metavar="DIR", help="a folder written by 'freeact-export MODEL.onnx'")
    p.add_argument("--corpus", default="wiki", metavar="C", help="(default: wiki)")
    p.add_argument("--windows", type=int, default=32, help="eval windows for the perplexities (default: 32)")
    p.add_argument("--no-eval", action="store_true", help="parity only, no perplexities")
    p.add_argument("--engine", metavar="PATH",
                   help="TensorRT engine folder (or its model.plan) to add to the comparison (default: DIR/engine "
                        "when it exists; needs TensorRT and the GPU it was built for)")
    p.set_defaults(run=lambda args: _check_and_print(args.folder, args.corpus, None if args.no_eval else args.windows,
                                                     args.engine))


def _check_and_print(folder: str, corpus: str, windows: int | None, engine: str | None = None) -> None:
    from freeact_export.config import EvalSpec
    from freeact_export.parity.check import check

    spec = None if windows is None else _spec(EvalSpec, windows=windows)
    record = check(folder, corpus=corpus, eval_spec=spec, engine=engine)
    if record["simulation_skipped"]:
        print(f"simulation skipped: {record['simulation_skipped']}")
    if record["noise_floor"]:
        f = record["noise_floor"]
        print(f"noise floor (simulation, transform in float32 vs float64): logits max|diff| "
              f"{f['logits_max_abs_diff']:.3g}, SQNR {f['logits_sqnr_db']:.1f} dB; pairs must reach "
              f"SQNR {record['logits_min_sqnr_db']:.1f} dB and max|diff| <= {record['logits_atol']:.3g}")
    for graph, w in record["weights"].items():
        print(f"weights {graph}: {w['layers_checked'] - w['layers_different']}/{w['layers_checked']} layers "
              "hold exactly the plan's INT4 codes")
    print(f"{'runners':<24} {'logits max|diff|':>16} {'SQNR dB':>8} {'codes differing':>22} {'result':>7}")
    for c in record["comparisons"]:
        codes = f"{c['codes_different']}/{c['codes_compared']}"
        print(f"{' vs '.join(c['pair']):<24} {c['logits_max_abs_diff']:>16.3g} {c['logits_sqnr_db']:>8.1f} "
              f"{codes:>22} {'pass' if c['passed'] else 'FAIL':>7}")
        if c["first_diverging"]:
            print(f"  first diverging: {c['first_diverging']}")
        elif c["first_differences"]:
            first = c["first_differences"][0]
            print(f"  codes first differ at {first['group']} ({first['codes_different']} of {first['codes']}, "
                  f"by {first['max_code_difference']}): a rounding tie decided by float order")
    _print_tensorrt(record["tensorrt"])
    if "perplexity" in record:
        p = record["perplexity"]
        line = f"perplexity ({p['windows']} x {p['seqlen']}, {p['corpus']}): portable (onnxruntime) {p['portable']:.3f}"
        if "simulation" in p:
            line += (f", simulation {p['simulation']:.3f}, difference {100 * p['relative_difference']:.3f} % "
                     f"(limit 0.5 %) {'pass' if p['passed'] else 'FAIL'}; the simulation with its transform in "
                     f"float64 gives {p['floor']:.3f} ({100 * p['floor_relative_difference']:.3f} %: "
                     "float-order noise alone)")
        print(line)
    print(f"check {'passed' if record['passed'] else 'FAILED'}; inputs, outputs and check.json in {folder}/check/")
    if not record["passed"]:
        raise UserError(f"parity check failed for {folder} (details in {folder}/check/check.json)")


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


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build", formatter_class=_formatter, help="TensorRT engine from the plugin graph",
        description=textwrap.dedent("""\
            Build a TensorRT engine from DIR/plugin.onnx with the FreeAct plugin library loaded
            (TensorRT's plugin registry, load_library). One optimisation profile covers 1..--max-tokens
            new tokens and batch 1..--max-batch over the graph's dynamic inputs (input_ids,
            attention_mask, position_ids, and past_key_values.* with 0..--max-past cached tokens in a
            KV-cache graph). The tactic timing cache is loaded when it exists and saved after.
            Writes an engine folder (default DIR/engine/): model.plan and build.json (TensorRT and
            CUDA versions, GPU and compute capability, flags, profile, plugin library sha256).
            Needs TensorRT's Python package and an NVIDIA GPU; the engine runs only on GPUs of the
            same compute capability, with the same TensorRT (or later 10.x: --version-compatible)."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export build out/smollm2-freeact-w4a4 --max-tokens 2048
              freeact-export build out/q --max-tokens 512 --max-batch 8 --version-compatible -o out/q-engine-vc
              FREEACT_PLUGIN_LIB=/opt/freeact/libfreeact_trt_plugins.so freeact-export build out/q"""))
    p.add_argument("folder", metavar="DIR", help="a folder written by 'freeact-export MODEL.onnx'")
    p.add_argument("-o", "--output", metavar="ENGINE_DIR", help="engine folder to create (default: DIR/engine)")
    p.add_argument("--max-tokens", type=int, default=2048, help="new tokens per request, at most (default: 2048)")
    p.add_argument("--max-batch", type=int, default=1, help="requests per batch, at most (default: 1)")
    p.add_argument("--opt-tokens", type=int, metavar="N", help="tokens TensorRT tunes for (default: max // 2)")
    p.add_argument("--opt-batch", type=int, default=1, help="batch TensorRT tunes for (default: 1)")
    p.add_argument("--max-past", type=int, metavar="N",
                   help="KV-cache graphs: cached tokens, at most (default: --max-tokens)")
    p.add_argument("--no-fp16", action="store_true", help="keep the floating-point layers in fp32")
    p.add_argument("--version-compatible", action="store_true",
                   help="engine loadable by later TensorRT 10.x runtimes (lean runtime and plugin library embedded)")
    p.add_argument("--exclude-lean-runtime", action="store_true",
                   help="with --version-compatible: leave the lean runtime out (the runtime must bring it)")
    p.add_argument("--timing-cache", metavar="PATH", help="tactic timing cache (default: DIR/timing.cache)")
    p.add_argument("--plugin-library", metavar="PATH",
                   help="plugin library (default: $FREEACT_PLUGIN_LIB, else "
                        "plugins_trt/build/libfreeact_trt_plugins.so)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing engine folder")
    p.set_defaults(run=_run_build)


def _run_build(args: argparse.Namespace) -> None:
    from freeact_export import api
    from freeact_export.runtime.trt_engine import BuildSpec, ProfileSpec

    profile = _spec(ProfileSpec, max_tokens=args.max_tokens, max_batch=args.max_batch, opt_tokens=args.opt_tokens,
                    opt_batch=args.opt_batch, max_past=args.max_past)
    spec = _spec(BuildSpec, fp16=not args.no_fp16, version_compatible=args.version_compatible,
                 exclude_lean_runtime=args.exclude_lean_runtime)
    record = api.build_engine(args.folder, args.output, profile, spec, timing_cache=args.timing_cache,
                              plugin_library=args.plugin_library, overwrite=args.overwrite)
    out = args.output or f"{args.folder}/engine"
    flags = ", ".join(k for k, v in record["tensorrt"].items() if v is True) or "fp32"
    print(f"built {out}/model.plan in {record['build_s']:.0f} s: TensorRT {record['tensorrt']['version']} ({flags}), "
          f"{record['gpu']['name']} ({record['gpu']['sm']}), CUDA {record['cuda']['driver']} driver")
    for name, s in record["profile"].items():
        print(f"  profile {name}: min {s['min']} opt {s['opt']} max {s['max']}")
    print(f"wrote {out}/build.json; timing cache {record['timing_cache']}")


def _add_bundle(sub) -> None:
    p = sub.add_parser(
        "bundle", formatter_class=_formatter, help="edge bundle: engine, plugin library, manifest, runner.py",
        description=textwrap.dedent("""\
            Pack a built engine (from 'freeact-export build') into a bundle folder for an edge GPU:
            model.plan, the plugin library it was built with, build.json, manifest.json (TensorRT
            and CUDA versions, GPU architecture sm_XY, sha256 of every file and of plugin.onnx and
            plan/) and runner.py, a standalone script (numpy + TensorRT) that checks the machine
            and the files against the manifest, refuses a mismatch with one line and exit status 2,
            and otherwise runs one request and prints the argmax token per position. The bundle is
            a plain folder; 'tar czf bundle.tar.gz BUNDLE' packs it for transport."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export bundle out/smollm2-freeact-w4a4 -o out/smollm2-orin
              python out/smollm2-orin/runner.py 1 4093 17 29     # on the target machine"""))
    p.add_argument("folder", metavar="DIR", help="a folder written by 'freeact-export MODEL.onnx'")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE", help="bundle folder to create")
    p.add_argument("--engine", metavar="ENGINE_DIR", help="engine folder (default: DIR/engine)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.set_defaults(run=_run_bundle)


def _run_bundle(args: argparse.Namespace) -> None:
    from freeact_export import api

    manifest = api.bundle(args.folder, args.output, args.engine, overwrite=args.overwrite)
    print(f"wrote {args.output}/ ({', '.join(manifest['files'])}, manifest.json) for {manifest['gpu']['sm']} "
          f"({manifest['gpu']['name']}), TensorRT {manifest['tensorrt']['version']}")
    print(f"on the target: python {args.output}/runner.py TOKEN_ID ...")


def _add_triton(sub) -> None:
    p = sub.add_parser(
        "triton", formatter_class=_formatter, help="Triton Inference Server model repository",
        description=textwrap.dedent("""\
            Write a Triton Inference Server model repository from a folder of 'freeact-export
            MODEL.onnx -o DIR'. Models (every config.pbtxt is built and checked with Triton's
            own model-config protobuf):
              freeact_lm_trt    tensorrt_plan: the TensorRT engine of DIR/plugin.onnx ('build' writes
                                DIR/engine/, or --engine), the plugin library beside it and LOAD.md
                                (--backend-config=tensorrt,plugins=... or LD_PRELOAD); skipped with a
                                note where there is no engine (TensorRT builds it on the serving GPU)
              freeact_lm_onnx   Python backend running DIR/portable.onnx in ONNX Runtime on the CPU:
                                input_ids, attention_mask [batch, tokens] INT64 -> logits FP32
              freeact_tokenize  text -> input_ids, attention_mask (the model's tokenizer.json)
              freeact_greedy    logits -> greedy next_token_id and next_token (text)
              freeact_lm        ensemble: text -> logits, input_ids, next_token_id, next_token
              freeact_generate  text (+ max_new_tokens) -> generated_text, generated_ids: greedy,
                                at most --max-new-tokens tokens, a BLS loop over freeact_lm_onnx
            Every batched model has dynamic batching up to --max-batch and --instances instances.
            Serve it (see README, "Deploy: Triton"): in NVIDIA's Triton container
              tritonserver --model-repository=$PWD/REPO
            and here, on the CPU, with the tritonserver of the nvidia-pytriton wheel (tools/setup.sh
            installs it) and our Python stub paths: see the README's by-hand commands."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export triton out/smollm2-freeact-w4a4 -o out/triton-repo
              freeact-export triton out/smollm2-freeact-w4a4 -o out/triton-repo --engine model.plan --max-batch 16
            a client (pip install tritonclient[http]):
              import numpy as np, tritonclient.http as http
              client = http.InferenceServerClient("127.0.0.1:8000")
              text = http.InferInput("text", [1, 1], "BYTES")
              text.set_data_from_numpy(np.array([[b"The capital of France is"]], dtype=object))
              result = client.infer("freeact_lm", [text])
              print(result.as_numpy("next_token"), result.as_numpy("logits").shape)"""))
    p.add_argument("folder", metavar="DIR", help="a folder written by 'freeact-export MODEL.onnx'")
    p.add_argument("-o", "--output", required=True, metavar="REPO", help="repository folder to create")
    p.add_argument("--engine", metavar="PATH",
                   help="TensorRT engine of DIR/plugin.onnx: a model.plan or a folder from 'build' (adds "
                        "freeact_lm_trt; default: DIR/engine/ when it holds one)")
    p.add_argument("--plugin-lib", metavar="PATH",
                   help="with an engine: the plugin library (default: the one in the engine's build.json, "
                        "else $FREEACT_PLUGIN_LIB or plugins_trt/build's)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="max_batch_size of the batched models (default: 8)")
    p.add_argument("--instances", type=int, default=1, metavar="N", help="instances of each model (default: 1)")
    p.add_argument("--max-tokens", type=int, default=2048, metavar="N",
                   help="longest sequence accepted (the engine's profile maximum; default: 2048)")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                   help="freeact_generate's cap on generated tokens (default: 32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing repository folder")
    p.set_defaults(run=_run_triton)


def _run_triton(args: argparse.Namespace) -> None:
    from freeact_export import api

    record = api.triton(args.folder, args.output, engine=args.engine, plugin=args.plugin_lib,
                        max_batch=args.max_batch, instances=args.instances, max_tokens=args.max_tokens,
                        max_new_tokens=args.max_new_tokens, overwrite=args.overwrite)
    for name, why in record["skipped"].items():
        print(f"note: {name} skipped: {why}")
    print(f"wrote {args.output}/ (models: {', '.join(record['models'])}); every config.pbtxt checked with "
          "Triton's model-config protobuf")


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", formatter_class=_formatter, help="serve a Triton repository here, on the CPU, on loopback",
        description=textwrap.dedent("""\
            Serve a repository from 'freeact-export triton' with the CPU tritonserver (2.51) that the
            nvidia-pytriton wheel carries (tools/setup.sh installs it), on 127.0.0.1, until Ctrl-C.
            A repository with a TensorRT engine (freeact_lm_trt) is refused: it needs a GPU and
            Triton's TensorRT backend, so serve it in NVIDIA's Triton container (see
            REPO/freeact_lm_trt/LOAD.md). Ctrl-C (or SIGTERM) stops the server and its Python backend
            processes; the server's log is under --workdir."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export serve out/triton-repo                      # HTTP :8000, gRPC :8001
              freeact-export serve out/triton-repo --http-port 9000 --grpc-port 9001
            then, from another shell:
              curl -s localhost:8000/v2/models/freeact_generate/infer -d \\
                '{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["The capital of France is"]},
                           {"name":"max_new_tokens","shape":[1],"datatype":"INT32","data":[8]}]}'"""))
    p.add_argument("repository", metavar="REPO", help="a repository written by 'freeact-export triton'")
    p.add_argument("--http-port", type=int, default=8000, metavar="N", help="HTTP port (default: 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="N", help="gRPC port (default: 8001)")
    p.add_argument("--workdir", metavar="DIR",
                   help="where the backend links and tritonserver.log go (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for every model to load (default: 120)")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> None:
    import signal
    import tempfile

    from freeact_export.deploy import triton_server
    from freeact_export.deploy.triton import validate_repository

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C, and kill's SIGTERM, go through the same clean stop (a background job may have
    # SIGINT ignored; an unhandled SIGTERM would leave the server, in its own session, running).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    models = validate_repository(Path(args.repository))
    engines = sorted(name for name, config in models.items() if config.platform == "tensorrt_plan")
    if engines:
        raise UserError(f"{args.repository} holds {', '.join(engines)} (tensorrt_plan), which needs a GPU and "
                        "Triton's TensorRT backend that this CPU server lacks; serve it in NVIDIA's Triton "
                        "container, or write the repository without an engine to serve it here")
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="freeact-triton-"))
        server = stack.enter_context(triton_server.running_server(
            args.repository, workdir, timeout_s=args.timeout, http_port=args.http_port, grpc_port=args.grpc_port))
        print(f"serving {', '.join(sorted(models))}\n  HTTP http://{server['http']}   gRPC {server['grpc']}\n"
              f"  log {server['log']}\nCtrl-C stops it", flush=True)
        try:
            code = server["process"].wait()
        except KeyboardInterrupt:
            print("stopping tritonserver", flush=True)
            return
        raise UserError(f"tritonserver exited with status {code}; see {server['log']}")


def _calib_override(args: argparse.Namespace):
    """The preset's calibration settings with --calib-windows / --calib-seqlen applied (None: the preset's)."""
    import dataclasses

    from freeact_export.config import CALIB_PRESETS

    if args.calib_windows is None and args.calib_seqlen is None:
        return None
    preset = CALIB_PRESETS[args.preset]
    return _spec(dataclasses.replace, preset,
                 windows=preset.windows if args.calib_windows is None else args.calib_windows,
                 seqlen=preset.seqlen if args.calib_seqlen is None else args.calib_seqlen)


def _spec(factory, *args, **fields):
    """Build a settings object; its validation errors become one-line user errors."""
    try:
        return factory(*args, **fields)
    except ValueError as err:
        raise UserError(str(err)) from None


# Commands whose stage lands with a later issue: their help already says what they will do.
PLANNED: dict[str, tuple[str, str]] = {}


def _add_planned(sub, name: str) -> None:
    summary, description = PLANNED[name]
    p = sub.add_parser(name, formatter_class=_formatter, help=f"{summary} [coming]",
                       description=textwrap.dedent(description))
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=lambda args, name=name: _not_yet(name))


def _not_yet(name: str) -> None:
    raise UserError(f"'{name}' is not available in freeact-export {__version__} yet; "
                    f"see '{PROG} {name} --help' for what it will do")


COMMANDS = ("eval", "export", "quantize", "rewrite", "check", "build", "bundle", "triton", "serve", *PLANNED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_formatter, description=OVERVIEW, epilog=EXAMPLES,
        usage=f"{PROG} COMMAND [options]\n       {PROG} MODEL.onnx [options]")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, prog=PROG)
    _add_eval(sub)
    _add_export(sub)
    _add_quantize(sub)
    _add_rewrite(sub)
    _add_check(sub)
    _add_build(sub)
    _add_bundle(sub)
    _add_triton(sub)
    _add_serve(sub)
    for name in PLANNED:
        _add_planned(sub, name)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; `freeact-export MODEL.onnx ...` is routed to `rewrite`."""
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv = ["rewrite", *argv]
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local anyway
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        args.run(args)
    except UserError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; partial outputs were removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
