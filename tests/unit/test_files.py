"""Outputs appear whole or not at all, and --overwrite replaces only what freeact-export wrote."""

import json
import os
import signal
import subprocess
import time

import pytest

from freeact_export.errors import UserError
from freeact_export.files import (
    MARKER,
    Interrupted,
    atomic_path,
    check_new_output,
    interruptible,
    release_locks,
    stamped,
)
from test_cli import assert_one_line_error, run_cli


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    release_locks()  # what check_new_output locked without an atomic_path after it, as main() does on exit


def _tree(root):
    """Every path under root with its content (None for a folder): what must survive a refusal."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _tool_folder(path, files=("a.txt",), overwrite=False):
    """A folder written through atomic_path, as every command writes its folders."""
    with atomic_path(path, overwrite) as tmp:
        tmp.mkdir()
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(name)
    return path


def _dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_success_renames_into_place(tmp_path):
    target = tmp_path / "out"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
        assert not target.exists()
        assert (tmp_path / ".out.lock").read_text() == f"{os.getpid()}\n"
    assert (target / "a.txt").read_text() == "a"
    assert json.loads((target / MARKER).read_text())["entries"] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial, no lock file


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        with atomic_path(tmp_path / "no" / "out.json"):
            pass


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    target = _tool_folder(tmp_path / "out", ["old.txt"])
    with pytest.raises(UserError, match="already exists; choose another path or pass --overwrite"):
        check_new_output(target, overwrite=False)
    _tool_folder(target, ["new.txt", "sub/deep.txt"], overwrite=True)
    assert sorted(p.name for p in target.rglob("*")) == [MARKER, "deep.txt", "new.txt", "sub"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old copy set aside is gone too


def test_a_record_this_tool_wrote_is_replaced_and_a_users_file_is_not(tmp_path):
    ours, theirs = tmp_path / "ppl.json", tmp_path / "notes.json"
    ours.write_text(json.dumps(stamped({"perplexity": 1.0})))
    theirs.write_text(json.dumps({"perplexity": 1.0}))
    with atomic_path(ours, overwrite=True, kind="file") as tmp:
        tmp.write_text(json.dumps(stamped({"perplexity": 2.0})))
    assert json.loads(ours.read_text())["perplexity"] == 2.0
    with pytest.raises(UserError, match="not a JSON record written by freeact-export"):
        check_new_output(theirs, overwrite=True, kind="file")
    with pytest.raises(UserError, match="did not write it"):  # without --overwrite: no advice to pass it
        check_new_output(theirs, overwrite=False, kind="file")
    assert json.loads(theirs.read_text()) == {"perplexity": 1.0}


@pytest.mark.parametrize("extra", ["notes.txt", "sub/notes.txt", "empty-folder/"])
def test_a_folder_with_anything_the_tool_did_not_write_is_refused(tmp_path, extra):
    target = _tool_folder(tmp_path / "out", ["a.txt", "sub/b.txt"])
    if extra.endswith("/"):
        (target / extra).mkdir()
    else:
        (target / extra).write_text("the user's")
    before = _tree(tmp_path)
    with pytest.raises(UserError, match=f"holds {extra.rstrip('/')}, which freeact-export did not write"):
        check_new_output(target, overwrite=True)
    assert _tree(tmp_path) == before


def test_a_users_folder_a_link_and_the_other_kind_are_refused(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("user data")
    ours = _tool_folder(tmp_path / "ours")
    (tmp_path / "link").symlink_to(ours, target_is_directory=True)
    record = tmp_path / "ppl.json"
    record.write_text(json.dumps(stamped({})))
    before = _tree(tmp_path)
    for path, kind, why in ((user, None, "holds neither the .freeact-export marker"), (tmp_path / "link", None, "link"),
                            (ours, "file", "is a folder and this output is a file"),
                            (record, "folder", "is a file and this output is a folder")):
        with pytest.raises(UserError, match=why):
            check_new_output(path, overwrite=True, kind=kind)
    with pytest.raises(UserError, match="is a folder and this output is a file"):  # known only once written
        with atomic_path(ours, overwrite=True) as tmp:
            tmp.write_text("a file where a folder was")
    assert _tree(tmp_path) == before


def test_plan_and_rewritten_folders_are_known_by_their_manifest_with_outputs_nested(tmp_path):
    # A rewritten folder as check, build and a killed run leave it: its manifest's files, check/ and
    # engine/ (outputs of their own, with markers), build's timing cache, a lock left by a SIGKILL.
    folder = tmp_path / "rewritten"
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "plan").mkdir()
        (tmp / "plan" / "plan.json").write_text("{}")
        (tmp / "plugin.onnx").write_bytes(b"graph")
        manifest = {"format": "freeact-export rewritten folder", "files": {"plan/plan.json": {}, "plugin.onnx": {}}}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
    assert not (folder / MARKER).exists()  # the manifest is its marker
    _tool_folder(folder / "check", ["check.json"])
    _tool_folder(folder / "engine", ["model.plan", "build.json"])
    (folder / "timing.cache").write_bytes(b"cache")
    (folder / ".check.lock").write_text("123\n")
    check_new_output(folder, overwrite=True)
    (folder / "engine" / "my-notes.txt").write_text("the user's")
    with pytest.raises(UserError, match="holds engine, which freeact-export did not write"):
        check_new_output(folder, overwrite=True)


def test_folders_from_before_the_marker_are_known_by_their_record_and_files(tmp_path):
    # An export folder and a check/ as the previous version wrote them, without a marker: every file
    # in them is one that version writes, so they may be replaced; one file more and they may not.
    export = tmp_path / "fp32"
    export.mkdir()
    (export / "export.json").write_text(json.dumps({"kind": "export", "files": ["model.onnx"]}))
    for name in ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json"):
        (export / name).write_text(name)
    check = tmp_path / "check"
    check.mkdir()
    (check / "check.json").write_text(json.dumps({"kind": "check"}))
    (check / "outputs.json").write_text("{}")
    for folder in (export, check):
        check_new_output(folder, overwrite=True)
        (folder / "mine.txt").write_text("the user's")
        with pytest.raises(UserError, match="holds mine.txt, which freeact-export did not write"):
            check_new_output(folder, overwrite=True)
    (check / "mine.txt").unlink()
    with atomic_path(check, overwrite=True) as tmp:  # written now, it gets the marker
        tmp.mkdir()
        (tmp / "check.json").write_text(json.dumps({"kind": "check"}))
    assert sorted(p.name for p in check.iterdir()) == [MARKER, "check.json"]


@pytest.mark.parametrize(("where", "why"), [
    (".", "is the current folder"), ("..", "is a parent of the current folder"), ("cwd", "is the current folder"),
    ("parent", "is a parent of the current folder"), ("/", "is the root folder"), ("home", "is a home folder")])
def test_the_current_folder_its_parents_root_and_home_are_never_replaced(tmp_path, monkeypatch, where, why):
    # Each of them holding a marker, as if the tool had written it: still refused.
    home, work = tmp_path / "home", tmp_path / "project" / "work"
    home.mkdir()
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for folder in (home, work.parent, work):
        (folder / MARKER).write_text(json.dumps({"written_by": "freeact-export", "entries": []}))
    path = {"cwd": work, "parent": work.parent, "home": home}.get(where, where)
    before = _tree(tmp_path)
    with pytest.raises(UserError, match=f"{why}, which freeact-export never writes over"):
        check_new_output(type(tmp_path)(path), overwrite=True)
    assert _tree(tmp_path) == before


def test_a_stale_partial_is_cleared_only_when_its_process_is_gone(tmp_path):
    dead = tmp_path / f".out.{_dead_pid()}-0a1b2c3d.partial"
    dead.mkdir()
    (dead / "half.onnx").write_bytes(b"half")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live = tmp_path / f".out.{sleeper.pid}-0a1b2c3d.partial"
        live.mkdir()
        other = tmp_path / f".other.{_dead_pid()}-0a1b2c3d.partial"  # another output's: not this run's business
        other.mkdir()
        check_new_output(tmp_path / "out", overwrite=False)
        assert not dead.exists() and live.exists() and other.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_output_set_aside_by_a_killed_swap_goes_back(tmp_path):
    # Killed between "rename the old aside" and "rename the new in": the old output is restored.
    aside = _tool_folder(tmp_path / f".out.{_dead_pid()}-0a1b2c3d.replaced", ["old.txt"])
    with pytest.raises(UserError, match="already exists"):
        check_new_output(tmp_path / "out", overwrite=False)
    assert (tmp_path / "out" / "old.txt").read_text() == "old.txt" and not aside.exists()


def test_sigterm_in_process_removes_the_partial(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught:
        with interruptible():
            with atomic_path(tmp_path / "out") as tmp:
                tmp.mkdir()
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # the write going on: the signal cuts it short
    assert caught.value.signum == signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_ignored_sighup_stays_ignored(tmp_path):
    # nohup freeact-export ...: a hangup must not stop it.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interruptible():
            with atomic_path(tmp_path / "out") as tmp:
                os.kill(os.getpid(), signal.SIGHUP)
                tmp.write_text("whole")
        assert (tmp_path / "out").read_text() == "whole"
    finally:
        signal.signal(signal.SIGHUP, previous)


# ---- the CLI: issue 17's cases, with tiny inputs -------------------------------------------

def _user_files(folder):
    (folder / "keep.txt").write_text("user data")
    (folder / "tree" / "deep").mkdir(parents=True)
    (folder / "tree" / "deep" / "notes.md").write_text("more user data")
    return _tree(folder)


def _eval(*argv, model, corpus):
    return ("eval", "--model", str(model), "--corpus", str(corpus), "--windows", "1", "--seqlen", "4", *argv)


def test_eval_json_over_the_current_folder_or_a_users_tree_is_refused(capsys, tmp_path, monkeypatch, tiny_llama,
                                                                       tiny_text_file):
    work = tmp_path / "work"
    work.mkdir()
    before = _user_files(work)
    monkeypatch.chdir(work)
    for target, fragment in ((".", "output . is the current folder"), ("..", "is a parent of the current folder"),
                             ("tree", "tree is not that (it is a folder and this output is a file)"),
                             ("keep.txt", "keep.txt is not that (it is not a JSON record written by freeact-export)")):
        code, _, err = run_cli(capsys, *_eval("--json", target, "--overwrite", model=tiny_llama, corpus=tiny_text_file))
        assert_one_line_error(code, err, fragment)
        assert _tree(work) == before
    # what eval --json wrote itself, it replaces
    argv = _eval("--json", "ppl.json", model=tiny_llama, corpus=tiny_text_file)
    assert run_cli(capsys, *argv)[0] == 0
    assert run_cli(capsys, *argv, "--overwrite")[0] == 0
    assert _tree(work) == {**before, "ppl.json": (work / "ppl.json").read_bytes()}


def test_export_over_a_users_folder_is_refused(capsys, tmp_path, tiny_llama):
    before = _user_files(tmp_path)
    code, _, err = run_cli(capsys, "export", "--model", str(tiny_llama), "-o", str(tmp_path / "tree"), "--overwrite")
    assert_one_line_error(code, err, "--overwrite replaces only what freeact-export wrote")
    assert _tree(tmp_path) == before


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory, tiny_text_file):
    from rewritten_tiny import rewritten_tiny

    return rewritten_tiny(tmp_path_factory.mktemp("rewritten"), tiny_text_file)


def test_triton_over_the_current_folder_or_a_changed_repository_is_refused(capsys, tmp_path, monkeypatch,
                                                                          rewritten):
    pytest.importorskip("tritonclient")
    work = tmp_path / "work"
    work.mkdir()
    before = _user_files(work)
    monkeypatch.chdir(work)
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", ".", "--overwrite")
    assert_one_line_error(code, err, "output . is the current folder")
    assert _tree(work) == before

    assert run_cli(capsys, "triton", str(rewritten), "-o", "repo")[0] == 0
    (work / "repo" / "freeact_lm" / "my-config-notes.txt").write_text("the user's")
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", "repo", "--overwrite")
    assert_one_line_error(code, err, "holds freeact_lm/my-config-notes.txt, which freeact-export did not write")
    assert (work / "repo" / "freeact_lm" / "my-config-notes.txt").read_text() == "the user's"
    (work / "repo" / "freeact_lm" / "my-config-notes.txt").unlink()
    repository = _tree(work / "repo")
    assert run_cli(capsys, "triton", str(rewritten), "-o", "repo", "--overwrite")[0] == 0
    assert _tree(work / "repo").keys() == repository.keys()
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt", "repo", "tree"]
