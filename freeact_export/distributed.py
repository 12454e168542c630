"""Several processes quantizing one model (torchrun): windows and groups split across ranks.

Under `torchrun --nproc-per-node N -m freeact_export quantize ...` every rank reads the same model
and windows and runs the layer-by-layer pipeline (calibrate/layerwise.py) on its share:

- window w runs on rank w % N, so each rank holds 1/N of the hidden states and does 1/N of the
  forward passes;
- every group belongs to one rank (balanced by weight size within each layer); after each round of
  N windows the group's inputs are gathered on its owner, which feeds its statistics in window order
  with the single-process seeds. Its statistics are then the single-process ones bit for bit, where
  an all-reduce of per-rank sums would add the float64 moments in another order; the traffic per
  window is tokens x d per group, less than the d x d moment wherever d exceeds a window's tokens;
- each group is planned (learned, GPTQ) by its owner only, so statistics' memory and planning time
  split too; the finished plans of a layer are gathered on every rank (quantized propagation runs the
  layer with them), and rank 0 writes the plan folder and evaluates.

So the plan equals the single-process plan for any N. Backend: gloo (the layer-by-layer pipeline
runs on the CPU).
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run."""

    rank: int
    world: int

    @classmethod
    def from_environment(cls) -> Ranks | None:
        """The ranks torchrun describes (WORLD_SIZE, RANK), with the process group started; None for
        a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        if not dist.is_initialized():  # a rank waits while others plan a layer's big groups: a generous timeout
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=4))
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def windows(self, count: int) -> list[int]:
        """The windows this rank runs: w % world == rank."""
        return list(range(self.rank, count, self.world))

    def owners(self, costs: list[int]) -> list[int]:
        """Each item's rank: the largest first, each to the least loaded rank (ties to the lower rank);
        the same on every rank."""
        load = [0] * self.world
        owner = [0] * len(costs)
        for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
            rank = min(range(self.world), key=lambda r: (load[r], r))
            owner[item] = rank
            load[rank] += costs[item]
        return owner

    def gather(self, tensor: torch.Tensor, owner: int) -> list[torch.Tensor] | None:
        """Every rank's `tensor` (same shape and dtype everywhere), in rank order, on `owner`."""
        bucket = [torch.empty_like(tensor) for _ in range(self.world)] if self.rank == owner else None
        dist.gather(tensor.contiguous(), bucket, dst=owner)
        return bucket

    def share(self, items: list) -> list:
        """Every rank's `items` (picklable), concatenated in rank order, on every rank."""
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, items)
        return [item for part in gathered for item in part]


def finish(ranks: Ranks | None) -> None:
    """Leave the process group once this rank's part is done (rank 0 goes on to write and evaluate alone)."""
    if ranks is not None and dist.is_initialized():
        dist.destroy_process_group()
