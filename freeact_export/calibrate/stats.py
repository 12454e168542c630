"""Per-token-type activation statistics of one linear group's input, accumulated in bounded memory."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class TypeStats:
    """What calibration keeps of one token type's activations at one group input.

    Attributes:
        count: tokens seen.
        second_moment: Σ x xᵀ over those tokens, float64 [d, d] (divide by count for E[x xᵀ]).
        absmax: per-channel max |x|, float32 [d].
        samples: a uniform random subset of the tokens, float32 [s, d], for learning.
    """

    count: int
    second_moment: torch.Tensor
    absmax: torch.Tensor
    samples: torch.Tensor

    @classmethod
    def empty(cls, d: int) -> TypeStats:
        return cls(0, torch.zeros(d, d, dtype=torch.float64), torch.zeros(d), torch.zeros(0, d))

    def add(self, x: torch.Tensor, keep: int, generator: torch.Generator) -> None:
        """Accumulate tokens x [n, d]; keep up to `keep` of them as samples."""
        if x.shape[0] == 0:
            return
        x64 = x.double()
        self.count += x.shape[0]
        self.second_moment += x64.T @ x64
        self.absmax = torch.maximum(self.absmax, x.abs().amax(dim=0).float())
        if keep > 0:
            pick = torch.randperm(x.shape[0], generator=generator)[:keep]
            self.samples = torch.cat([self.samples, x[pick].float()])

    def channel_rms(self) -> torch.Tensor:
        """Per-channel root mean square, float64 [d]."""
        return (torch.diagonal(self.second_moment) / max(self.count, 1)).sqrt()


class TypeContext:
    """The token types of the batch being run, shared by every recorder of one model.

    The calibration loop sets `types` (int32 [batch * seq]) before each forward; this is the
    one piece of state that crosses module boundaries, and it is set explicitly.
    """

    def __init__(self, num_types: int):
        self.num_types = num_types
        self.types: torch.Tensor | None = None


class StatsTap:
    """Per-type statistics of one group input, fed one forward (one window) at a time.

    Both frontends feed it the same way (PyTorch hooks, ONNX Runtime outputs), so the same
    windows and seed give the same statistics and the same kept samples.
    """

    def __init__(self, d: int, num_types: int, keep_per_call: int, seed: int):
        self.keep_per_call = keep_per_call
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = [TypeStats.empty(d) for _ in range(num_types)]
        self.last_token_absmax: torch.Tensor | None = None

    def add(self, x: torch.Tensor, types: torch.Tensor) -> None:
        """x [..., d] and its tokens' types (int32, x's leading shape flattened)."""
        flat = x.detach().reshape(-1, x.shape[-1]).cpu().float()
        self.last_token_absmax = flat.abs().amax(dim=-1)
        for k, stats in enumerate(self.stats):
            stats.add(flat[types == k], self.keep_per_call, self.generator)


class GroupRecorder(torch.nn.Module):
    """Stands in for a group's first linear during calibration: records, then runs it."""

    def __init__(self, linear: torch.nn.Linear, context: TypeContext, keep_per_call: int, seed: int):
        super().__init__()
        self.linear = linear
        self.context = context
        self.tap = StatsTap(linear.in_features, context.num_types, keep_per_call, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tap.add(x, self.context.types)
        return self.linear(x)
