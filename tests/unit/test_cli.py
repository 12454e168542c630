"""The CLI's contract: teaching --help, and bad input as one line, non-zero, no traceback."""

import subprocess
import sys

import pytest

from freeact_export.cli import COMMANDS, main


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of the CLI run in this process; a usage error's SystemExit gives its code."""
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("freeact-export: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: freeact-export {command}")
    assert len(out.splitlines()) > 5


def test_top_level_help_shows_both_forms(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "freeact-export MODEL.onnx [options]" in out
    for command in ("eval", "export", "quantize", "check", "build", "triton"):
        assert f"\n  {command} " in out or f"\n    {command} " in out


def test_onnx_in_form_routes_to_the_onnx_path(capsys):
    code, _, err = run_cli(capsys, "model.onnx", "--bits", "w4a4")
    assert_one_line_error(code, err, "model path model.onnx does not exist")


def test_unknown_model_name(capsys):
    code, _, err = run_cli(capsys, "eval", "--model", "llama-7b-chat", "--corpus", "wiki")
    assert_one_line_error(code, err, "unknown model 'llama-7b-chat'")


def test_export_of_an_unknown_model_is_the_error_alone(capsys, tmp_path):
    code, out, err = run_cli(capsys, "export", "--model", "llama-7b-chat", "-o", str(tmp_path / "x"))
    assert_one_line_error(code, err, "unknown model 'llama-7b-chat'")
    assert out == ""  # no "exporting ..." banner for a model that cannot be found
    assert not (tmp_path / "x").exists()


def test_corrupt_gguf(capsys, tmp_path, tiny_text_file):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    code, _, err = run_cli(capsys, "eval", "--model", str(bad), "--corpus", str(tiny_text_file))
    assert_one_line_error(code, err, f"cannot read GGUF file {bad}")
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))


def test_corrupt_onnx(capsys, tmp_path, tiny_llama, tiny_text_file):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    code, _, err = run_cli(capsys, "eval", "--model", str(bad), "--tokenizer", str(tiny_llama),
                           "--corpus", str(tiny_text_file))
    assert_one_line_error(code, err, f"ONNX Runtime cannot load {bad}")


def test_onnx_without_tokenizer(capsys, tmp_path, tiny_text_file):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"x")
    code, _, err = run_cli(capsys, "eval", "--model", str(bare), "--corpus", str(tiny_text_file))
    assert_one_line_error(code, err, "pass --tokenizer")


def test_empty_corpus(capsys, tmp_path, tiny_llama):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli(capsys, "eval", "--model", str(tiny_llama), "--corpus", str(empty))
    assert_one_line_error(code, err, "is empty")


def test_seqlen_longer_than_corpus(capsys, tmp_path, tiny_llama):
    short = tmp_path / "short.txt"
    short.write_text("Just a few words.")
    code, _, err = run_cli(capsys, "eval", "--model", str(tiny_llama), "--corpus", str(short), "--seqlen", "256")
    assert_one_line_error(code, err, "fewer than one window of seqlen 256")


def test_invalid_seqlen(capsys, tiny_llama, tiny_text_file):
    code, _, err = run_cli(capsys, "eval", "--model", str(tiny_llama), "--corpus", str(tiny_text_file),
                           "--seqlen", "1")
    assert code == 2  # a usage error, refused by the parser
    assert_one_line_error(code, err, "argument --seqlen: must be at least 2")


def test_existing_outputs_are_not_overwritten(capsys, tmp_path, tiny_llama, tiny_text_file):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("user data")
    code, _, err = run_cli(capsys, "export", "--model", str(tiny_llama), "-o", str(existing))
    assert_one_line_error(code, err, "already exists")
    assert (existing / "keep.txt").read_text() == "user data"

    report = tmp_path / "ppl.json"
    report.write_text("{}")
    code, _, err = run_cli(capsys, "eval", "--model", str(tiny_llama), "--corpus", str(tiny_text_file),
                           "--json", str(report))
    assert_one_line_error(code, err, "already exists")
    assert report.read_text() == "{}"


def test_eval_writes_json_record(capsys, tmp_path, tiny_llama, tiny_text_file):
    report = tmp_path / "ppl.json"
    code, out, _ = run_cli(capsys, "eval", "--model", str(tiny_llama), "--corpus", str(tiny_text_file),
                           "--seqlen", "32", "--windows", "3", "--device", "cpu", "--json", str(report))
    assert code == 0
    assert out.startswith("perplexity ")
    for field in ("windows x 32 tokens", "dtype=float32", "device=cpu", "runtime=torch"):
        assert field in out
    assert '"perplexity"' in report.read_text()


def test_console_script_reports_without_traceback(tmp_path):
    # The installed entry point, in a real process: what a user sees.
    proc = subprocess.run([sys.executable, "-m", "freeact_export", "eval", "--model", "nonexistent-model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("freeact-export: error: unknown model")
    assert "Traceback" not in proc.stderr


def test_multimodal_folder_is_refused_clearly(capsys, tmp_path, tiny_text_file):
    # Multimodal models arrive with the token-type stages; until then: one clear line.
    from tiny_models import tiny_llava, tiny_tokenizer

    folder = tmp_path / "llava"
    tiny_llava().save_pretrained(folder)
    tiny_tokenizer(adds_bos=False).save_pretrained(folder)
    capsys.readouterr()  # drop save_pretrained's progress output
    code, _, err = run_cli(capsys, "eval", "--model", str(folder), "--corpus", str(tiny_text_file), "--seqlen", "64")
    assert_one_line_error(code, err, f"cannot load a causal LM from {folder}")


def test_bad_learning_settings_are_one_line(capsys, tiny_llama, tiny_text_file):
    code, _, err = run_cli(capsys, "quantize", "--model", str(tiny_llama), "--corpus", str(tiny_text_file),
                           "--method", "freeact", "--dedicated-fraction", "0.7")
    assert_one_line_error(code, err, "dedicated_fraction must be in [0, 0.5)")


def test_bad_calibration_size_is_one_line(capsys, tiny_llama, tiny_text_file):
    code, _, err = run_cli(capsys, "quantize", "--model", str(tiny_llama), "--corpus", str(tiny_text_file),
                           "--calib-windows", "0")
    assert_one_line_error(code, err, "argument --calib-windows: must be at least 1 (got 0)")


def test_the_cli_imports_only_the_api():
    """cli*.py reach the stages through freeact_export.api alone (issue 19: one floor of entry points)."""
    import ast
    from pathlib import Path

    import freeact_export

    allowed = {"freeact_export", "freeact_export.api", "freeact_export.cli_check", "freeact_export.cli_common",
               "freeact_export.cli_deploy"}
    for path in Path(freeact_export.__file__).parent.glob("cli*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("freeact_export"):
                assert node.module in allowed, f"{path.name} imports {node.module}"
                if node.module == "freeact_export":
                    assert {a.name for a in node.names} <= {"api", "__version__"}, f"{path.name}: {node.names}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("freeact_export") for a in node.names), path.name
