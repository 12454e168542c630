"""The deploy commands: build (TensorRT engine), bundle (edge), triton (model repository), serve."""

from __future__ import annotations

import argparse
import textwrap

from freeact_export.cli_common import COUNT, formatter, int_at_least, port, require_folder, seconds, settings

REWRITTEN = "a folder written by 'freeact-export MODEL.onnx'"


def add_build(sub) -> None:
    p = sub.add_parser(
        "build", formatter_class=formatter, help="TensorRT engine from the plugin graph",
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
    p.add_argument("--max-tokens", type=COUNT, default=2048, help="new tokens per request, at most (default: 2048)")
    p.add_argument("--max-batch", type=COUNT, default=1, help="requests per batch, at most (default: 1)")
    p.add_argument("--opt-tokens", type=COUNT, metavar="N", help="tokens TensorRT tunes for (default: max // 2)")
    p.add_argument("--opt-batch", type=COUNT, default=1, help="batch TensorRT tunes for (default: 1)")
    p.add_argument("--max-past", type=int_at_least(0), metavar="N",
                   help="KV-cache graphs: cached tokens, at most (default: --max-tokens)")
    p.add_argument("--no-fp16", action="store_true", help="keep the floating-point layers in fp32")
    p.add_argument("--strongly-typed", action="store_true",
                   help="build a strongly typed network: every tensor keeps the graph's type, so TensorRT asks "
                        "for no INT8 scales for the plugins' INT8 codes (implies --no-fp16; try it where a "
                        "build fails with 'missing int8 scales')")
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
    from freeact_export.api import BuildSpec, ProfileSpec

    require_folder(args.folder, REWRITTEN)
    profile = settings(ProfileSpec, max_tokens=args.max_tokens, max_batch=args.max_batch, opt_tokens=args.opt_tokens,
                       opt_batch=args.opt_batch, max_past=args.max_past)
    spec = settings(BuildSpec, fp16=not (args.no_fp16 or args.strongly_typed),
                    version_compatible=args.version_compatible, exclude_lean_runtime=args.exclude_lean_runtime,
                    strongly_typed=args.strongly_typed)
    record = api.build_engine(args.folder, args.output, profile, spec, timing_cache=args.timing_cache,
                              plugin_library=args.plugin_library, overwrite=args.overwrite)
    out = args.output or f"{args.folder}/engine"
    flags = ", ".join(k for k, v in record["tensorrt"].items() if v is True) or "fp32"
    print(f"built {out}/model.plan in {record['build_s']:.0f} s: TensorRT {record['tensorrt']['version']} ({flags}), "
          f"{record['gpu']['name']} ({record['gpu']['sm']}), CUDA {record['cuda']['driver']} driver")
    for name, s in record["profile"].items():
        print(f"  profile {name}: min {s['min']} opt {s['opt']} max {s['max']}")
    print(f"wrote {out}/build.json; timing cache {record['timing_cache']}")


def add_bundle(sub) -> None:
    p = sub.add_parser(
        "bundle", formatter_class=formatter, help="edge bundle: engine, plugin library, manifest, runner.py",
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

    require_folder(args.folder, REWRITTEN)
    manifest = api.bundle(args.folder, args.output, args.engine, overwrite=args.overwrite)
    print(f"wrote {args.output}/ ({', '.join(manifest['files'])}, manifest.json) for {manifest['gpu']['sm']} "
          f"({manifest['gpu']['name']}), TensorRT {manifest['tensorrt']['version']}")
    print(f"on the target: python {args.output}/runner.py TOKEN_ID ...")


def add_triton(sub) -> None:
    p = sub.add_parser(
        "triton", formatter_class=formatter, help="Triton Inference Server model repository",
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
    p.add_argument("--max-batch", type=COUNT, default=8, metavar="N",
                   help="max_batch_size of the batched models (default: 8)")
    p.add_argument("--instances", type=COUNT, default=1, metavar="N", help="instances of each model (default: 1)")
    p.add_argument("--max-tokens", type=COUNT, default=2048, metavar="N",
                   help="longest sequence accepted (the engine's profile maximum; default: 2048)")
    p.add_argument("--max-new-tokens", type=COUNT, default=32, metavar="N",
                   help="freeact_generate's cap on generated tokens (default: 32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing repository folder")
    p.set_defaults(run=_run_triton)


def _run_triton(args: argparse.Namespace) -> None:
    from freeact_export import api

    require_folder(args.folder, REWRITTEN)
    record = api.triton(args.folder, args.output, engine=args.engine, plugin=args.plugin_lib,
                        max_batch=args.max_batch, instances=args.instances, max_tokens=args.max_tokens,
                        max_new_tokens=args.max_new_tokens, overwrite=args.overwrite)
    for name, why in record["skipped"].items():
        print(f"note: {name} skipped: {why}")
    print(f"wrote {args.output}/ (models: {', '.join(record['models'])}); every config.pbtxt checked with "
          "Triton's model-config protobuf")


def add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", formatter_class=formatter, help="serve a Triton repository here, on the CPU, on loopback",
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
    p.add_argument("--http-port", type=port, default=8000, metavar="N", help="HTTP port (default: 8000)")
    p.add_argument("--grpc-port", type=port, default=8001, metavar="N", help="gRPC port (default: 8001)")
    p.add_argument("--workdir", metavar="DIR",
                   help="where the backend links and tritonserver.log go (default: a temporary folder)")
    p.add_argument("--timeout", type=seconds, default=120.0, metavar="S",
                   help="seconds to wait for every model to load (default: 120)")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> None:
    import signal

    from freeact_export import api

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C, and kill's SIGTERM, go through the same clean stop (a background job may have
    # SIGINT ignored; an unhandled SIGTERM would leave the server, in its own session, running).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    require_folder(args.repository, "a repository written by 'freeact-export triton DIR -o REPO'")
    with api.serve(args.repository, http_port=args.http_port, grpc_port=args.grpc_port, workdir=args.workdir,
                   timeout_s=args.timeout) as server:
        print(f"serving {', '.join(server['models'])}\n  HTTP http://{server['http']}   gRPC {server['grpc']}\n"
              f"  log {server['log']}\nCtrl-C stops it", flush=True)
        try:
            code = server["process"].wait()
        except KeyboardInterrupt:
            print("stopping tritonserver", flush=True)
            return
        raise api.UserError(f"tritonserver exited with status {code}; see {server['log']}")
