"""Fake-quant PyTorch execution of a plan: accuracy before anything is exported."""
