"""Quantizers, the INT4 packing reference, and the quantization methods."""
