"""Perplexity exactly as docs/evaluation.md defines it, independent of the runtime.

The eval text is tokenized once (no special tokens) and cut into consecutive windows of
`seqlen` tokens. Where the tokenizer adds BOS by default, each window gets BOS in front as
context; either way the prediction targets are the window's own tokens 1..seqlen-1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from tqdm import tqdm

from freeact_export.config import EvalSpec
from freeact_export.errors import UserError
from freeact_export.models import bos_context_id

if TYPE_CHECKING:
    from freeact_export.assets import Corpus

# Rows of logits turned into float64 log-probabilities at a time: bounds the memory of a
# 1024 x 150k-vocabulary window to ~300 MB instead of 1.2 GB.
_NLL_CHUNK_ROWS = 256


class LogitsRunner(Protocol):
    """Anything that maps input_ids [1, T] (int64) to logits [1, T, V] as a CPU torch tensor."""

    def __call__(self, input_ids: np.ndarray) -> torch.Tensor: ...


@dataclasses.dataclass(frozen=True)
class Windows:
    """Model inputs for the perplexity run.

    Attributes:
        input_ids: [n, context + seqlen] int64; column 0 is BOS when context == 1.
        context: 1 when a BOS context token leads each row, else 0.
        available: how many full windows the text holds (may exceed the number used).
    """

    input_ids: np.ndarray
    context: int
    available: int

    @property
    def predictions_per_window(self) -> int:
        return self.input_ids.shape[1] - self.context - 1


def corpus_windows(tokenizer, corpus: Corpus, spec: EvalSpec) -> Windows:
    """The windows (docs/evaluation.md) of a corpus's eval split for this tokenizer (BOS rule included)."""
    token_ids = tokenizer(corpus.eval_text, add_special_tokens=False).input_ids
    return eval_windows(token_ids, spec, bos_context_id(tokenizer), corpus.name)


def eval_windows(token_ids: list[int], spec: EvalSpec, bos_id: int | None, corpus: str) -> Windows:
    """Cut a token stream into the windows of docs/evaluation.md; UserError if not even one fits."""
    available = len(token_ids) // spec.seqlen
    if available == 0:
        raise UserError(f"corpus {corpus} has {len(token_ids)} tokens, fewer than one window of "
                        f"seqlen {spec.seqlen}; lower --seqlen or give a longer text")
    count = min(spec.windows, available)
    windows = np.asarray(token_ids[: count * spec.seqlen], dtype=np.int64).reshape(count, spec.seqlen)
    if bos_id is not None:
        windows = np.concatenate([np.full((count, 1), bos_id, dtype=np.int64), windows], axis=1)
    return Windows(windows, int(bos_id is not None), available)


def window_nll_sum(logits: torch.Tensor, input_ids: torch.Tensor, context: int) -> float:
    """Sum of -log p(token) over the window's own tokens 1..seqlen-1, in float64.

    Args:
        logits: [T, V] for one row of inputs.
        input_ids: [T] that row.
        context: leading context tokens (BOS) that are inputs but never targets' predecessors
            counted: targets are input_ids[context + 1:].
    """
    predictors = logits[context:-1]
    targets = input_ids[context + 1:]
    total = 0.0
    for start in range(0, predictors.shape[0], _NLL_CHUNK_ROWS):
        rows = predictors[start:start + _NLL_CHUNK_ROWS].double()
        picked = rows.gather(-1, targets[start:start + _NLL_CHUNK_ROWS, None]).squeeze(-1)
        total += float((torch.logsumexp(rows, dim=-1) - picked).sum())
    return total


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll_mean: float
    windows: int
    predictions: int
    window_nll_means: list[float]


def perplexity(runner: LogitsRunner, windows: Windows, progress: bool = True) -> PerplexityResult:
    """exp(mean NLL) over every prediction of every window, one window per forward pass."""
    per_window = []
    total = 0.0
    for row in tqdm(windows.input_ids, desc="perplexity", unit="window", disable=not progress):
        logits = runner(row[None, :])[0]
        if not torch.isfinite(logits).all():
            raise UserError("the model produced non-finite logits (NaN or inf); its weights or "
                            "dtype are not usable for evaluation")
        nll = window_nll_sum(logits, torch.from_numpy(row), windows.context)
        per_window.append(nll / windows.predictions_per_window)
        total += nll
    predictions = windows.predictions_per_window * len(per_window)
    mean = total / predictions
    return PerplexityResult(math.exp(mean), mean, len(per_window), predictions, per_window)
