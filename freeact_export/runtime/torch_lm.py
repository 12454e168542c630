"""PyTorch causal-LM runners: input_ids in, logits out, no KV cache; the plan runners build on the plain one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from freeact_export.calibrate.stats import TypeContext
from freeact_export.token_types import TokenTypes


class TorchLogits:
    """Runs a Hugging Face causal LM on one device; logits come back float32 on the CPU."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")

    def prepare(self, input_ids: torch.Tensor) -> None:
        """Per-batch set-up before the forward (nothing here; plan runners set the token types)."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> torch.Tensor:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids)).to(self.device)
        mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(self.device)
        self.prepare(ids)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits.float().cpu()


class TypedLogits(TorchLogits):
    """A model executing a plan: every batch's token types, computed from its ids by the plan's rules,
    go into one TypeContext that each planned group reads.

    Args:
        token_types: the plan's type rules (token_types.TokenTypes text).
        wire: builds the plan-executing model around the context (simulation or kernels).
    """

    def __init__(self, token_types: str, wire: Callable[[TypeContext], torch.nn.Module]):
        self.token_types = TokenTypes.parse(token_types)
        self.context = TypeContext(self.token_types.num_types)
        super().__init__(wire(self.context).eval())

    def prepare(self, input_ids: torch.Tensor) -> None:
        self.context.types = self.token_types.assign(input_ids).reshape(-1)
