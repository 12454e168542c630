"""Find massive-activation tokens (attention sinks) during calibration: positions and ids.

A token is massive at a group input when its largest |activation| exceeds `factor` times the
median over the window's tokens (Sun et al., 2024 report 100-1000x in the residual stream; at
normalised linear inputs the gap is smaller, hence a lower default). The counts say which
rule separates them: a position rule (sink=pos:N) when they sit at the start of every window,
an id rule (sink=ids:...) when particular tokens carry them wherever they occur.
"""

from __future__ import annotations

import collections
import dataclasses

import torch

DEFAULT_FACTOR = 20.0


@dataclasses.dataclass
class MassiveTokens:
    """Accumulated over calibration windows.

    Attributes:
        factor: threshold over the per-window median of per-token max |x|.
        windows: windows seen.
        positions: position → windows in which that position was massive at some group.
        token_ids: token id → occurrences that were massive at some group.
        id_occurrences: token id → all occurrences (for the rate of an id rule).
        peak_ratio: largest max/median ratio seen.
    """

    factor: float = DEFAULT_FACTOR
    windows: int = 0
    positions: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    token_ids: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    id_occurrences: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    peak_ratio: float = 0.0

    def add_window(self, input_ids: torch.Tensor, token_absmax: list[torch.Tensor]) -> None:
        """One window [seq] and, per group, the per-token max |x| [seq] it produced."""
        self.windows += 1
        massive = torch.zeros(input_ids.shape[-1], dtype=torch.bool)
        for peaks in token_absmax:
            ratio = peaks / peaks.median().clamp(min=1e-12)
            self.peak_ratio = max(self.peak_ratio, float(ratio.max()))
            massive |= ratio > self.factor
        ids = input_ids.reshape(-1).tolist()
        self.id_occurrences.update(ids)
        for pos in torch.nonzero(massive).flatten().tolist():
            self.positions[pos] += 1
            self.token_ids[ids[pos]] += 1

    def suggested_rules(self, max_ids: int = 8) -> list[str]:
        """Rules worth measuring: leading positions massive in most windows, ids massive wherever they occur."""
        rules = []
        leading = 0
        while self.positions.get(leading, 0) >= 0.5 * self.windows:
            leading += 1
        if leading:
            rules.append(f"sink=pos:{leading}")
        ids = [i for i, n in self.token_ids.most_common() if n >= 0.5 * self.id_occurrences[i] and n >= 2]
        if ids:
            rules.append("sink=ids:" + ",".join(str(i) for i in ids[:max_ids]))
        return rules

    def summary(self, tokenizer=None, top: int = 8) -> dict:
        def name(i: int) -> str:
            return tokenizer.convert_ids_to_tokens(i) if tokenizer is not None else str(i)

        return {"factor": self.factor, "windows": self.windows, "peak_ratio": round(self.peak_ratio, 1),
                "positions": dict(self.positions.most_common(top)),
                "token_ids": {f"{i} {name(i)!r}": f"{n}/{self.id_occurrences[i]}"
                              for i, n in self.token_ids.most_common(top)},
                "suggested_rules": self.suggested_rules()}
