import math

import numpy as np
import pytest
import torch

from freeact_export.config import EvalSpec
from freeact_export.errors import UserError
from freeact_export.evaluate.perplexity import (
    bos_context_id,
    eval_windows,
    perplexity,
    window_nll_sum,
)
from tiny_models import tiny_tokenizer


def test_windows_without_bos_are_consecutive_and_drop_the_remainder():
    w = eval_windows(list(range(10)), EvalSpec(seqlen=3, windows=32), None, "c")
    assert w.context == 0 and w.available == 3
    assert w.input_ids.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert w.predictions_per_window == 2


def test_windows_with_bos_prefix_context_and_keep_predictions():
    w = eval_windows(list(range(10, 20)), EvalSpec(seqlen=4, windows=1), 7, "c")
    assert w.input_ids.tolist() == [[7, 10, 11, 12, 13]]
    assert w.context == 1 and w.available == 2
    assert w.predictions_per_window == 3  # seqlen - 1 either way


def test_corpus_shorter_than_one_window_is_refused():
    with pytest.raises(UserError, match="fewer than one window"):
        eval_windows(list(range(5)), EvalSpec(seqlen=8), None, "short.txt")


def _reference_nll(logits: np.ndarray, ids: np.ndarray, targets_from: int) -> float:
    """fp64 -log softmax, one position at a time."""
    total = 0.0
    for t in range(targets_from, len(ids)):
        row = logits[t - 1].astype(np.float64)
        log_z = row.max() + math.log(np.exp(row - row.max()).sum())
        total += log_z - row[ids[t]]
    return total


@pytest.mark.parametrize("context", [0, 1])
def test_window_nll_matches_fp64_reference(context):
    gen = np.random.default_rng(0)
    ids = gen.integers(0, 50, size=600)
    logits = gen.normal(scale=4.0, size=(600, 50)).astype(np.float32)
    got = window_nll_sum(torch.from_numpy(logits), torch.from_numpy(ids), context)
    assert got == pytest.approx(_reference_nll(logits, ids, context + 1), rel=1e-12)


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    vocab = 37

    def uniform(input_ids):
        return torch.zeros(input_ids.shape + (vocab,))

    w = eval_windows(list(range(30)), EvalSpec(seqlen=5, windows=4), 1, "c")
    result = perplexity(uniform, w, progress=False)
    assert result.perplexity == pytest.approx(vocab, rel=1e-12)
    assert result.windows == 4 and result.predictions == 16


def test_perfect_model_has_perplexity_one():
    def oracle(input_ids):
        logits = torch.full(input_ids.shape + (10,), -1e4)
        nxt = np.roll(input_ids, -1, axis=1)  # the token that actually follows
        logits.scatter_(-1, torch.from_numpy(nxt)[..., None], 0.0)
        return logits

    w = eval_windows([i % 10 for i in range(40)], EvalSpec(seqlen=8, windows=5), None, "c")
    assert perplexity(oracle, w, progress=False).perplexity == pytest.approx(1.0, abs=1e-9)


def test_non_finite_logits_are_reported():
    w = eval_windows(list(range(8)), EvalSpec(seqlen=4, windows=1), None, "c")
    with pytest.raises(UserError, match="non-finite"):
        perplexity(lambda ids: torch.full(ids.shape + (8,), float("nan")), w, progress=False)


def test_bos_rule_follows_the_tokenizer_default():
    assert bos_context_id(tiny_tokenizer(adds_bos=False)) is None
    with_bos = tiny_tokenizer(adds_bos=True)
    assert bos_context_id(with_bos) == with_bos.bos_token_id == 1
