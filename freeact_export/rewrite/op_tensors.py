"""A plan's tensors in the form the two ops take (freeact_export.ops.schema), as NumPy arrays.

Every transform kind becomes "divide by smooth, then kron_1 ⊗ kron_2": a randomised Hadamard
diag(signs)·H_d folds its signs into smooth (1/±1 = ±1) and splits H_d = A ⊗ H_2^⊗k into two
balanced factors; a dense matrix is kron_1 with kron_2 = [[1]]. The plugin graph and the portable
graph both read these arrays, so they compute the same thing from the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from freeact_export.errors import UserError
from freeact_export.plan import GroupPlan, LinearPlan
from freeact_export.quantize.packing import pack_int4
from freeact_export.transforms.hadamard import hadamard_factors


def _hadamard_kron(d: int) -> tuple[np.ndarray, np.ndarray]:
    """(K1, K2), orthonormal, K1 ⊗ K2 = hadamard(d), orders as close to sqrt(d) as the build allows."""
    a, b = hadamard_factors(d)
    m, power = a.shape[0], b.shape[0]
    splits = [2**j for j in range(int(math.log2(power)) + 1)]
    left = min(splits, key=lambda s: m * s + d // (m * s))  # cost per token: d (d1 + d2)
    sylvester = torch.ones(1, 1, dtype=torch.float64)
    while sylvester.shape[0] < left:
        sylvester = torch.kron(sylvester, torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64))
    k1 = torch.kron(a, sylvester)
    k2 = torch.ones(1, 1, dtype=torch.float64)
    while k2.shape[0] < power // left:
        k2 = torch.kron(k2, torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64))
    return (k1 / math.sqrt(k1.shape[0])).numpy(), (k2 / math.sqrt(k2.shape[0])).numpy()


def activation_tensors(group: GroupPlan, num_types: int) -> dict[str, np.ndarray | int]:
    """FreeActQuantize's constant inputs (smooth, kron_1, kron_2, masks, clip) and `kronecker`."""
    t = {k: v.double() for k, v in group.tensors.items()}
    d = group.in_features
    smooth = t["smooth"].numpy() if "smooth" in t else np.ones(d)
    one = np.ones((1, 1))
    if group.transform == "identity":
        k1, k2, kronecker = one, one, 0
    elif group.transform == "kronecker":
        per_type = "type_kron_1" in t  # the general FreeAct variant: the activations' own factors per type
        k1 = t["type_kron_1" if per_type else "kron_1"].numpy()
        k2, kronecker = t["type_kron_2" if per_type else "kron_2"].numpy(), 1
    elif group.transform == "dense":
        k1, k2, kronecker = t["matrix"].numpy(), one, 1
    elif group.transform == "hadamard":
        smooth = smooth * t["signs"].numpy()
        (k1, k2), kronecker = _hadamard_kron(d), 1
    else:
        raise UserError(f"group {group.name}: transform '{group.transform}' has no op form")
    masks = t["masks"].numpy() if "masks" in t else np.ones((num_types, d))
    clip = t["clip"].numpy() if "clip" in t else np.ones(num_types)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {"smooth": f32(smooth), "kron_1": f32(k1), "kron_2": f32(k2), "masks": f32(masks), "clip": f32(clip),
            "kronecker": kronecker}


def weight_tensors(linear: LinearPlan, group: GroupPlan) -> dict[str, np.ndarray | int]:
    """Int4MatMul's constant inputs (weight packed as int8, weight_scale, bias) and `group_size`."""
    spec = group.weight_spec
    if not spec.symmetric or linear.zero is not None or spec.bits != 4:
        raise UserError(f"{linear.name}: Int4MatMul takes symmetric INT4 weights; this plan has "
                        f"{spec.bits}-bit {'symmetric' if spec.symmetric else 'asymmetric'} ones")
    packed = pack_int4(linear.codes).numpy().view(np.int8)
    n = linear.codes.shape[0]
    bias = np.zeros(n, np.float32) if linear.bias is None else linear.bias.float().numpy()
    group_size = spec.group_size if spec.granularity == "group" else 0
    return {"weight": np.ascontiguousarray(packed), "weight_scale": linear.scale.float().numpy().reshape(n, -1),
            "bias": np.ascontiguousarray(bias, dtype=np.float32), "group_size": group_size}
