"""Load stage: tokenizers and PyTorch models from a ModelSource, GGUF through a cached folder.

A GGUF file is converted once, one tensor at a time (gguf_folder.py), into a plain Hugging Face
folder of sharded safetensors under the cache, so later loads take about a second instead of
~20 s and no stage ever holds the GGUF's whole float copy. Every load is local_files_only:
nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

from freeact_export.assets import ModelSource, cache_dir
from freeact_export.errors import UserError
from freeact_export.gguf_folder import convert_gguf

# Bumped when the converted folder's layout changes, so a cache written by an older converter is not reused.
CONVERTER = "stream-1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _gguf_cache_folder(gguf: Path) -> Path:
    """Cache folder keyed by the file's identity (path, size, mtime): cheap even for 4 GB files."""
    import transformers

    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}|{CONVERTER}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{digest}"


def hf_folder(source: ModelSource) -> Path:
    """The Hugging Face folder behind a source, converting (once) when it is a GGUF file."""
    if source.kind == "hf":
        return source.path
    if source.kind != "gguf":
        raise UserError(f"{source.name} is an ONNX model; this step needs the PyTorch model "
                        "(a name, a Hugging Face folder or a .gguf file)")
    folder = _gguf_cache_folder(source.path)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        print(f"converting {source.path.name} into a cached Hugging Face folder (once): {folder}")
        convert_gguf(source.path, tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same conversion first: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_tokenizer(source: ModelSource, tokenizer: str | None = None):
    """Tokenizer of a model: an explicit name/folder wins, else the one that comes with it."""
    from transformers import AutoTokenizer

    if tokenizer is not None:
        from freeact_export.assets import resolve_model

        tok_source = resolve_model(tokenizer)
        folder = tok_source.tokenizer_dir if tok_source.kind == "onnx" else hf_folder(tok_source)
    elif source.kind == "onnx":
        folder = source.tokenizer_dir
    else:
        folder = hf_folder(source)
    if folder is None:
        raise UserError(f"no tokenizer found beside {source.path}; pass --tokenizer with a model "
                        "name or a Hugging Face folder")
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as err:  # a folder without a readable tokenizer is the user's input
        raise UserError(f"cannot load a tokenizer from {folder} ({_first_line(err)})") from None


def load_torch_model(source: ModelSource, dtype: str = "float32", device: str = "cpu"):
    """The PyTorch causal LM in eval mode on `device`, weights in `dtype`."""
    from transformers import AutoModelForCausalLM

    folder = hf_folder(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype], local_files_only=True)
    except Exception as err:  # a damaged or unsupported folder is the user's input
        raise UserError(f"cannot load a causal LM from {folder} ({_first_line(err)})") from None
    return model.to(device).eval()


def bos_context_id(tokenizer) -> int | None:
    """BOS id when the tokenizer prepends it by default (the BOS rule of docs/evaluation.md), else None."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("The").input_ids
    return bos if bos is not None and len(ids) > 0 and ids[0] == bos else None
