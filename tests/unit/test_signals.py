"""Real freeact-export processes, real signals: SIGTERM and SIGHUP clean up as Ctrl-C does, a SIGKILLed
run's partial is cleared by the next run, and a second run to the same output fails at once."""

import os
import signal
import subprocess
import sys
import time

from test_cli import assert_one_line_error, run_cli

TIMEOUT_S = 120


def _start(*argv):
    # Progress bars off: stderr then holds only what freeact-export itself says.
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.Popen([sys.executable, "-m", "freeact_export", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait(found, processes):
    """Poll until found(); each of processes() (those still to act on) must keep running meanwhile."""
    deadline = time.monotonic() + TIMEOUT_S
    while not found():
        for process in processes():
            assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _export(tiny_llama, out):
    return "export", "--model", tiny_llama, "-o", out, "--no-verify"


def test_sigterm_and_sighup_mid_write_leave_nothing(tmp_path, tiny_llama):
    runs = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):  # both at once: one wait for the two
        folder = tmp_path / signum.name
        folder.mkdir()
        runs[signum] = folder, _start(*_export(tiny_llama, folder / "onnx"))
    pending = dict(runs)

    def signal_those_writing():  # each as soon as its partial folder exists: mid-write
        for signum, (folder, process) in list(pending.items()):
            if list(folder.glob(".onnx.*.partial")):
                process.send_signal(signum)
                del pending[signum]
        return not pending

    _wait(signal_those_writing, lambda: [process for _, process in pending.values()])
    for signum, (folder, process) in runs.items():
        _, err = process.communicate(timeout=TIMEOUT_S)
        assert process.returncode == 128 + signum
        assert err.splitlines() == [f"freeact-export: stopped by {signum.name}; partial outputs were removed"]
        assert list(folder.iterdir()) == []  # no output, no partial, no lock file


def test_a_sigkilled_runs_partial_is_cleared_by_the_next_run(capsys, tmp_path, tiny_llama):
    out = tmp_path / "onnx"
    process = _start(*_export(tiny_llama, out))
    _wait(lambda: list(tmp_path.glob(".onnx.*.partial")), lambda: [process])
    process.kill()
    process.wait()
    partial, = tmp_path.glob(".onnx.*.partial")
    assert partial.name.startswith(f".onnx.{process.pid}-")  # names its writer, now gone
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([partial.name, ".onnx.lock"])

    code, _, err = run_cli(capsys, *map(str, _export(tiny_llama, out)))
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]


def test_a_second_run_to_the_same_output_fails_at_once_naming_the_first(capsys, tmp_path, tiny_llama,
                                                                        tiny_text_file):
    out = tmp_path / "ppl.json"
    argv = ("eval", "--model", tiny_llama, "--corpus", tiny_text_file, "--windows", "2", "--seqlen", "16",
            "--json", out)
    first = _start(*argv)
    lock = tmp_path / ".ppl.json.lock"
    _wait(lambda: lock.is_file() and lock.read_text() == f"{first.pid}\n", lambda: [first])
    first.send_signal(signal.SIGSTOP)  # holding the lock, for as long as the second run takes
    try:
        code, _, err = run_cli(capsys, *map(str, argv))
    finally:
        first.send_signal(signal.SIGCONT)
    assert_one_line_error(code, err, f"output {out} is being written by another freeact-export run (pid {first.pid})")
    _, err = first.communicate(timeout=TIMEOUT_S)
    assert first.returncode == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["ppl.json"]  # the first run's output; its lock file removed
