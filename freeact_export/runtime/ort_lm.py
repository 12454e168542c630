"""ONNX Runtime causal-LM runner with exact (parity-grade) session options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from freeact_export.errors import UserError

_ONNX_TO_NUMPY = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_ONNX_FLOAT_NAMES = {"tensor(float)": "float32", "tensor(float16)": "float16",
                     "tensor(bfloat16)": "bfloat16", "tensor(double)": "float64"}


def exact_session_options() -> ort.SessionOptions:
    """Options under which ONNX Runtime computes what the graph says.

    ORT fuses an INT4 DequantizeLinear + MatMul into MatMulNBits at accuracy level 4 by
    default, which silently quantizes the activations to int8 (DESIGN.md, platform facts);
    level 0 keeps the float computation. Harmless for graphs without such a pattern.
    """
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    options.log_severity_level = 3
    return options


def providers_for(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError("ONNX Runtime here has no CUDA provider; install the extra "
                        "'freeact-export[gpu]' (onnxruntime-gpu) or use --device cpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtLogits:
    """Runs an exported decoder LM: input_ids (+ attention_mask) in, logits out.

    Graphs with KV-cache inputs are taken by the ONNX frontend of a later stage; here any
    input other than input_ids / attention_mask / position_ids is refused by name.
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, device: str = "cpu"):
        try:
            self.session = ort.InferenceSession(str(path), exact_session_options(),
                                                providers=providers_for(device))
        except UserError:
            raise
        except Exception as err:  # ORT raises its own pybind types for unreadable models
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"ONNX Runtime cannot load {path}: {first}") from None
        self.device = device
        inputs = {i.name: i for i in self.session.get_inputs()}
        unsupported = sorted(set(inputs) - {"input_ids", "attention_mask", "position_ids"})
        if "input_ids" not in inputs or unsupported:
            raise UserError(f"{path} takes inputs {sorted(inputs)}; evaluation needs input_ids and "
                            "at most attention_mask / position_ids")
        self.input_types = {name: _ONNX_TO_NUMPY.get(i.type, np.int64) for name, i in inputs.items()}
        outputs = self.session.get_outputs()
        self.output = next((o for o in outputs if o.name == "logits"), outputs[0])
        self.dtype = _ONNX_FLOAT_NAMES.get(self.output.type, self.output.type)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> torch.Tensor:
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = np.ones((batch, length), dtype=np.int64)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "position_ids": np.broadcast_to(np.arange(length), (batch, length))}
        feeds = {name: np.ascontiguousarray(feeds[name], dtype=dtype)
                 for name, dtype in self.input_types.items()}
        (logits,) = self.session.run([self.output.name], feeds)
        return torch.from_numpy(logits).float()
