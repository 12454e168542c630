"""Calibration: activation statistics per token type for every group of linear layers."""
