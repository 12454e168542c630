"""Apply a plan's transform: online to activations, offline (float64) to weights.

For an invertible T and smoothing s, y = x Wᵀ = ((x / s) T) (W diag(s) T⁻ᵀ)ᵀ. Activations
take `activation_side` at run time (online); weights take `weight_side` once (offline).
"""

from __future__ import annotations

import torch

from freeact_export.plan import ONLINE_TENSORS
from freeact_export.transforms.hadamard import apply_hadamard


def kron_apply(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (A ⊗ B) over the last dim in O(d (d1 + d2)): vec(Aᵀ X B) with X = x viewed [d1, d2]."""
    grid = x.reshape(*x.shape[:-1], a.shape[0], b.shape[0])
    return torch.einsum("...ij,ik,jl->...kl", grid, a.to(x.dtype), b.to(x.dtype)).reshape(x.shape)


def for_type(tensors: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """The transform tensors type k's tokens use: the plan's per-type Kronecker factors where it has them."""
    if "type_kron_1" not in tensors:
        return tensors
    return {**tensors, "kron_1": tensors["type_kron_1"][k], "kron_2": tensors["type_kron_2"][k]}


def typed_activation_side(x: torch.Tensor, types: torch.Tensor, kind: str,
                          tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """activation_side with each token's own type's factors (types: x's leading shape, ints)."""
    if "type_kron_1" not in tensors:
        return activation_side(x, kind, tensors)
    y = torch.empty_like(x)
    for k in range(tensors["type_kron_1"].shape[0]):
        chosen = types == k
        if bool(chosen.any()):
            y[chosen] = activation_side(x[chosen], kind, for_type(tensors, k))
    return y


def transform(x: torch.Tensor, kind: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """x T over the last dim (no smoothing, no mask)."""
    if kind == "identity":
        return x
    if kind == "dense":
        return x @ tensors["matrix"].to(x.dtype)
    if kind == "kronecker":
        return kron_apply(x, tensors["kron_1"], tensors["kron_2"])
    if kind == "hadamard":
        return apply_hadamard(x * tensors["signs"].to(x.dtype))
    raise ValueError(f"unknown transform kind {kind}")


def activation_side(x: torch.Tensor, kind: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """(x / smooth) T: what the activations go through at run time, before masks and quantization."""
    if "smooth" in tensors:
        x = x / tensors["smooth"].to(x.dtype)
    return transform(x, kind, tensors)


def weight_side(w: torch.Tensor, kind: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """W diag(smooth) T⁻ᵀ in float64: the offline fold of a weight [out, in]."""
    w = w.double()
    if "smooth" in tensors:
        w = w * tensors["smooth"].double()
    if kind == "identity":
        return w
    if kind == "dense":
        return w @ torch.linalg.inv(tensors["matrix"].double()).T
    if kind == "kronecker":
        inv1 = torch.linalg.inv(tensors["kron_1"].double()).T
        inv2 = torch.linalg.inv(tensors["kron_2"].double()).T
        return kron_apply(w, inv1, inv2)
    if kind == "hadamard":  # orthogonal: T⁻ᵀ = T
        return transform(w, kind, tensors)
    raise ValueError(f"unknown transform kind {kind}")


def type_matrices(kind: str, tensors: dict[str, torch.Tensor], num_types: int, d: int) -> torch.Tensor:
    """Dense per-type activation matrices T_k [K, d, d] (float64) with x̃_k = x T_k.

    T_k = diag(1/s) T_k diag(m_k): smoothing, the transform (shared, or type k's own factors) and
    type k's mask, whichever the plan holds. For analysis (Hessians, difficulty), not for the run-time path, which never
    forms these matrices.
    """
    online = {k: v.double() for k, v in tensors.items() if k in ONLINE_TENSORS}
    eye = torch.eye(d, dtype=torch.float64)
    mats = torch.stack([activation_side(eye, kind, for_type(online, k)) for k in range(num_types)])
    if "masks" in tensors:
        mats = mats * tensors["masks"].double()[:, None, :]
    return mats
