"""The sink acceptance figures (#18): cold load, sync, row-by-row equality, kill -9.

For each sink (LanceDB in a temp folder; PostgreSQL + pgvector from the ``pgserver`` wheel,
or ``--dsn`` for your own server), whole ``embedgen run`` processes:

1. cold: ``--docs`` short texts into Parquet and into the sink, alternating, each with a
   fresh cache; the sink's wall time over Parquet's (acceptance: at most 1.15x);
2. sync: the same corpus with 1% of documents changed and 0.5% removed, ``--prune``; its
   wall time over the cold load's (acceptance: at most 10%), and the rows it wrote;
3. equality: the sink against a fresh full Parquet run of the changed corpus through the
   same cache, row by row (ids, chunks, offsets, tokens, texts, vectors);
4. kill -9 (``--kill-docs``, smaller): killed at 10 points of a cold load and of a sync
   (sink writes and commits, inside a pgvector transaction, the prune), then the same
   command again; the sink must equal a fresh full run's rows each time.

    python scripts/sink_bench.py --docs 200000 --kill-docs 1200

Prints one JSON object; the machine's load shows in the wall times, so say what it was.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from sink_helpers import PROBE, assert_same_rows, lance_rows, parquet_rows, pg_rows  # noqa: E402

KILL_POINTS = {
    "lancedb": ["write:1:before", "write:3:after", "write:6:before", "write:9:after",
                "flush:1:before", "flush:1:after", "write:12:before", "delete:1:before",
                "delete:1:after", "write:2:after"],
    "postgres": ["write:1:before", "write:2:after", "upsert:1:", "upsert:3:", "write:5:before",
                 "write:5:after", "upsert:7:", "delete:1:before", "delete:1:after",
                 "write:9:after"],
}  # fmt: skip
"""Points inside both a cold load and a sync of ``--kill-docs`` documents in windows of 64
(a sync writes only the windows with changed documents: the default corpus has one in each)."""


def corpus(n: int, seed: int, *, changed: float = 0.0, removed: float = 0.0) -> list[dict]:
    rng = random.Random(seed)
    words = [
        "data",
        "vector",
        "store",
        "model",
        "query",
        "index",
        "table",
        "row",
        "commit",
        "sync",
        "embed",
        "text",
    ]
    edit = random.Random(seed + 1)
    out = []
    for i in range(n):
        text = f"item {i}: " + " ".join(rng.choice(words) for _ in range(8 + i % 12))
        r = edit.random()
        if r < removed:
            continue
        if r < removed + changed:
            text = f"revised item {i}: " + " ".join(edit.choice(words) for _ in range(6))
        out.append({"id": i, "text": text})
    return out


def write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def embedgen(args: list[str], cache: Path, probe: str | None = None) -> tuple[int, float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDGEN_")}
    env.update(EMBEDGEN_CACHE_DIR=str(cache), NO_COLOR="1")
    root = str(TESTS.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    head = (
        [sys.executable, "-m", "embedgen"]
        if probe is None
        else [sys.executable, "-c", PROBE, probe]
    )
    started = time.perf_counter()
    done = subprocess.run([*head, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"embedgen {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.returncode, seconds, done.stderr


def run_args(source: Path, out: str) -> list[str]:
    return ["run", str(source), "-o", out, "--id-column", "id", "--prune", "--quiet"]


class Sink:
    def __init__(self, kind: str, root: Path, dsn: str | None) -> None:
        self.kind, self.root, self.dsn = kind, root, dsn
        self.target = f"lancedb:{root / 'db'}" if kind == "lancedb" else str(dsn)

    def rows(self) -> list[tuple[Any, ...]]:
        return lance_rows(self.root / "db") if self.kind == "lancedb" else pg_rows(str(self.dsn))

    def drop(self) -> None:
        if self.kind == "lancedb":
            shutil.rmtree(self.root / "db", ignore_errors=True)
            return
        import psycopg

        with psycopg.connect(str(self.dsn), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS chunks")


def measure(sink: Sink, root: Path, docs: int) -> dict[str, Any]:
    first = write(root / "a.jsonl", corpus(docs, 1))
    second = write(root / "b.jsonl", corpus(docs, 1, changed=0.01, removed=0.005))
    sink.drop()
    _, parquet_s, _ = embedgen(run_args(first, str(root / "cold.parquet")), root / "c-parquet")
    _, cold_s, _ = embedgen(run_args(first, sink.target), root / "c-sink")
    _, sync_s, log = embedgen([*run_args(second, sink.target)[:-1]], root / "c-sink")
    fresh = root / "fresh.parquet"
    embedgen(run_args(second, str(fresh)), root / "c-sink")
    assert_same_rows(sink.rows(), parquet_rows(fresh))
    written = next((line for line in log.splitlines() if line.startswith("sink:")), "")
    return {"docs": docs, "parquet_s": round(parquet_s, 1), "cold_s": round(cold_s, 1),
            "cold_over_parquet": round(cold_s / parquet_s, 3), "sync_s": round(sync_s, 1),
            "sync_over_cold": round(sync_s / cold_s, 4), "sync": written,
            "equal_to_fresh_run": True}  # fmt: skip


def kills(sink: Sink, root: Path, docs: int) -> dict[str, Any]:
    cfg = root / "k.toml"
    cfg.write_text("[run]\nsort_window = 64\n")
    sources = [write(root / "ka.jsonl", corpus(docs, 2)),
               write(root / "kb.jsonl", corpus(docs, 2, changed=0.05, removed=0.03))]  # fmt: skip
    refs = {}
    for s in sources:
        embedgen([*run_args(s, str(root / f"{s.stem}.parquet")), "--config", str(cfg)], root / "kc")
        refs[s] = parquet_rows(root / f"{s.stem}.parquet")
    done = {"cold": 0, "sync": 0, "missed": []}
    for point in KILL_POINTS[sink.kind]:
        for phase, source, before in (("cold", sources[0], None), ("sync", sources[1], sources[0])):
            sink.drop()
            if before is not None:
                embedgen([*run_args(before, sink.target), "--config", str(cfg)], root / "kc")
            args = [*run_args(source, sink.target), "--config", str(cfg)]
            code, _, _ = embedgen(args, root / "kc", f"{sink.kind}:{point}")
            if code != -signal.SIGKILL:
                done["missed"].append(f"{phase} {point}")  # the run ended before that call
            embedgen(args, root / "kc")
            assert_same_rows(sink.rows(), refs[source])
            done[phase] += code == -signal.SIGKILL
    return done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=200_000)
    p.add_argument("--kill-docs", type=int, default=1200)
    p.add_argument("--sinks", default="lancedb,postgres")
    p.add_argument("--dsn", help="your own PostgreSQL (default: a pgserver in a temp folder)")
    p.add_argument("--no-kill", action="store_true")
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embedgen-sink-bench-"))
    server = None
    try:
        dsn = a.dsn
        if "postgres" in a.sinks and dsn is None:
            import pgserver

            server = pgserver.get_server(
                tempfile.mkdtemp(prefix="embedgen-pg-"), cleanup_mode="stop"
            )
            dsn = server.get_uri()
        report: dict[str, Any] = {}
        for kind in a.sinks.split(","):
            folder = root / kind
            folder.mkdir()
            sink = Sink(kind, folder, dsn)
            report[kind] = measure(sink, folder, a.docs)
            if not a.no_kill:
                report[kind]["kill9"] = kills(sink, folder, a.kill_docs)
            print(json.dumps({kind: report[kind]}), file=sys.stderr, flush=True)
        print(json.dumps(report, indent=2))
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
