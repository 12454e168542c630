"""Deployment: Triton model repositories and edge bundles."""
