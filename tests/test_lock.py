"""The output lock: one writer per output, stale locks from dead runs taken over."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from embedgen.errors import CacheError, LockHeld
from embedgen.util.locks import FileMutex, acquire_output_lock, lock_path

_HOLDER = """
import sys, time
from pathlib import Path
from embedgen.errors import LockHeld
from embedgen.util.locks import acquire_output_lock
if len(sys.argv) > 3:  # race mode: start when the parent says go
    print("ready", flush=True)
    sys.stdin.readline()
try:
    with acquire_output_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        if sys.argv[2] == "stdin":
            sys.stdin.read()
        else:
            time.sleep(float(sys.argv[2]))
except LockHeld:
    print("held", flush=True)
"""


def _start_holder(output: Path, hold: str = "stdin") -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(output), hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "locked", line
    return proc


@contextmanager
def _takes_over(match: str) -> Iterator[None]:
    """Expect one take-over warning through the ``embedgen`` logger and no Python warning."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("embedgen")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.removeHandler(handler)
    assert [str(w.message) for w in caught] == []
    lines = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "taking over the stale lock" in lines[0], lines
    assert re.search(match, lines[0]), lines[0]


def test_lock_file_holds_pid_host_and_start_and_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with acquire_output_lock(out) as held:
        assert held.path == tmp_path / "out.parquet.lock" == lock_path(out)
        data = json.loads(held.path.read_text())
        assert data["pid"] == os.getpid()
        assert data["host"] == socket.gethostname()
        assert data["started"] == held.info.started
    assert not held.path.exists()


def test_second_acquisition_while_held_raises_lock_held(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    proc = _start_holder(out)
    try:
        with pytest.raises(LockHeld) as err, acquire_output_lock(out):
            pass
        assert f"PID {proc.pid}" in str(err.value)
        assert str(out) in str(err.value)
        assert err.value.exit_code == 5
        assert lock_path(out).exists()  # the holder's lock is untouched
    finally:
        proc.communicate("", timeout=10)
    assert not lock_path(out).exists()
    with acquire_output_lock(out):
        pass


def test_same_process_cannot_take_its_own_lock_twice(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with acquire_output_lock(out):
        with pytest.raises(LockHeld), acquire_output_lock(out):
            pass
        assert lock_path(out).exists()


def test_stale_lock_from_killed_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    proc = _start_holder(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert json.loads(lock_path(out).read_text())["pid"] == proc.pid  # left behind
    with _takes_over(f"PID {proc.pid}"), acquire_output_lock(out) as held:
        assert json.loads(held.path.read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_reused_pid_without_os_lock_is_stale(tmp_path: Path) -> None:
    """The lock names a live process that does not hold it: a dead run whose PID was reused."""
    out = tmp_path / "out.parquet"
    info = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2020-01-01T02:00:00"}
    lock_path(out).write_text(json.dumps(info))
    with _takes_over("another process"), acquire_output_lock(out) as held:
        assert json.loads(held.path.read_text())["pid"] == os.getpid()


def test_lock_from_another_host_counts_as_held(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    info = {"pid": 4242, "host": "some-other-host", "started": "2020-01-01T02:00:00"}
    lock_path(out).write_text(json.dumps(info))
    with pytest.raises(LockHeld, match="on host some-other-host"), acquire_output_lock(out):
        pass
    assert json.loads(lock_path(out).read_text()) == info


def test_empty_lock_file_is_held_while_young_and_stale_when_old(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    lock_path(out).write_bytes(b"")
    with pytest.raises(LockHeld, match="starting"), acquire_output_lock(out):
        pass
    old = time.time() - 3600
    os.utime(lock_path(out), (old, old))
    with _takes_over("unreadable"), acquire_output_lock(out):
        pass


def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), acquire_output_lock(out):
        raise RuntimeError("boom")
    assert not lock_path(out).exists()


def test_racing_runs_on_a_stale_lock_have_exactly_one_winner(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    dead = _start_holder(out)
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait(timeout=10)
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", _HOLDER, str(out), "1.0", "race"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert sorted(results) == ["held", "held", "held", "locked"], results
    assert not lock_path(out).exists()


def test_run_exits_5_while_another_run_holds_the_output_lock(tmp_path: Path) -> None:
    """End to end: `embedgen run` on an output another process is writing exits 5 at once."""
    from typer.testing import CliRunner

    from embedgen.cli import app

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "a short document"}\n')
    out = tmp_path / "out.parquet"
    proc = _start_holder(out)
    try:
        result = CliRunner().invoke(app, ["run", str(corpus), "-o", str(out)])
        assert result.exit_code == 5, result.output
        assert f"PID {proc.pid}" in result.output
        assert not out.exists()
    finally:
        proc.communicate("", timeout=10)
    result = CliRunner().invoke(app, ["run", str(corpus), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and not lock_path(out).exists()


def test_only_the_lock_file_appears_beside_the_output(tmp_path: Path) -> None:
    """The OS lock lives elsewhere: a held or a killed lock leaves nothing but ``<out>.lock``."""
    folder = tmp_path / "out"
    out = folder / "out.parquet"
    with acquire_output_lock(out):
        assert [p.name for p in folder.iterdir()] == ["out.parquet.lock"]
    assert list(folder.iterdir()) == []
    proc = _start_holder(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert [p.name for p in folder.iterdir()] == ["out.parquet.lock"]


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_another_path_to_the_same_output_meets_the_same_lock(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    proc = _start_holder(real / "out.parquet")
    try:
        alias = tmp_path / "alias" / "out.parquet"
        with pytest.raises(LockHeld, match=f"PID {proc.pid}"), acquire_output_lock(alias):
            pass
    finally:
        proc.communicate("", timeout=10)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root")
def test_lock_file_of_another_account_counts_as_held(tmp_path: Path) -> None:
    """Another account's run holds its OS lock where we cannot see it: never taken over."""
    out = tmp_path / "out.parquet"
    info = {"pid": 4242, "host": socket.gethostname(), "started": "2020-01-01T02:00:00"}
    lock_path(out).write_text(json.dumps(info))
    os.chown(lock_path(out), 54321, 54321)
    with pytest.raises(LockHeld, match="PID 4242"), acquire_output_lock(out):
        pass
    assert json.loads(lock_path(out).read_text()) == info


def test_a_killed_run_is_taken_over_with_one_warning_line(tmp_path: Path) -> None:
    """#14 defect 4: the re-run after ``kill -9`` says so in the normal warning line, with
    ``-q`` as without, and prints no raw Python warning (``…/run.py:156: StaleLockWarning``)."""
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": f"document number {i} is about topic {i % 17}"})
             for i in range(3000)]  # fmt: skip
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "embedgen", "run", str(corpus), "-o", str(out)]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONWARNINGS": "default"}
    killed = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not lock_path(out).exists():
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never took its lock"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert json.loads(lock_path(out).read_text())["pid"] == killed.pid

    small = tmp_path / "small.jsonl"
    small.write_text('{"text": "a short document"}\n')
    rerun = [sys.executable, "-m", "embedgen", "run", str(small), "-o", str(out), "-q"]
    done = subprocess.run(rerun, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "StaleLockWarning" not in done.stderr and "UserWarning" not in done.stderr
    assert not re.search(r"\.py:\d+:", done.stderr), done.stderr
    taken = [ln for ln in done.stderr.splitlines() if "taking over the stale lock" in ln]
    assert len(taken) == 1, done.stderr
    assert re.fullmatch(
        rf"\S+ \S+ WARNING taking over the stale lock \S+ left by a run that ended "
        rf"\(PID {killed.pid}, started \S+\)",
        taken[0],
    ), taken[0]
    assert out.exists() and not lock_path(out).exists()


def test_file_mutex_times_out_while_another_holds_it(tmp_path: Path) -> None:
    first, second = FileMutex(tmp_path / "x.lock"), FileMutex(tmp_path / "x.lock")
    with first.held(timeout=0):
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="locked by another process"):
            second.acquire(timeout=0.3)
        assert time.monotonic() - started >= 0.25
    with second.held(timeout=0):  # released: free at once
        pass


def test_file_mutex_waits_for_the_holder(tmp_path: Path) -> None:
    first, second = FileMutex(tmp_path / "x.lock"), FileMutex(tmp_path / "x.lock")
    first.acquire(timeout=0)
    threading.Timer(0.2, first.release).start()
    started = time.monotonic()
    with second.held(timeout=10):
        assert time.monotonic() - started >= 0.15


def test_budget_ledger_lock_times_out_with_a_cache_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedgen.budget import ledger as ledger_mod

    book = ledger_mod.Ledger(tmp_path / "budget-ledger.json")
    with book.update() as state:
        state.add_spend("2026-01", "openai", 5)
    monkeypatch.setattr(ledger_mod, "_LOCK_WAIT_SECONDS", 0.2)
    held = FileMutex(book.lock_path).held(timeout=0)
    with held, pytest.raises(CacheError, match="stayed locked by another run"):
        book.read()
    assert book.read().month_spend("2026-01") == {"openai": 5}
