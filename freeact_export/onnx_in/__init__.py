"""ONNX frontend: calibrate an ONNX decoder LM with ONNX Runtime and feed the common planner."""
