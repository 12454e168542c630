"""Hadamard matrices of order n = 2^k · m, where m is 1 or a Paley order.

Built, not tabulated: Paley I gives order q + 1 for a prime q ≡ 3 (mod 4), Paley II gives
2(q + 1) for a prime q ≡ 1 (mod 4), and Sylvester doubling supplies the power of two.
That covers the sizes of today's LLMs: 576 = 36·16 (Paley II, q = 17), 1536 = 12·128 (Paley I,
q = 11), 14336 = 28·512 (Paley II, q = 13), 4096 = 2^12, and e.g. 2304, 3072, 5120, 8960, 18944.
"""

from __future__ import annotations

import functools
import math

import torch


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % p for p in range(2, math.isqrt(q) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = χ(j − i), χ the quadratic character of the prime field GF(q)."""
    squares = {(a * a) % q for a in range(1, q)}
    chi = torch.tensor([0] + [1 if a in squares else -1 for a in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    return chi[(idx[None, :] - idx[:, None]) % q]


def _paley1(q: int) -> torch.Tensor:
    """Order q + 1, q prime ≡ 3 (mod 4): H = I + S with S the skew conference matrix."""
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    return torch.eye(q + 1, dtype=torch.float64) + s


def _paley2(q: int) -> torch.Tensor:
    """Order 2(q + 1), q prime ≡ 1 (mod 4), from the symmetric conference matrix C."""
    c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    a = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


def _base(m: int) -> torch.Tensor | None:
    """A Hadamard matrix of order m from Paley I or II, or None."""
    if m == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return _paley1(m - 1)
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return _paley2(m // 2 - 1)
    return None


def hadamard_supported(n: int) -> bool:
    return _factor(n) is not None


def _factor(n: int) -> tuple[int, int] | None:
    """(2^k, m) with a constructible base m; the smallest m first (cheapest build)."""
    k = 0
    while n % (2 ** (k + 1)) == 0:
        k += 1
    for j in range(k, -1, -1):
        m = n // 2**j
        if _base(m) is not None:
            return 2**j, m
    return None


@functools.lru_cache(maxsize=16)
def hadamard_factors(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with ±1 entries, A of order m (Paley or 1), B of order 2^k (Sylvester), H_n = A ⊗ B."""
    factor = _factor(n)
    if factor is None:
        raise ValueError(f"no Hadamard construction for order {n}: it must be 2^k times 1 or a Paley "
                         "order (q+1 for a prime q ≡ 3 mod 4, 2(q+1) for a prime q ≡ 1 mod 4)")
    power, m = factor
    b = torch.ones(1, 1, dtype=torch.float64)
    sylvester = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while b.shape[0] < power:
        b = torch.kron(b, sylvester)
    return _base(m), b


def hadamard(n: int) -> torch.Tensor:
    """Orthonormal Hadamard matrix H / sqrt(n), float64 [n, n] (dense: for moderate n)."""
    a, b = hadamard_factors(n)
    return torch.kron(a, b) / math.sqrt(n)


def apply_hadamard(x: torch.Tensor) -> torch.Tensor:
    """x @ hadamard(d) over the last dim, in O(d (m + 2^k)) per row without the dense matrix.

    For a row vector x viewed as X [m, 2^k], x (A ⊗ B) = vec(Aᵀ X B).
    """
    d = x.shape[-1]
    a, b = (f.to(x.dtype).to(x.device) for f in hadamard_factors(d))
    grid = x.reshape(*x.shape[:-1], a.shape[0], b.shape[0])
    return torch.einsum("...ij,ik,jl->...kl", grid, a, b).reshape(x.shape) / math.sqrt(d)


def random_signs(n: int, seed: int) -> torch.Tensor:
    """Seeded ±1 (float64 [n]): diag(signs) · H is QuaRot's randomised Hadamard, still orthonormal."""
    return (torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed)) * 2 - 1).double()


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian with the sign fix), float64."""
    gauss = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    q, r = torch.linalg.qr(gauss)
    return q * torch.sign(torch.diagonal(r))[None, :]
