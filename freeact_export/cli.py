"""Thin argparse front: parse, call freeact_export.api, print. No logic lives here."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import textwrap
from pathlib import Path

from freeact_export import __version__
from freeact_export.api import UserError
from freeact_export.cli_check import add_check, check_and_print
from freeact_export.cli_common import (
    COUNT,
    PROG,
    SEED,
    SEQLEN,
    Parser,
    add_rounding,
    formatter,
    require_folder,
    rounding,
    settings,
)
from freeact_export.cli_deploy import add_build, add_bundle, add_serve, add_triton

OVERVIEW = """\
Quantize LLMs, multimodal LLMs and diffusion LLMs with FreeAct (4-bit weights, 4- or 8-bit
activations, one activation transform per token type), export them to ONNX, rewrite their
linear layers into FreeActQuantize + Int4MatMul, build TensorRT engines, prove parity, and
deploy to Triton or edge GPUs.

The pipeline, one stage per command:
  eval      perplexity of a PyTorch or ONNX model (docs/evaluation.md protocol)
  export    floating-point ONNX of a decoder LM, checked against PyTorch
  quantize  a quantization plan and its simulated perplexity (FreeAct and every baseline)
  MODEL.onnx  the ONNX-in path: calibrate, plan, rewrite to plugin + portable graphs, check
  check     three-way parity: simulation, plugin graph, portable graph (Polygraphy)
  build     TensorRT engine from the plugin graph (needs TensorRT and an NVIDIA GPU)
  bundle    edge bundle: engine, plugin library, manifest, standalone runner.py
  triton    Triton Inference Server model repository (TensorRT, ONNX Runtime, text in/out)
  serve     a Triton repository served here (CPU tritonserver, loopback) until Ctrl-C

Models: a name (smollm2-135m, gemma3-270m), a Hugging Face folder, a .gguf file, or an ONNX model.
Corpora: a name (wiki) or a UTF-8 text file. Nothing is downloaded at run time.
"""

EXAMPLES = """\
examples:
  freeact-export eval --model smollm2-135m --corpus wiki
  freeact-export export --model smollm2-135m -o out/smollm2-135m-fp32
  freeact-export eval --model out/smollm2-135m-fp32 --corpus wiki --json out/ppl-onnx.json
  freeact-export out/smollm2-135m-fp32 -o out/smollm2-freeact-w4a4    # freeact-general W4A4, sink=pos:1
  freeact-export check out/smollm2-freeact-w4a4
  freeact-export triton out/smollm2-freeact-w4a4 -o out/triton-repo
  freeact-export serve out/triton-repo
"""


CHECKPOINT_HELP = ("FreeAct / FlatQuant: save each learned group here as it finishes; the same command "
                   "run again with the same folder learns only the groups still missing")


def _resumed(report: dict) -> str:
    n, learn_s = report.get("groups_from_checkpoint", 0), report.get("checkpoint_learn_s")
    took = "" if learn_s is None else f", learned earlier in {learn_s:.0f} s"
    return f" ({n} learned groups read from the checkpoint{took})" if n else ""


LAYERWISE_HELP = ("run the PyTorch model one decoder layer at a time, reading each from disk (CPU): auto = for models "
                  "above 1B parameters, whose float32 copy would not leave room for the rest (default: auto)")


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", formatter_class=formatter, help="perplexity of a PyTorch or ONNX model",
        description=textwrap.dedent("""\
            Perplexity on a corpus's eval split, exactly per docs/evaluation.md: the eval text is
            tokenized once without special tokens, cut into consecutive windows of --seqlen
            tokens, each window one sequence without KV cache; BOS is prefixed as context only
            where the tokenizer adds it by default. PyTorch models run in --dtype on --device;
            ONNX models run in ONNX Runtime with exact session options. With --plan (a folder
            from 'quantize -o') the PyTorch model executes the plan: --runtime torch simulates
            it with fake quantization, --runtime kernels runs the real kernels (FreeActQuantize +
            Int4MatMul, the Triton source the TensorRT plugins are compiled from; no TensorRT) on a
            CUDA GPU, or on the CPU in Triton's interpreter with TRITON_INTERPRET=1 (slow)."""),
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
    p.add_argument("--seqlen", type=SEQLEN, default=1024, help="tokens per window (default: 1024)")
    p.add_argument("--windows", type=COUNT, default=32, help="windows from the start of the eval text (default: 32)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="PyTorch weight dtype (default: float32; ONNX keeps its own)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = CUDA when present (default: auto)")
    p.add_argument("--tokenizer", metavar="T", help="tokenizer source for an ONNX file that has none beside it")
    p.add_argument("--plan", metavar="DIR", help="execute this quantization plan (a folder from 'quantize -o')")
    p.add_argument("--runtime", default="torch", choices=["torch", "kernels"],
                   help="with --plan: torch = fake-quant simulation, kernels = the Triton kernels (default: torch)")
    p.add_argument("--layerwise", default="auto", choices=["auto", "on", "off"], help=LAYERWISE_HELP)
    p.add_argument("--json", metavar="PATH", help="also write the full record (settings, per-window NLL) here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> None:

    from freeact_export import api
    from freeact_export.api import EvalSpec, check_new_output, require_room

    spec = settings(EvalSpec, seqlen=args.seqlen, windows=args.windows)
    if args.json:
        require_room(Path(args.json))  # fail before the long run
        check_new_output(Path(args.json), args.overwrite, kind="file")
    if args.plan:
        require_folder(args.plan, "a plan folder written by 'freeact-export quantize ... -o DIR'")
    record = api.evaluate(args.model, args.corpus, spec, dtype=args.dtype, device=args.device,
                          tokenizer=args.tokenizer, plan=args.plan, runtime=args.runtime, layerwise=args.layerwise)
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
        "export", formatter_class=formatter, help="floating-point ONNX of a decoder LM",
        description=textwrap.dedent("""\
            Export a decoder LM's prefill graph to ONNX (dynamo exporter): inputs input_ids and
            attention_mask [batch, sequence], output logits [batch, sequence, vocab], batch and
            sequence dynamic, no KV cache. Writes a folder: model.onnx (+ model.onnx.data when
            the weights are large), the tokenizer and config, and export.json. ONNX Runtime
            then runs the graph on sample text and the max abs difference of its logits
            against PyTorch's is printed and recorded. Above 1B parameters (--stream) the model is
            traced without weights and each weight is written from its safetensors shards, so the
            model is never held in memory. The folder is written under a temporary name and
            renamed when complete."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export export --model smollm2-135m -o out/smollm2-135m-fp32
              freeact-export export --model ./Qwen2.5-0.5B -o out/qwen --external-data always
              freeact-export export --model ./Meta-Llama-3-8B --dtype bfloat16 -o out/llama3-8b-onnx"""))
    p.add_argument("--model", required=True, metavar="M", help="name, Hugging Face folder or .gguf file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="export folder to create")
    p.add_argument("--opset", type=COUNT, default=21, help="ONNX opset (default: 21, needed later for INT4)")
    p.add_argument("--external-data", default="auto", choices=["auto", "always", "never"],
                   help="weights in model.onnx.data: auto = only above ~1.8 GB (default: auto)")
    p.add_argument("--kv-cache", action="store_true",
                   help="also take past keys/values and return present ones (past_key_values.{i}.key ...)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="the graph's float type (default: float32; bfloat16 is not verified: ONNX Runtime's CPU "
                        "kernels do not run it)")
    p.add_argument("--stream", default="auto", choices=["auto", "on", "off"],
                   help="trace without weights and write each weight from the model's shards, never holding the "
                        "model (always external data): auto = above 1B parameters (default: auto)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch logits check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    from freeact_export import api
    from freeact_export.api import ExportSpec, resolve_model

    spec = settings(ExportSpec, opset=args.opset, external_data=args.external_data, verify=not args.no_verify,
                    kv_cache=args.kv_cache, dtype=args.dtype)
    resolve_model(args.model)  # an unknown model is its one error line, without a banner before it
    print(f"exporting {args.model} to ONNX (about a minute per 100M parameters on 2 CPU cores)", flush=True)
    record = api.export(args.model, args.output, spec, overwrite=args.overwrite, stream=args.stream)
    how = "streamed from the shards, " if record["streamed"] else ""
    print(f"wrote {args.output}/ ({', '.join(record['files'])}; {record['dtype']}) in {record['export_s']:.0f} s, "
          f"{how}peak memory {record['peak_rss_gb']:.1f} GB")
    if "verify_skipped" in record:
        print(record["verify_skipped"])
    if "parity_vs_torch" in record:
        p = record["parity_vs_torch"]
        print(f"ONNX Runtime vs PyTorch logits: max abs diff {p['max_abs_diff']:.3g} "
              f"(max |logit| {p['max_abs_reference']:.3g}), SQNR {p['sqnr_db']:.1f} dB "
              f"over {p['positions']} positions")


def _add_quantize(sub) -> None:
    from freeact_export.api import BITS_PRESETS, CALIB_PRESETS, DEFAULT_METHOD, DEFAULT_TYPES, METHODS

    p = sub.add_parser(
        "quantize", formatter_class=formatter, help="quantize a PyTorch model into a plan; simulated perplexity",
        description=textwrap.dedent("""\
            Calibrate a PyTorch model per token type, compute a quantization plan, and measure
            its perplexity with fake quantization (docs/evaluation.md protocol) before anything is exported.

            methods: rtn (no transform), smoothquant (alpha 0.5), quarot (randomised Hadamard
            on every linear group's input), smoothrot (smoothing alpha 0.5, then Hadamard),
            flatquant (learned Kronecker transform, smoothing and clipping, one type), freeact
            (the same shared weight transform with per-type activation masks), freeact-general
            (per-type activation factors A_k1 ⊗ A_k2 on the one shared weight fold). Append +gptq
            to any method to quantize its transformed weights with GPTQ (e.g. quarot+gptq).
            bits (docs/evaluation.md): w4a4 / w4a8 = INT4 per-channel weights, INT4 / INT8 per-token
            activations; w4a16 = INT4 weights in groups of 128 (64 for a 576-wide input: the
            largest power of two up to 128 that divides it), float activations. Weight rounding:
            --clip-search (QuaRot's w_clip), --code-range full (all 16 codes, ONNX Runtime's rule),
            --act-order (+gptq), --group-size (w4a16).
            types: token-type rules, first match wins, type 0 = every other token:
              single                       one type
              sink=pos:1                   the first token (attention sink) vs the rest
              mask=ids:126336              a mask / image token id set
              vision=input:token_type_ids  an explicit model input
              sink=pos:1;mask=ids:126336   combinations
            presets: cpu = 32 calibration windows x 512 tokens, 200 learning steps per group (about 30
            minutes for smollm2-135m on 2 cores); gpu = 128 x 1024 tokens (docs/evaluation.md), 1500 steps:
            meant for a GPU (hours of learning on a CPU; --checkpoint DIR keeps each learned group, so a
            stopped run resumes)."""),
        epilog=textwrap.dedent("""\
            examples:
              freeact-export quantize --model smollm2-135m --method freeact-general --bits w4a4 \\
                  --types "sink=pos:1" --preset cpu -o out/freeact-w4a4
              freeact-export quantize --model smollm2-135m --method quarot --bits w4a4 -o out/quarot-w4a4
              freeact-export quantize --model smollm2-135m --method rtn --bits w4a16 --windows 8
              freeact-export quantize --model ./qwen --method smoothrot --types "sink=pos:1" --device cuda"""))
    p.add_argument("--model", required=True, metavar="M", help="name, Hugging Face folder or .gguf file")
    p.add_argument("--corpus", default="wiki", metavar="C", help="calibration + eval corpus (default: wiki)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS, metavar="METHOD",
                   help=f"one of {', '.join(METHODS)} (default: {DEFAULT_METHOD}, the most accurate W4A4 transform)")
    p.add_argument("--bits", default="w4a4", choices=BITS_PRESETS, help="standard setting (default: w4a4)")
    p.add_argument("--types", default=DEFAULT_TYPES, metavar="RULES",
                   help=f"token-type rules (default: {DEFAULT_TYPES}, the attention sink)")
    p.add_argument("--preset", default="cpu", choices=list(CALIB_PRESETS), help="calibration size (default: cpu)")
    p.add_argument("--calib-windows", type=COUNT, metavar="N", help="calibration windows (overrides the preset)")
    p.add_argument("--calib-seqlen", type=SEQLEN, metavar="T", help="calibration window length (overrides the preset)")
    p.add_argument("--steps", type=COUNT, metavar="N", help="FreeAct / FlatQuant learning steps per group (preset's)")
    p.add_argument("--dedicated-fraction", type=float, metavar="F",
                   help="FreeAct: dimensions dedicated to each type, as a fraction of d (default 1/32)")
    p.add_argument("--type-weighting", choices=["tokens", "equal"],
                   help="FreeAct objective: sum over tokens (default) or each type's error equally")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the method's random choices (default: 0)")
    add_rounding(p)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: auto)")
    p.add_argument("--windows", type=COUNT, default=32, help="eval windows for the simulated perplexity (default: 32)")
    p.add_argument("--seqlen", type=SEQLEN, default=1024, help="eval window length (default: 1024)")
    p.add_argument("--no-eval", action="store_true", help="write the plan without measuring perplexity")
    p.add_argument("--checkpoint", metavar="DIR", help=CHECKPOINT_HELP)
    p.add_argument("--layerwise", default="auto", choices=["auto", "on", "off"], help=LAYERWISE_HELP)
    p.add_argument("--propagate", default="fp", choices=["fp", "quantized"],
                   help="layer by layer: each layer calibrates on the floating-point model's activations (fp: the "
                        "same plan as --layerwise off) or on the quantized earlier layers' outputs (default: fp)")
    p.add_argument("-o", "--output", metavar="DIR", help="folder for plan.json, plan.safetensors, report.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> None:
    from freeact_export import api
    from freeact_export.api import EvalSpec, Ranks, finish

    freeact = api.learning_settings(args.method, args.preset, steps=args.steps, checkpoint=args.checkpoint,
                                    dedicated_fraction=args.dedicated_fraction, type_weighting=args.type_weighting)
    eval_spec = None if args.no_eval else settings(EvalSpec, seqlen=args.seqlen, windows=args.windows)
    calib = api.calibration_settings(args.preset, args.calib_windows, args.calib_seqlen)
    ranks = Ranks.from_environment()  # under torchrun: this process's share of the work
    try:
        report = api.quantize(args.model, args.corpus, args.method, args.bits, args.types, args.preset, args.output,
                              seed=args.seed, device=args.device, eval_spec=eval_spec, calib=calib, freeact=freeact,
                              overwrite=args.overwrite, checkpoint=args.checkpoint, rounding=rounding(args),
                              layerwise=args.layerwise, propagate=args.propagate, ranks=ranks)
    finally:
        finish(ranks)
    if report is None:  # another rank than 0: rank 0 reports
        return
    counts = ", ".join(f"{k} {v}" for k, v in report["type_token_counts"].items())
    if report.get("layer_by_layer"):
        took = (f"layer by layer ({report['layer_by_layer']['propagate']} propagation), calibration and planning "
                f"{report['quantize_s']:.0f} s (tokens per type: {counts})")
    else:
        took = (f"calibration {report['calibration_s']:.0f} s (tokens per type: {counts}), "
                f"planning {report['plan_s']:.0f} s")
    print(f"{args.method} {args.bits}: {report['groups']} linear groups; {took}{_resumed(report)}; "
          f"peak memory {report['peak_rss_gb']:.1f} GB")
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
        print(f"wrote {args.output}/ (plan.json, plan.safetensors, report.json, manifest.json)")


def _add_rewrite(sub) -> None:
    from freeact_export.api import BITS_PRESETS, CALIB_PRESETS, DEFAULT_METHOD, DEFAULT_TYPES, METHODS

    p = sub.add_parser(
        "rewrite", formatter_class=formatter, help="the ONNX-in path, also spelled: freeact-export MODEL.onnx ...",
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
              freeact-export out/smollm2-135m-fp32 -o out/smollm2-freeact-w4a4   # freeact-general, sink=pos:1
              freeact-export model.onnx --method quarot+gptq --bits w4a8 --types single --no-check -o out/q
              freeact-export model.onnx --tokenizer ./hf-folder --corpus notes.txt -o out/notes"""))
    p.add_argument("model", metavar="MODEL", help="an .onnx file or a folder holding model.onnx")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="folder to create (default: <model>-<method>-<bits> beside the model)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS, metavar="METHOD",
                   help=f"one of {', '.join(METHODS)} (default: {DEFAULT_METHOD}, the most accurate W4A4 transform)")
    p.add_argument("--bits", default="w4a4", choices=BITS_PRESETS, help="(default: w4a4)")
    p.add_argument("--types", default=DEFAULT_TYPES, metavar="RULES",
                   help=f"token-type rules as in 'quantize' (default: {DEFAULT_TYPES}, the attention sink)")
    p.add_argument("--corpus", default="wiki", metavar="C", help="calibration + check corpus (default: wiki)")
    p.add_argument("--tokenizer", metavar="T", help="tokenizer source when none lies beside the model")
    p.add_argument("--preset", default="cpu", choices=list(CALIB_PRESETS), help="calibration size (default: cpu)")
    p.add_argument("--calib-windows", type=COUNT, metavar="N", help="calibration windows (overrides the preset)")
    p.add_argument("--calib-seqlen", type=SEQLEN, metavar="T", help="calibration window length (overrides the preset)")
    p.add_argument("--steps", type=COUNT, metavar="N", help="FreeAct / FlatQuant learning steps per group")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the method's random choices (default: 0)")
    add_rounding(p)
    p.add_argument("--checkpoint", metavar="DIR", help=CHECKPOINT_HELP)
    p.add_argument("--no-check", action="store_true", help="skip the parity check and perplexities")
    p.add_argument("--windows", type=COUNT, default=32, help="eval windows for the check's perplexities (default: 32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(run=_run_rewrite)


def _run_rewrite(args: argparse.Namespace) -> None:
    from freeact_export import api

    freeact = api.learning_settings(args.method, args.preset, steps=args.steps, checkpoint=args.checkpoint)
    output = args.output or api.rewrite_output(args.model, args.method, args.bits)
    calib = api.calibration_settings(args.preset, args.calib_windows, args.calib_seqlen)
    report = api.rewrite_onnx(args.model, output, corpus=args.corpus, method=args.method, bits=args.bits,
                          types=args.types, preset=args.preset, seed=args.seed, calib=calib, freeact=freeact,
                          tokenizer=args.tokenizer, overwrite=args.overwrite, checkpoint=args.checkpoint,
                          rounding=rounding(args))
    before, after = report["weight_bytes_before"], report["weight_bytes_after"]
    print(f"{args.method} {args.bits}: {report['quantized_layers']} linear layers in {report['groups']} groups "
          f"rewritten; calibration {report['calibration_s']:.0f} s (onnxruntime), planning {report['plan_s']:.0f} s"
          f"{_resumed(report)}, rewrite {report['rewrite_s']:.0f} s")
    print(f"weights of the rewritten layers: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB "
          f"({before / max(after, 1):.1f}x smaller, transforms and scales included)")
    for node, why in report["left_in_float"].items():
        print(f"left in floating point: {node}: {why}")
    print(f"wrote {output}/ (plugin.onnx, portable.onnx, plan/, report.json, tokenizer, manifest.json)")
    if not args.no_check:
        check_and_print(output, args.corpus, args.windows)


COMMANDS = ("eval", "export", "quantize", "rewrite", "check", "build", "bundle", "triton", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG, formatter_class=formatter, description=OVERVIEW, epilog=EXAMPLES,
        usage=f"{PROG} COMMAND [options]\n       {PROG} MODEL.onnx [options]")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, prog=PROG)
    _add_eval(sub)
    _add_export(sub)
    _add_quantize(sub)
    _add_rewrite(sub)
    add_check(sub)
    add_build(sub)
    add_bundle(sub)
    add_triton(sub)
    add_serve(sub)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; `freeact-export MODEL.onnx ...` is routed to `rewrite`."""
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        if _looks_like_a_command(argv[0]):
            commands = ", ".join(c for c in COMMANDS if c != "rewrite")
            parser.error(f"unknown command '{argv[0]}'; choose one of {commands}, or give MODEL.onnx (an .onnx file "
                         "or a folder holding model.onnx)")
        argv = ["rewrite", *argv]
    args = parser.parse_args(argv)
    if args.command in MODEL_COMMANDS:
        _quiet_library_progress_bars()
    return args


def _looks_like_a_command(word: str) -> bool:
    """A bare word that names no file and no known model: a misspelt command, not MODEL.onnx."""
    from freeact_export.api import MODELS

    return os.sep not in word and "." not in word and word not in MODELS and not os.path.exists(word)


# The commands that load models with transformers.
MODEL_COMMANDS = ("eval", "export", "quantize", "rewrite", "check")


def _quiet_library_progress_bars() -> None:
    """transformers' and huggingface_hub's own progress bars ("Loading weights") write to stderr, where a
    bad input must get exactly one line; ours (calibration, learning, perplexity) stay."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read where huggingface_hub is imported later
    from transformers.utils import logging

    logging.disable_progress_bar()


# A partial output's name (files.atomic_path): `.NAME.<random>.partial`; an error names NAME instead.
_PARTIAL = re.compile(r"\.(.+)\.[^.]+\.partial")
_OS_REMEDY = {
    errno.ENOSPC: "free some space there or choose another output folder",
    errno.EDQUOT: "free some space there (your disk quota is used up) or choose another output folder",
    errno.EFBIG: "the file outgrew the size this system allows (ulimit -f); raise the limit",
    errno.EROFS: "choose an output folder on a writable file system",
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
}


def _os_error(err: OSError) -> int:
    """A read or write the system refused (a full disk, a folder made read-only mid-run): one line naming
    the path and the reason; atomic_path has removed the partial output on its way out."""
    where = ""
    if isinstance(err.filename, (str, bytes, os.PathLike)):  # not a file descriptor
        parts = [_PARTIAL.fullmatch(part)[1] if _PARTIAL.fullmatch(part) else part
                 for part in Path(os.fsdecode(err.filename)).parts]
        where = f"{Path(*parts)}: "
    reason = err.strerror or type(err).__name__
    remedy = _OS_REMEDY.get(err.errno, "check the path and the disk, then run the command again")
    print(f"{PROG}: error: {where}{reason}; {remedy}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local anyway
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from freeact_export.api import interrupted_message, interruptible

    try:
        with interruptible():  # SIGTERM and SIGHUP end a run as Ctrl-C does: partial outputs removed
            args.run(args)
    except UserError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        return _os_error(err)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", 2)  # a bare KeyboardInterrupt is SIGINT's
        print(f"{PROG}: {interrupted_message(signum)}", file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
