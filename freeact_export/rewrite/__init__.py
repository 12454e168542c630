"""Rewrite an ONNX graph with a plan: the plugin graph (custom ops) and the portable graph (standard ops)."""
