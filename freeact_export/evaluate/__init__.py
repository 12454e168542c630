"""Accuracy measurement: perplexity per shared/EVAL.md, for any logits runner."""
