"""Logits of a model that does not fit in memory: every window through one decoder layer at a time.

On its first call the runner takes all windows through the stack (each layer read once from disk,
executing the plan's groups of that layer when there is a plan) and keeps each window's final
hidden states ([windows, seq, hidden] float32: 537 MB for 32 x 1024 tokens of Llama-3-8B); each
call then runs the model's own head on one window. The perplexity protocol calls it window by window.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from freeact_export.calibrate.layerwise import LayerStream
from freeact_export.lazy_weights import LazyModel
from freeact_export.mapped import release
from freeact_export.plan import Plan
from freeact_export.simulate.fake_quant import with_groups
from freeact_export.simulate.fit import require_fit
from freeact_export.token_types import TokenTypes


class LayerwiseLogits:
    """LogitsRunner over a LazyModel for a fixed set of windows (the rows it will be called with)."""

    def __init__(self, lazy: LazyModel, windows: np.ndarray, plan: Plan | None = None, progress: bool = True):
        if plan is not None:
            require_fit(lazy.model, plan)
        self.runtime = "torch-layerwise" if plan is None else "torch-fakequant-layerwise"
        self.dtype = str(lazy.dtype).removeprefix("torch.")
        self.lazy, self.plan, self.progress = lazy, plan, progress
        self.rows = {row.tobytes(): w for w, row in enumerate(windows)}
        types = TokenTypes.parse("single" if plan is None else plan.token_types)
        self.stream = LayerStream(lazy.model, windows, types, load=lazy.load, release=lazy.release)
        self.done = False

    def _run_stack(self) -> None:
        stream = self.stream
        for index in tqdm(range(len(stream)), desc="layers", unit="layer", disable=not self.progress):
            stream.load(index)
            layer = None
            if self.plan is not None:
                prefix = f"{stream.prefix}.{index}."
                groups = [g for g in self.plan.groups if g.name.startswith(prefix)]
                layer = with_groups(stream.layers[index], prefix, groups, self.plan.act_spec, stream.context)
                release([lin.codes for g in groups for lin in g.linears])  # mapped codes: their pages go back
            stream.advance(index, stream.run(index, layer))
        self.lazy.load_head()
        self.done = True

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("the layer-by-layer runner takes full windows without an attention mask")
        if not self.done:
            self._run_stack()
        window = self.rows.get(np.ascontiguousarray(input_ids[0]).tobytes())
        if window is None:
            raise ValueError("the layer-by-layer runner is called only with the windows it was built for")
        return self.stream.head(window).float().cpu()
