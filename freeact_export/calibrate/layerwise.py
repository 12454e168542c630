"""Running a decoder stack one layer at a time, for models that do not fit in memory.

The windows' hidden states are kept between layers ([windows, seq, hidden] float32: 268 MB for
32 x 512 tokens of Llama-3-8B); each decoder layer is loaded, run over every window (recording
its groups' statistics when calibrating), and released; api/layerwise.py plans each layer in
between, and runtime/layerwise_lm.py evaluates this way. What a decoder layer is called with besides its
hidden states (attention mask, rotary embeddings: functions of the positions only) is captured
once per window by running the model with every layer replaced by a pass-through, so no
architecture's layer signature is written down here.

With floating-point propagation every group sees the inputs the whole-model pass gives it, in
the same window order with the same sampling seeds, so the statistics (and the plan) are the
whole-model path's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from freeact_export.calibrate.groups import LinearGroup, group_linears
from freeact_export.calibrate.massive import MassiveTokens
from freeact_export.calibrate.run import CalibrationRecord
from freeact_export.calibrate.stats import GroupRecorder, StatsTap, TypeContext, TypeStats
from freeact_export.config import CalibSpec
from freeact_export.distributed import Ranks
from freeact_export.module_surgery import block_linears, decoder_layers, swap_module
from freeact_export.token_types import TokenTypes


class _LayerDone(Exception):
    """Raised by the last pass-through: the model's head is never run (nor loaded)."""


class _PassThrough(torch.nn.Module):
    """Stands in for a decoder layer: notes its calls and returns its input (or `output`, when given).
    Other attributes read from the layer (Gemma 3's attention_type picks its mask) are the layer's."""

    def __init__(self, layer: torch.nn.Module, last: bool, calls: list, output: torch.Tensor | None = None):
        super().__init__()
        self.__dict__["_layer"] = layer  # not a submodule: the pass-through owns no weights
        self.last, self.calls, self.output = last, calls, output

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_layer"], name)

    def forward(self, hidden_states, *args, **kwargs):
        self.calls.append((hidden_states, args, kwargs))
        if self.last:
            raise _LayerDone
        return hidden_states if self.output is None else self.output


def _output(result) -> torch.Tensor:
    return result[0] if isinstance(result, tuple) else result


class _Capture(torch.nn.Module):
    """Stands in for a group's first linear: keeps its input (the last window's), then runs it."""

    def __init__(self, linear: torch.nn.Module):
        super().__init__()
        self.linear, self.taken = linear, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.taken = x
        return self.linear(x)


class LayerStream:
    """The decoder stack of `model`, run one layer at a time over the calibration windows.

    Args:
        model: a Hugging Face decoder LM; only its embeddings (and whatever runs before the first
            layer) need real weights when it is built, each layer from `load(index)` on.
        spec: the calibration settings (for calibrate() only).
        load / release: make decoder layer `index`'s weights real / give them back (no-ops for a
            model in memory).
    """

    def __init__(self, model: torch.nn.Module, windows: np.ndarray, token_types: TokenTypes,
                 spec: CalibSpec | None = None, load: Callable[[int], None] = lambda index: None,
                 release: Callable[[int], None] = lambda index: None, ranks: Ranks | None = None):
        self.model, self.windows, self.token_types, self.spec = model, windows, token_types, spec
        self.load, self.release, self.ranks = load, release, ranks
        self.mine = list(range(len(windows))) if ranks is None else ranks.windows(len(windows))
        self.layers = decoder_layers(model)
        self.prefix = next(n for n, m in model.named_modules() if m is self.layers)
        self.context = TypeContext(token_types.num_types)
        self.types = [token_types.assign(torch.from_numpy(row[None, :])).reshape(-1).cpu() for row in windows]
        self.massive = MassiveTokens()
        self.peaks: list[list[torch.Tensor]] = [[] for _ in windows]  # per window, each group's per-token max |x|
        self.groups_seen = 0
        self.owners: list[int] = []  # with ranks: the rank of each group of the layer last calibrated
        self.hidden, self.calls = self._capture()  # of this rank's windows (self.mine), in that order

    def type_token_counts(self) -> dict[str, int]:
        """Calibration tokens per token type, over every window (every group sees them all)."""
        return {name: sum(int((t == k).sum()) for t in self.types) for k, name in enumerate(self.token_types.names)}

    def _capture(self) -> tuple[list[torch.Tensor], list[list[tuple]]]:
        """Each window's first-layer input and, per layer and window, the call's other arguments."""
        count = len(self.layers)
        calls: list[list] = [[] for _ in range(count)]
        originals = list(self.layers)
        for i in range(count):
            self.layers[i] = _PassThrough(originals[i], i == count - 1, calls[i])
        device = self._device()
        try:
            with torch.inference_mode():
                for w in self.mine:
                    try:
                        self.model(input_ids=torch.from_numpy(self.windows[w][None, :]).to(device), use_cache=False)
                    except _LayerDone:
                        pass
        finally:
            for i, layer in enumerate(originals):
                self.layers[i] = layer
        hidden = [h.clone() for h, _, _ in calls[0]]
        return hidden, [[(args, kwargs) for _, args, kwargs in per_layer] for per_layer in calls]

    def _device(self) -> torch.device:
        real = [p for p in self.model.parameters() if p.device.type != "meta"]
        return real[0].device if real else torch.device("cpu")

    def __len__(self) -> int:
        return len(self.layers)

    def run(self, index: int, layer: torch.nn.Module | None = None,
            after_window: Callable[[int], None] = lambda w: None) -> list[torch.Tensor]:
        """Decoder layer `index` (or a stand-in for it) over every window's current hidden states."""
        layer = self.layers[index] if layer is None else layer
        outputs = []
        with torch.inference_mode():
            for local, w in enumerate(self.mine):
                self.context.types = self.types[w]
                args, kwargs = self.calls[index][local]
                outputs.append(_output(layer(self.hidden[local], *args, **kwargs)).clone())
                after_window(w)
        return outputs

    def calibrate(self, index: int) -> tuple[CalibrationRecord, list[torch.Tensor]]:
        """Load layer `index`; its groups' statistics (a record of this layer's groups) and its
        floating-point outputs per window."""
        self.load(index)
        layer = self.layers[index]
        prefix = f"{self.prefix}.{index}."
        linears = {n: m for n, m in block_linears(self.model).items() if n.startswith(prefix)}
        args, kwargs = self.calls[index][0]
        groups: list[LinearGroup] = group_linears(self.model, linears, lambda: layer(self.hidden[0], *args, **kwargs))
        keep = -(-self.spec.samples_per_type // len(self.windows))  # ceil, as the whole-model pass
        if self.ranks is not None:
            return self._calibrate_shared(index, groups, keep)
        recorders = {}
        for group in groups:  # seeded by the group's index in the model, as the whole-model pass
            first = self.model.get_submodule(group.linears[0])
            recorders[group.name] = GroupRecorder(first, self.context, keep,
                                                  seed=self.spec.seed * 100_003 + self.groups_seen)
            self.groups_seen += 1
            swap_module(self.model, group.linears[0], recorders[group.name])
        try:
            outputs = self.run(index, after_window=lambda w: self.peaks[w].extend(
                rec.tap.last_token_absmax for rec in recorders.values()))
        finally:
            for group in groups:
                swap_module(self.model, group.linears[0], recorders[group.name].linear)
        stats: dict[str, list[TypeStats]] = {name: rec.tap.stats for name, rec in recorders.items()}
        return CalibrationRecord(self.token_types, groups, stats, self.spec, self.massive), outputs

    def _calibrate_shared(self, index: int, groups: list[LinearGroup], keep: int
                          ) -> tuple[CalibrationRecord, list[torch.Tensor]]:
        """calibrate() split across ranks (freeact_export.distributed): this rank runs its windows; each
        round of one window per rank, every group's inputs are gathered on the group's owner, which
        adds them in window order. The record holds the owned groups' statistics only."""
        ranks = self.ranks
        modules = [self.model.get_submodule(g.linears[0]) for g in groups]
        self.owners = ranks.owners([sum(self.model.get_submodule(n).weight.numel() for n in g.linears)
                                    for g in groups])
        taps = {}
        for j, group in enumerate(groups):  # seeded by the group's index in the model, as the whole-model pass
            if self.owners[j] == ranks.rank:
                taps[j] = StatsTap(group.in_features, self.token_types.num_types, keep,
                                   self.spec.seed * 100_003 + self.groups_seen + j)
        self.groups_seen += len(groups)
        captures = [_Capture(m) for m in modules]
        for group, capture in zip(groups, captures, strict=True):
            swap_module(self.model, group.linears[0], capture)
        seqlen, outputs, layer = self.windows.shape[1], [], self.layers[index]
        try:
            for start in range(0, len(self.windows), ranks.world):
                local = start // ranks.world
                present = local < len(self.mine)
                if present:
                    with torch.inference_mode():
                        self.context.types = self.types[self.mine[local]]
                        args, kwargs = self.calls[index][local]
                        outputs.append(_output(layer(self.hidden[local], *args, **kwargs)).clone())
                peaks = []
                for j, capture in enumerate(captures):
                    x = capture.taken if present else torch.zeros(1, seqlen, modules[j].in_features,
                                                                    dtype=modules[j].weight.dtype)
                    x = x.reshape(1, seqlen, -1)
                    peaks.append(x.abs().amax(dim=-1).reshape(-1).float())
                    gathered = ranks.gather(x, self.owners[j])
                    for r, xr in enumerate(gathered or []):
                        if start + r < len(self.windows):
                            taps[j].add(xr, self.types[start + r])
                every = ranks.gather(torch.stack(peaks), 0)  # the massive-activation counts, on rank 0
                for r, window_peaks in enumerate(every or []):
                    if start + r < len(self.windows):
                        self.peaks[start + r].extend(window_peaks)
        finally:
            for group, module in zip(groups, modules, strict=True):
                swap_module(self.model, group.linears[0], module)
        stats = {groups[j].name: tap.stats for j, tap in taps.items()}
        return CalibrationRecord(self.token_types, groups, stats, self.spec, self.massive), outputs

    def advance(self, index: int, outputs: list[torch.Tensor]) -> None:
        """Layer `index` is done: its outputs become the next layer's inputs, its weights are released."""
        self.hidden = outputs
        self.release(index)

    def head(self, window: int) -> torch.Tensor:
        """Once every layer has run: the model's output (logits) for `window` from its final hidden
        states: the model runs with its first layer returning them and the others passing them on, so
        whatever follows the layers (final norm, head, logit soft-capping) is the model's own code."""
        originals = list(self.layers)
        count = len(self.layers)
        for i in range(count):
            self.layers[i] = _PassThrough(originals[i], False, [], self.hidden[window] if i == 0 else None)
        try:
            with torch.inference_mode():
                ids = torch.from_numpy(self.windows[window][None, :]).to(self._device())
                return self.model(input_ids=ids, use_cache=False).logits
        finally:
            for i, layer in enumerate(originals):
                self.layers[i] = layer

    def finish(self) -> MassiveTokens:
        """The massive-activation counts over every group (as the whole-model pass counts them)."""
        for row, peaks in zip(self.windows, self.peaks, strict=True):
            self.massive.add_window(torch.from_numpy(row), peaks)
        return self.massive
