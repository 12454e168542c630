"""ONNX Runtime causal-LM runner with exact (parity-grade) session options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from freeact_export.errors import UserError
from freeact_export.onnx_in.feeds import PrefillFeeds

_ONNX_FLOAT_NAMES = {"tensor(float)": "float32", "tensor(float16)": "float16",
                     "tensor(bfloat16)": "bfloat16", "tensor(double)": "float64"}


def exact_session_options() -> ort.SessionOptions:
    """Options under which ONNX Runtime computes what the graph says.

    ORT fuses an INT4 DequantizeLinear + MatMul into MatMulNBits at accuracy level 4 by
    default, which silently quantizes the activations to int8 (docs/design.md, platform facts);
    level 0 keeps the float computation. Harmless for graphs without such a pattern.
    """
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    options.log_severity_level = 4  # fatal only: an error is raised too, and reaches the user as our one line
    return options


def session_with_outputs(model: onnx.ModelProto, folder: Path, outputs: dict[str, int | None],
                         options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    """A session of `model` with extra graph outputs (name → elem type, None = let ORT infer it).

    The model file is not touched; weights kept in external files are read where they are
    (ORT's external-initializer folder), so no graph bigger than protobuf's limit is rewritten.
    """
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    known = {o.name for o in tapped.graph.output}
    for name, elem in outputs.items():
        if name not in known:
            info = (onnx.helper.make_empty_tensor_value_info(name) if elem is None
                    else onnx.helper.make_tensor_value_info(name, elem, None))
            tapped.graph.output.append(info)
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     str(Path(folder).resolve()))
    return ort.InferenceSession(tapped.SerializeToString(), options, providers=providers)


def providers_for(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError("ONNX Runtime here has no CUDA provider; install the extra "
                        "'freeact-export[gpu]' (onnxruntime-gpu) or use --device cpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


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
