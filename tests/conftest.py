import os

import pytest

from tiny_models import corpus_text, save_tiny_model


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
def tiny_llama(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))
