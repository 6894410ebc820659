"""The output lock: one writer per output, stale locks from dead runs taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedgen.errors import LockHeld
from embedgen.lock import StaleLockWarning, acquire_output_lock, lock_path

_HOLDER = """
import sys, time
from pathlib import Path
from embedgen.errors import LockHeld
from embedgen.lock import acquire_output_lock
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
    with pytest.warns(StaleLockWarning, match=f"PID {proc.pid}"), acquire_output_lock(out) as held:
        assert json.loads(held.path.read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_reused_pid_without_os_lock_is_stale(tmp_path: Path) -> None:
    """The lock names a live process that does not hold it: a dead run whose PID was reused."""
    out = tmp_path / "out.parquet"
    info = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2020-01-01T02:00:00"}
    lock_path(out).write_text(json.dumps(info))
    with pytest.warns(StaleLockWarning, match="another process"), acquire_output_lock(out) as held:
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
    with pytest.warns(StaleLockWarning, match="unreadable"), acquire_output_lock(out):
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
