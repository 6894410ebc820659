"""kill -9 during a run into a sink, then the same command again: the sink equals a fresh
full run's rows, with no duplicate (id, chunk), no orphan chunk of an old version and none
missing. Both during a cold load and during a sync with --prune, for LanceDB and PostgreSQL.

The killed process runs the real CLI behind a probe that SIGKILLs it at a chosen call of the
sink: before or after its Nth write or commit, before the prune, or (PostgreSQL) inside a
window's transaction, after the COPY and before the upsert.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sink_helpers import PROBE, assert_same_rows, lance_rows, parquet_rows, pg_rows

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
    pytest.mark.slow,
]

N = 240


def _docs(changed: bool) -> list[dict]:
    out = []
    for i in range(N):
        if changed and i % 20 == 3:
            continue  # removed
        text = f"record {i} on subject {i % 13}: " + "word " * (3 + i % 5)
        if changed and i % 10 == 1:
            text = f"edited record {i} " + "other " * (i % 4)
        out.append({"id": i, "text": text})
    return out


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _run(args: list[str], env: dict[str, str], probe: str | None = None) -> int:
    cmd = (
        [sys.executable, "-m", "embedgen"]
        if probe is None
        else [sys.executable, "-c", PROBE, probe]
    )
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDGEN_", "HF_"))}
    e.update(EMBEDGEN_CACHE_DIR=str(tmp_path / "cache"), NO_COLOR="1")
    e["EMBEDGEN_MODELS_DIR"] = os.environ["EMBEDGEN_MODELS_DIR"]
    e["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent), e.get("PYTHONPATH", "")])
    return e


# (sink method, call, before/after): a few of the points scripts/sink_bench.py kills at
POINTS = {
    "lancedb": ["write:2:before", "flush:1:before", "delete:1:before", "flush:1:after"],
    "postgres": ["write:2:before", "upsert:3:", "write:4:after", "delete:1:before"],
}


@pytest.mark.parametrize("kind", ["lancedb", "postgres"])
def test_kill_during_a_cold_load_and_a_sync(kind: str, tmp_path: Path, env, request) -> None:
    if kind == "lancedb":
        target = f"lancedb:{tmp_path / 'db'}"
        read = lambda: lance_rows(tmp_path / "db")  # noqa: E731
    else:
        target = request.getfixturevalue("pg_dsn")
        read = lambda: pg_rows(target)  # noqa: E731
    cfg = tmp_path / "run.toml"
    cfg.write_text("[run]\nsort_window = 24\n")
    first = _write(tmp_path / "a.jsonl", _docs(False))
    second = _write(tmp_path / "b.jsonl", _docs(True))

    def args(source: Path, out: str) -> list[str]:
        return ["run", str(source), "-o", out, "--id-column", "id", "--config", str(cfg), "--prune"]

    refs = {}
    for source in (first, second):
        ref = tmp_path / f"{source.stem}.parquet"
        assert _run(args(source, str(ref)), env) == 0
        refs[source] = parquet_rows(ref)
    cold, sync = POINTS[kind][:2], POINTS[kind][2:]
    for point in cold:  # a cold load killed, then completed: and again from the start
        if kind == "lancedb":
            import shutil

            shutil.rmtree(tmp_path / "db", ignore_errors=True)
        else:
            import psycopg

            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS chunks")
        assert _run(args(first, target), env, f"{kind}:{point}") == -signal.SIGKILL, point
        assert _run(args(first, target), env) == 0
        assert_same_rows(read(), refs[first])
    corpora = [second, first]  # each sync goes to the other corpus: changes and prunes
    for i, point in enumerate(sync):  # a sync killed, then re-run
        source = corpora[i % 2]
        assert _run(args(source, target), env, f"{kind}:{point}") == -signal.SIGKILL, point
        assert _run(args(source, target), env) == 0
        assert_same_rows(read(), refs[source])
