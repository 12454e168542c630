"""PyTorch causal-LM runner: input_ids in, logits out, no KV cache."""

from __future__ import annotations

import numpy as np
import torch


class TorchLogits:
    """Runs a Hugging Face causal LM on one device; logits come back float32 on the CPU."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> torch.Tensor:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids)).to(self.device)
        mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits.float().cpu()
