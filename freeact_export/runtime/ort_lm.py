"""ONNX Runtime causal-LM runner with exact (parity-grade) session options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from freeact_export.errors import UserError
from freeact_export.onnx_in.feeds import PrefillFeeds
from freeact_export.onnx_in.session import exact_session_options, providers_for

_ONNX_FLOAT_NAMES = {"tensor(float)": "float32", "tensor(float16)": "float16",
                     "tensor(bfloat16)": "bfloat16", "tensor(double)": "float64"}


class OrtLogits:
    """Runs an exported decoder LM: input_ids (+ attention_mask) in, logits out.

    Graphs with KV-cache inputs run as a prefill from an empty cache (onnx_in.feeds).
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, device: str = "cpu", options: ort.SessionOptions | None = None):
        try:
            self.session = ort.InferenceSession(str(path), options or exact_session_options(),
                                                providers=providers_for(device))
        except UserError:
            raise
        except Exception as err:  # ORT raises its own pybind types for unreadable models
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"ONNX Runtime cannot load {path}: {first}") from None
        self.device = device
        self.feeds = PrefillFeeds(self.session.get_inputs(), str(path))
        outputs = self.session.get_outputs()
        self.output = next((o for o in outputs if o.name == "logits"), outputs[0])
        self.dtype = _ONNX_FLOAT_NAMES.get(self.output.type, self.output.type)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> torch.Tensor:
        (logits,) = self.session.run([self.output.name], self.feeds(input_ids, attention_mask))
        return torch.from_numpy(logits).float()
