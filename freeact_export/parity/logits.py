"""Logits parity of two runners on the same inputs, over the positions the mask keeps."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

Runner = Callable[[np.ndarray, np.ndarray], torch.Tensor]

# Built-in sample text, so the export check needs no corpus. Two lengths and right padding
# exercise the dynamic batch and sequence axes and the attention mask.
SAMPLE_TEXTS = (
    "The mitochondrion is an organelle found in the cells of most eukaryotes. It uses aerobic "
    "respiration to generate adenosine triphosphate, which is used throughout the cell.",
    "Paris is the capital of France.",
)


@dataclasses.dataclass(frozen=True)
class LogitsParity:
    """Error of `candidate` against `reference` over unmasked positions.

    Attributes:
        max_abs_diff: largest |reference - candidate| over all compared logits.
        max_abs_reference: largest |reference| (the scale max_abs_diff is read against).
        sqnr_db: 20·log10(‖reference‖ / ‖reference − candidate‖); inf when identical.
        positions: token positions compared.
    """

    max_abs_diff: float
    max_abs_reference: float
    sqnr_db: float
    positions: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sample_batches(tokenizer) -> list[tuple[np.ndarray, np.ndarray]]:
    """A right-padded batch of two sample texts, then the short text alone."""
    encoded = [tokenizer(text).input_ids for text in SAMPLE_TEXTS]
    length = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(encoded), length), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    short = np.asarray([encoded[-1]], dtype=np.int64)
    return [(ids, mask), (short, np.ones_like(short))]


def compare_logits(reference: Runner, candidate: Runner,
                   batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> LogitsParity:
    """Run both runners on every batch and pool the error over positions with mask == 1.

    Padded positions are excluded: their rows attend to nothing valid and each runtime
    fills them differently, which says nothing about the model.
    """
    max_diff = max_ref = 0.0
    signal = noise = 0.0
    positions = 0
    for ids, mask in batches:
        keep = torch.from_numpy(mask.astype(bool))
        ref = reference(ids, mask)[keep].double()
        cand = candidate(ids, mask)[keep].double()
        diff = ref - cand
        max_diff = max(max_diff, float(diff.abs().max()))
        max_ref = max(max_ref, float(ref.abs().max()))
        signal += float((ref**2).sum())
        noise += float((diff**2).sum())
        positions += int(keep.sum())
    sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
    return LogitsParity(max_diff, max_ref, sqnr, positions)
