import os
import shutil

import pytest
import torch

# Without CUDA the Triton kernels run in Triton's interpreter. Triton decides that when
# triton.language is first imported (transformers imports it), so it is set before anything else.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from tiny_models import corpus_text, save_tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Converted-model caches go to a per-run folder: no test depends on an earlier run."""
    old = os.environ.get("FREEACT_EXPORT_CACHE")
    os.environ["FREEACT_EXPORT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("FREEACT_EXPORT_CACHE", None)
    else:
        os.environ["FREEACT_EXPORT_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    """A corpus file and tiny Hugging Face folders (safetensors) of three families: (root, {arch: folder})."""
    root = tmp_path_factory.mktemp("layerwise")
    (root / "tiny.txt").write_text(corpus_text(), encoding="utf-8")
    return root, {arch: save_tiny_model(arch, root / arch) for arch in ("llama", "qwen2", "gemma3")}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def plugin_build(tmp_path_factory):
    """plugins_trt built once per test run (library, host test, plan test) in a temporary folder.

    Every default architecture (80;86;87;89;90;100;110;120), as CI must build them all: the kernels
    are Triton kernels compiled ahead of time without a GPU, and compiled cubins are cached
    (~/.cache/freeact-export/aot), so after the first run the build is the C++ compile only.
    Skipped only where cmake is missing.
    """
    from freeact_export.runtime import plugin_lib

    if shutil.which("cmake") is None:
        pytest.skip("building plugins_trt needs cmake")
    folder = tmp_path_factory.mktemp("plugins_trt_build")
    plugin_lib.build(folder, jobs=2)
    return folder


@pytest.fixture(scope="session")
def smollm2_onnx(tmp_path_factory):
    """smollm2-135m exported to fp32 ONNX once per run: (folder, export record). Real-model tests only."""
    from freeact_export import api
    from freeact_export.config import ExportSpec

    folder = tmp_path_factory.mktemp("smollm2") / "fp32"
    return folder, api.export("smollm2-135m", folder, ExportSpec())
