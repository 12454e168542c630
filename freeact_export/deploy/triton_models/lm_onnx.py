"""Triton Python-backend model: the portable graph (standard ONNX ops) in ONNX Runtime on the CPU.

Inputs input_ids [batch, tokens] INT64 and optional attention_mask; output logits
[batch, tokens, vocab] FP32. Graphs with KV-cache inputs run as a prefill from an empty cache.
More tokens than the parameter max_tokens (--max-tokens) is an error that names that limit.
"""

import json
import os
import sys

sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

_INTS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        # ORT would fuse INT4 DequantizeLinear + MatMul into MatMulNBits at accuracy level 4,
        # quantizing activations to int8; level 0 computes what the graph says.
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
        options.log_severity_level = 3
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(os.path.join(folder, params.get("onnx_file", "portable.onnx")),
                                            options, providers=["CPUExecutionProvider"])
        self.max_tokens = int(params.get("max_tokens", "0"))
        self.inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        self.logits = "logits" if "logits" in outputs else outputs[0]

    def _feeds(self, input_ids, attention_mask):
        # The same feeds as freeact_export/onnx_in/feeds.py builds, written again on purpose: this
        # file runs alone in Triton's Python backend, where freeact_export may not be installed.
        batch, length = input_ids.shape
        values = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": np.broadcast_to(np.arange(length), (batch, length))}
        feeds = {}
        for i in self.inputs:
            if i.name in values:
                feeds[i.name] = np.ascontiguousarray(values[i.name], dtype=_INTS.get(i.type, np.int64))
            elif i.name == "use_cache_branch":
                feeds[i.name] = np.zeros([1] * len(i.shape), dtype=bool)
            else:  # an empty past key/value cache [batch, heads, 0, head size]
                feeds[i.name] = np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=_FLOATS[i.type])
        return feeds

    def execute(self, requests):
        responses = []
        for request in requests:
            input_ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().astype(np.int64)
            mask_tensor = pb_utils.get_input_tensor_by_name(request, "attention_mask")
            mask = np.ones_like(input_ids) if mask_tensor is None else mask_tensor.as_numpy().astype(np.int64)
            if mask.shape != input_ids.shape:
                error = f"attention_mask has shape {list(mask.shape)}, input_ids {list(input_ids.shape)}"
            elif self.max_tokens and input_ids.shape[1] > self.max_tokens:
                error = (f"{input_ids.shape[1]} tokens sent; this model takes at most {self.max_tokens} "
                         "(the repository's --max-tokens)")
            else:
                error = None
            if error:
                error = pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG)  # the client's to fix: HTTP 400
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            (logits,) = self.session.run([self.logits], self._feeds(input_ids, mask))
            tensor = pb_utils.Tensor("logits", np.ascontiguousarray(logits, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
