"""Inputs for a prefill run of any ONNX decoder LM, with or without KV-cache inputs.

A prefill from scratch needs input_ids, and where the graph asks for them an attention mask,
position ids and an empty past cache: every float input of rank 4 ([batch, heads, past, head
dim], how Optimum and onnxruntime-genai name and lay them out) gets past length 0. Merged
decoders' `use_cache_branch` is False. Any other input is refused by name.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from freeact_export.errors import UserError

_INTS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class PrefillFeeds:
    """Builds the feeds of one prefill batch for a session's inputs."""

    def __init__(self, inputs: list[ort.NodeArg], where: str):
        self.inputs = inputs
        names = {i.name for i in inputs}
        if "input_ids" not in names:
            raise UserError(f"{where} has no input named input_ids (inputs: {sorted(names)}); "
                            "a decoder LM graph is expected")
        self.past = []
        for i in inputs:
            if i.name in ("input_ids", "attention_mask", "position_ids", "use_cache_branch"):
                continue
            if i.type in _FLOATS and len(i.shape) == 4:
                if not all(isinstance(dim, int) for dim in (i.shape[1], i.shape[3])):
                    raise UserError(f"{where}: cache input {i.name} has symbolic heads or head size "
                                    f"({i.shape}); re-export it with fixed ones")
                self.past.append(i)
                continue
            raise UserError(f"{where} takes input {i.name} ({i.type}, shape {i.shape}), which a prefill "
                            "cannot fill; inputs understood: input_ids, attention_mask, position_ids, "
                            "past key/value caches, use_cache_branch")

    @property
    def has_cache(self) -> bool:
        return bool(self.past)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = np.ones((batch, length), dtype=np.int64)
        values = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": np.broadcast_to(np.arange(length), (batch, length))}
        feeds = {}
        for i in self.inputs:
            if i.name in values:
                feeds[i.name] = np.ascontiguousarray(values[i.name], dtype=_INTS.get(i.type, np.int64))
            elif i.name == "use_cache_branch":
                feeds[i.name] = np.zeros([1] * len(i.shape), dtype=bool)
            else:
                feeds[i.name] = np.zeros((batch, i.shape[1], 0, i.shape[3]), dtype=_FLOATS[i.type])
        return feeds
