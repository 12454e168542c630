"""freeact-export: FreeAct 4-bit quantization, ONNX export and TensorRT deployment."""

__version__ = "0.1.0"
