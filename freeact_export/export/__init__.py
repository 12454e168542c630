"""PyTorch → ONNX export of the floating-point model."""
