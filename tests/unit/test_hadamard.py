import math

import pytest
import torch

from freeact_export.transforms.hadamard import (
    apply_hadamard,
    hadamard,
    hadamard_supported,
    random_orthogonal,
    random_signs,
)


@pytest.mark.parametrize("n", [1, 2, 4, 12, 20, 28, 36, 40, 44, 60, 64, 108, 576, 1536, 4096])
def test_hadamard_is_orthonormal_with_pm1_entries(n):
    h = hadamard(n)
    assert h.shape == (n, n)
    assert torch.allclose(h.abs() * math.sqrt(n), torch.ones(n, n, dtype=torch.float64))
    assert torch.allclose(h @ h.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("n", [14336, 2304, 3072, 5120, 8960, 18944, 896])
def test_llm_sizes_are_supported(n):
    assert hadamard_supported(n)


@pytest.mark.parametrize("n", [36, 576, 1536])
def test_structured_apply_equals_dense_product(n):
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(apply_hadamard(x), x @ hadamard(n), atol=1e-12)


def test_large_size_orthonormal_on_a_sample_of_rows():
    n = 14336  # 28 · 512: rows of H taken through the structured apply, never the 1.6 GB matrix
    picks = torch.arange(0, n, 997)
    rows = apply_hadamard(torch.eye(n, dtype=torch.float64)[picks])
    assert torch.allclose(rows.abs() * math.sqrt(n), torch.ones_like(rows))
    assert torch.allclose(rows @ rows.T, torch.eye(len(picks), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("n", [3, 6, 10, 14, 22])
def test_unsupported_orders_are_refused(n):
    assert not hadamard_supported(n)
    with pytest.raises(ValueError, match="no Hadamard construction"):
        hadamard(n)


def test_random_variants_are_orthogonal_and_seeded():
    randomised = [random_signs(36, s)[:, None] * hadamard(36) for s in (0, 0, 1)]
    for a, b, c in (randomised, [random_orthogonal(36, s) for s in (0, 0, 1)]):
        assert torch.allclose(a @ a.T, torch.eye(36, dtype=torch.float64), atol=1e-12)
        assert torch.equal(a, b) and not torch.equal(a, c)
