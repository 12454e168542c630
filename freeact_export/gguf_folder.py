"""GGUF file → Hugging Face folder of sharded safetensors, one tensor at a time.

The GGUF is memory-mapped (gguf's reader); each tensor is dequantised, renamed and re-laid out
by transformers' own GGUF rules (its name map and per-architecture processors, such as the q/k
row permutation of llama.cpp or Gemma's norm offset), cast to the storage dtype and appended to
the current shard; a shard is written once it holds `shard_bytes`. Peak memory is one shard
plus the largest tensor in float32 (for Llama-3-8B, its 2.1 GB embedding), never the model.

Storage dtype: float32 where the whole model's float32 copy fits in EXACT_STORAGE_BYTES (a
dequantised value d·q + m of fp16 block scales needs more than fp16's mantissa, and the
named models' figures were measured on exact float32 weights); above it, the source's 16-bit
class: bfloat16 if the GGUF stores any bfloat16 tensor, float32 if it stores only float32, else
float16 (the class of quantised blocks' scales).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from freeact_export.config import LAYERWISE_ABOVE_PARAMS
from freeact_export.errors import UserError

# Models whose float32 copy is at most this many bytes keep exact float32 weights: those quantized in memory.
EXACT_STORAGE_BYTES = 4 * LAYERWISE_ABOVE_PARAMS
SHARD_BYTES = 2 * 10**9
INDEX_NAME = "model.safetensors.index.json"
# transformers' GGUF processors that map one tensor to one tensor; the others (mixture-of-experts,
# GPT-2, Bloom) merge or split tensors across calls, which a stream cannot do.
PER_TENSOR_PROCESSORS = {"TensorProcessor", "LlamaTensorProcessor", "Gemma2TensorProcessor",
                         "NemotronTensorProcessor", "MambaTensorProcessor", "Lfm2TensorProcessor"}


def storage_dtype(reader, exact_bytes: int = EXACT_STORAGE_BYTES) -> torch.dtype:
    """The dtype a GGUF's converted weights are stored in (module docstring)."""
    from gguf import GGMLQuantizationType as Q

    params = sum(int(np.prod(t.shape)) for t in reader.tensors)
    if 4 * params <= exact_bytes:
        return torch.float32
    kinds = {t.tensor_type for t in reader.tensors}
    if Q.BF16 in kinds:
        return torch.bfloat16
    return torch.float32 if kinds <= {Q.F32} else torch.float16


def _architecture(reader) -> str:
    field = reader.fields.get("general.architecture")
    if field is None:
        raise UserError("the GGUF file names no general.architecture; is it a complete model file?")
    return bytes(field.parts[field.data[0]]).decode()


class _ShardWriter:
    """Collects tensors into safetensors shards of about `limit` bytes and writes the index."""

    def __init__(self, out: Path, limit: int):
        self.out, self.limit = out, limit
        self.pending: dict[str, torch.Tensor] = {}
        self.weight_map: dict[str, str] = {}
        self.total = 0
        self.shards = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.contiguous()
        if sum(t.nbytes for t in self.pending.values()) >= self.limit:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        self.shards += 1
        file = f"model-{self.shards:05d}.safetensors"
        save_file(self.pending, str(self.out / file), metadata={"format": "pt"})
        for name, tensor in self.pending.items():
            self.weight_map[name] = file
            self.total += tensor.nbytes
        self.pending = {}

    def close(self) -> None:
        self.flush()
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.out / INDEX_NAME).write_text(json.dumps(index, indent=2))


def _hf_config(gguf: Path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the folder holds plain float weights
    return config


def expected_tensors(model: torch.nn.Module) -> set[str]:
    """Names a complete checkpoint of `model` must hold: parameters (a tied one once) and persistent buffers."""
    saved = set(model.state_dict())
    return {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers() if n in saved}


def convert_gguf(gguf: Path, out: Path, shard_bytes: int = SHARD_BYTES, exact_bytes: int = EXACT_STORAGE_BYTES,
                 progress: bool = True) -> torch.dtype:
    """Write config, generation config, tokenizer and sharded safetensors for `gguf` into `out`.

    Returns the storage dtype. Raises UserError for a file that is not a GGUF decoder LM that
    transformers can map, naming what is wrong.
    """
    from gguf import GGUFReader, dequantize
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    try:
        reader = GGUFReader(gguf)
        config = _hf_config(gguf)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except UserError:
        raise
    except Exception as err:  # any failure here means the user's file is not a usable GGUF LM
        text = str(err).strip().splitlines()
        raise UserError(f"cannot read GGUF file {gguf} ({type(err).__name__}: {text[0] if text else ''}); "
                        "is it a complete download of a supported decoder LM?") from None
    arch = _architecture(reader)
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config.to_dict())
    if type(processor).__name__ not in PER_TENSOR_PROCESSORS:
        raise UserError(f"GGUF architecture '{arch}' needs a whole-model conversion this tool does not do; "
                        "convert it to a Hugging Face folder (safetensors) and pass the folder")
    name_map = get_gguf_hf_weights_map(skeleton, processor)
    dtype = storage_dtype(reader, exact_bytes)
    writer = _ShardWriter(out, shard_bytes)
    for tensor in tqdm(reader.tensors, desc=f"converting {gguf.name}", unit="tensor", disable=not progress):
        values = dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(weights=values, name=tensor.name, tensor_key_mapping=name_map,
                                   parsed_parameters={"tensors": {}})
        if result.name not in name_map:
            continue  # tensors transformers does not load either (e.g. rope frequency tables)
        with warnings.catch_warnings():  # a float32 GGUF tensor is a read-only view of the mapped file: only read
            warnings.simplefilter("ignore", UserWarning)
            stored = torch.from_numpy(np.ascontiguousarray(result.weights)).to(dtype)
        if not torch.isfinite(stored).all():
            raise UserError(f"tensor {tensor.name} of {gguf.name} does not fit in {dtype} storage")
        writer.add(name_map[result.name], stored)
    writer.close()
    missing = sorted(expected_tensors(skeleton) - set(writer.weight_map))
    if missing:
        raise UserError(f"GGUF file {gguf} lacks {len(missing)} of the model's tensors (first: {missing[0]}); "
                        "is it a complete download?")
    config.dtype = dtype
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "freeact_source.json").write_text(json.dumps({"gguf": str(gguf.resolve()), "dtype": str(dtype)},
                                                        indent=2))
    return dtype
