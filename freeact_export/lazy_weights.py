"""A Hugging Face causal LM whose decoder layers stay in their safetensors shards until asked for.

The model is built with empty (meta) parameters; what runs before the decoder layers (the
embeddings: 2.1 GB in float32 for Llama-3-8B) and the final norm are read at once, the output head
(another 2.1 GB unless tied to the embeddings) by `load_head()` when logits are wanted, and each
decoder layer, one tensor at a time from the memory-mapped shards, by `load(index)`, dropped again
by `release(index)`. Peak memory is then those parts, one layer and whatever the caller keeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from freeact_export.errors import UserError
from freeact_export.module_surgery import decoder_layers

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class SafetensorsFolder:
    """The tensors of a Hugging Face folder (one model.safetensors, or shards with an index), by name."""

    def __init__(self, folder: Path):
        self.folder = folder
        if (folder / INDEX).is_file():
            try:
                self.where = dict(json.loads((folder / INDEX).read_text())["weight_map"])
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{folder / INDEX} is not a safetensors index (no weight_map); "
                                "the folder is damaged: write it again") from None
        elif (folder / SINGLE).is_file():
            self.where = {name: SINGLE for name in self._open(SINGLE).keys()}  # noqa: SIM118 (no iterator)
        else:
            raise UserError(f"{folder} holds no safetensors weights ({SINGLE} or {INDEX}); "
                            "give a Hugging Face folder saved with safetensors")

    def _open(self, file: str):
        from safetensors import safe_open

        try:
            return safe_open(str(self.folder / file), framework="pt")
        except Exception as err:  # a truncated or overwritten shard: refuse it, naming the file
            raise UserError(f"cannot read weights file {self.folder / file} ({type(err).__name__}); "
                            "the folder is damaged: write it again") from None

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The named tensors, copied out of their shards. Each shard is mapped only while it is read: a
        mapping kept open would keep every page read so far resident (and counted), layer after layer."""
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self.where[name], []).append(name)
        tensors = {}
        for file, inside in by_file.items():
            handle = self._open(file)
            try:
                for name in inside:
                    tensors[name] = handle.get_tensor(name)
            except Exception as err:
                raise UserError(f"cannot read tensor {name} from {self.folder / file} ({type(err).__name__}); "
                                "the folder is damaged: write it again") from None
            finally:
                del handle
        return tensors


class LazyModel:
    """`model` with real weights outside its decoder layers, each layer's read on `load`.

    Args:
        folder: a Hugging Face folder with safetensors weights.
        dtype: the compute dtype the weights are cast to (the shards keep their own).
    """

    def __init__(self, folder: Path, dtype: torch.dtype = torch.float32):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        self.tensors = SafetensorsFolder(folder)
        self.dtype = dtype
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        with init_empty_weights(include_buffers=False):  # buffers (rotary tables) are computed, so real
            self.model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        self.layers = decoder_layers(self.model)
        self.layer_prefix = next(n for n, m in self.model.named_modules() if m is self.layers)
        inside = {f"{self.layer_prefix}.{n}" for n, _ in self.layers.named_parameters()}
        head = self.model.get_output_embeddings()
        head_prefix = next(n for n, m in self.model.named_modules() if m is head) + "."
        self.head_names = [n for n, _ in self.model.named_parameters() if n.startswith(head_prefix)]
        self._fill([n for n, _ in self.model.named_parameters() if n not in inside and n not in self.head_names])
        if getattr(config, "tie_word_embeddings", False):
            self.model.tie_weights()  # the head is the embeddings: nothing more to read

    def load_head(self) -> None:
        """Read the output head (a no-op once read, or when it is tied to the embeddings)."""
        self._fill(self.head_names)

    def _fill(self, names: list[str]) -> None:
        empty = [n for n in names if self._parameter(n).device.type == "meta"]  # others: read already, or tied
        missing = [n for n in empty if n not in self.tensors and not self.tied(n)]
        if missing:
            raise UserError(f"{self.tensors.folder} lacks the model's tensor {missing[0]}; the folder is incomplete")
        for name, value in self.tensors.read([n for n in empty if n in self.tensors]).items():
            old = self._parameter(name)
            if tuple(value.shape) != tuple(old.shape):
                raise UserError(f"tensor {name} in {self.tensors.folder} has shape {tuple(value.shape)}, the model's "
                                f"config wants {tuple(old.shape)}; the folder is damaged or mixed")
            module_name, _, attr = name.rpartition(".")
            self.model.get_submodule(module_name)._parameters[attr] = torch.nn.Parameter(value.to(self.dtype),
                                                                                        requires_grad=False)

    def _parameter(self, name: str) -> torch.Tensor:
        module_name, _, attr = name.rpartition(".")
        return getattr(self.model.get_submodule(module_name), attr)

    def tied(self, name: str) -> bool:
        """Whether `name` is the output head tied to the embeddings (read from them, not from the shards)."""
        config = self.model.config
        return getattr(config, "tie_word_embeddings", False) and name.endswith("lm_head.weight")

    def load(self, index: int) -> None:
        """Read decoder layer `index`'s weights."""
        self._fill([f"{self.layer_prefix}.{index}.{n}" for n, _ in self.layers[index].named_parameters()])

    def release(self, index: int) -> None:
        """Give decoder layer `index`'s weights back (empty again)."""
        for module in self.layers[index].modules():
            for attr, param in list(module._parameters.items()):
                if param is not None:
                    module._parameters[attr] = torch.nn.Parameter(torch.empty_like(param, device="meta"),
                                                                  requires_grad=False)
