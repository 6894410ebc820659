"""``embedgen run --engine ray`` when an embedding worker dies (``kill -9`` of its process):
Ray restarts it and retries its block, and past its restarts the run stops with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cache_corpus import cache_written

pytest.importorskip("ray")

from embedgen.engines import embed_corpus as embed  # noqa: E402
from embedgen.engines.ray_engine import WORKER_RESTARTS  # noqa: E402

ROW_COLUMNS = ["id", "chunk", "char_start", "char_end", "tokens", "text"]


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (the run and the local Ray instance it started)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _embed_workers(root: int) -> list[int]:
    """The processes of the run's embedding actors (Ray titles them after the class)."""
    found = []
    for pid in _descendants(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"EmbedWorker" in title:
            found.append(pid)
    return found


def _start(tmp_path: Path, write_parquet, workers: int) -> tuple[subprocess.Popen, Path, Path]:
    texts = [f"sentence {i} " + "with some more words to embed " * (i % 12) for i in range(6000)]
    src = write_parquet({"text": texts})
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "embedgen", "run", str(src), "-o", str(out),
           "--engine", "ray", "--workers", str(workers), "--max-tokens", "32"]  # fmt: skip
    # its own Ray instance (ray.init would join the session's through /tmp/ray), so the
    # kill takes the driver and every Ray process it started
    env = {**os.environ, "RAY_ADDRESS": "local"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    return proc, out, src


def _wait_for_cache(proc: subprocess.Popen, size: int) -> None:
    cache = Path(os.environ["EMBEDGEN_CACHE_DIR"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if cache_written(cache) > size:
            return
        time.sleep(0.05)


def test_a_killed_worker_is_restarted_and_the_run_finishes(tmp_path: Path, write_parquet) -> None:
    proc, out, src = _start(tmp_path, write_parquet, workers=2)
    try:
        _wait_for_cache(proc, 256 * 1024)
        victims = _embed_workers(proc.pid)
        assert victims and proc.poll() is None, "the run finished before a worker could be killed"
        os.kill(victims[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "ActorDiedError" not in err
    local = embed(src, tmp_path / "local.parquet", max_tokens=32, quiet=True)
    assert local.cached == local.chunks  # the restarted worker stored what it embedded
    a, b = pq.read_table(out), pq.read_table(tmp_path / "local.parquet")
    for col in ROW_COLUMNS:
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col


def test_a_worker_dying_past_its_restarts_stops_with_one_line(
    tmp_path: Path, write_parquet
) -> None:
    proc, out, _ = _start(tmp_path, write_parquet, workers=1)
    killed: set[int] = set()
    try:
        _wait_for_cache(proc, 128 * 1024)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            for pid in set(_embed_workers(proc.pid)) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.1)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(killed) > WORKER_RESTARTS
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "ActorDiedError" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: a Ray embedding worker died after 3 restarts"), err
    assert "run the same command again to resume" in last
    assert not out.exists()
