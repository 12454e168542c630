"""Every transform is exact without quantization: float64, 1e-6 relative (the issue's bar)."""

import pytest
import torch

from freeact_export.transforms.apply import activation_side, kron_apply, weight_side
from freeact_export.transforms.hadamard import random_orthogonal

D1, D2 = 4, 9
D = D1 * D2


def _tensors(kind: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    smooth = torch.rand(D, dtype=torch.float64, generator=gen) + 0.5
    if kind == "identity":
        return {"smooth": smooth}
    if kind == "dense":  # a general invertible (not orthogonal) matrix
        return {"smooth": smooth, "matrix": torch.eye(D, dtype=torch.float64) + 0.3 * torch.randn(D, D, generator=gen,
                                                                                                   dtype=torch.float64)}
    if kind == "kronecker":
        return {"kron_1": torch.eye(D1, dtype=torch.float64) + 0.3 * torch.randn(D1, D1, generator=gen,
                                                                                  dtype=torch.float64),
                "kron_2": random_orthogonal(D2, 3)}
    return {"smooth": smooth, "signs": torch.randint(0, 2, (D,), generator=gen).double() * 2 - 1}


@pytest.mark.parametrize("kind", ["identity", "dense", "kronecker", "hadamard"])
def test_transform_is_exact_without_quantization(kind):
    gen = torch.Generator().manual_seed(0)
    tensors = _tensors(kind, gen)
    x = torch.randn(7, D, dtype=torch.float64, generator=gen)
    w = torch.randn(5, D, dtype=torch.float64, generator=gen)
    reference = x @ w.T
    got = activation_side(x, kind, tensors) @ weight_side(w, kind, tensors).T
    assert torch.linalg.norm(got - reference) <= 1e-6 * torch.linalg.norm(reference)


def test_kron_apply_equals_dense_kronecker_product():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(D1, D1, generator=gen, dtype=torch.float64)
    b = torch.randn(D2, D2, generator=gen, dtype=torch.float64)
    x = torch.randn(3, D, generator=gen, dtype=torch.float64)
    assert torch.allclose(kron_apply(x, a, b), x @ torch.kron(a, b), atol=1e-12)
