"""Accuracy measurement: perplexity per docs/evaluation.md, for any logits runner."""
