"""Runners that execute a model: PyTorch, ONNX Runtime (TensorRT engines in a later stage)."""
