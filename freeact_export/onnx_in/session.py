"""ONNX Runtime sessions that compute what the graph says (parity-grade options), with tensors tapped as outputs."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort

from freeact_export.errors import UserError


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
