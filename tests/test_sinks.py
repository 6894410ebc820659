"""Runs into LanceDB and PostgreSQL/pgvector: the sink equals a fresh full run, always.

Real stores: LanceDB on local disk, and a PostgreSQL server with pgvector from the
``pgserver`` wheel (the ``pg_server`` fixture). Each sync is compared row by row with a
fresh Parquet run of the same input, through the same cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sink_helpers import assert_same_rows, lance_rows, parquet_rows, pg_rows
from typer.testing import CliRunner

from embedgen.cli import app

runner = CliRunner()
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def corpus(n: int, *, changed: tuple[int, ...] = (), removed: tuple[int, ...] = ()) -> list[dict]:
    """n documents (every fifth long enough for several chunks of 16 tokens)."""
    docs = []
    for i in range(n):
        if i in removed:
            continue
        words = [WORDS[(i + k) % len(WORDS)] for k in range(40 if i % 5 == 0 else 6)]
        text = f"doc {i}: " + " ".join(words)
        if i in changed:
            text = f"changed {i}" if i % 5 == 0 else text + " and a new ending"
        docs.append({"id": f"d{i:03d}", "text": text, "n": i})
    return docs


def write(tmp_path: Path, docs: list[dict], name: str = "c.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def run(*args: str) -> Any:
    return runner.invoke(app, ["run", *args, "--id-column", "id", "--max-tokens", "16"])


@dataclass
class Sink:
    target: str
    rows: Callable[[], list[tuple[Any, ...]]]


@pytest.fixture(params=["lancedb", "postgres"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Sink:
    if request.param == "lancedb":
        db = tmp_path / "lance"
        return Sink(f"lancedb:{db}", lambda: lance_rows(db))
    dsn = request.getfixturevalue("pg_dsn")
    return Sink(dsn, lambda: pg_rows(dsn))


def fresh(tmp_path: Path, source: Path) -> list[tuple[Any, ...]]:
    out = tmp_path / "fresh.parquet"
    r = run(str(source), "-o", str(out), "--quiet")
    assert r.exit_code in (0, 4), r.output  # 4: skipped documents, as in the sink's run
    return parquet_rows(out)


def test_sync_equals_a_fresh_full_run(sink: Sink, tmp_path: Path) -> None:
    first = write(tmp_path, corpus(40))
    r = run(str(first), "-o", sink.target)
    assert r.exit_code == 0, r.output
    assert "0 documents unchanged, 40 written" in r.output
    assert_same_rows(sink.rows(), fresh(tmp_path, first))

    # 3 changed (one loses chunks), 2 removed, 2 new, 1 now empty
    docs = corpus(42, changed=(5, 7, 10), removed=(3, 20))
    docs[0]["text"] = ""
    second = write(tmp_path, docs, "c2.jsonl")
    r = run(str(second), "-o", sink.target, "--prune")
    assert r.exit_code == 4, r.output  # the empty document is listed as skipped
    # 5 written (3 changed, 2 new); the one now empty loses its rows with them
    assert "34 documents unchanged, 5 written" in r.output
    assert "2 pruned" in r.output
    assert_same_rows(sink.rows(), fresh(tmp_path, second))


def test_an_unchanged_input_writes_nothing(sink: Sink, tmp_path: Path) -> None:
    source = write(tmp_path, corpus(20))
    assert run(str(source), "-o", sink.target).exit_code == 0
    before = sink.rows()
    r = run(str(source), "-o", sink.target)
    assert r.exit_code == 0, r.output
    assert "20 documents unchanged, 0 written (0 rows), 0 pruned" in r.output
    assert_same_rows(sink.rows(), before)


def test_without_prune_removed_documents_stay(sink: Sink, tmp_path: Path) -> None:
    assert run(str(write(tmp_path, corpus(12))), "-o", sink.target).exit_code == 0
    r = run(str(write(tmp_path, corpus(12, removed=(1, 2)), "c2.jsonl")), "-o", sink.target)
    assert r.exit_code == 0, r.output
    assert {row[0] for row in sink.rows()} == {f"d{i:03d}" for i in range(12)}


def test_another_model_or_columns_is_refused_unless_overwrite(sink: Sink, tmp_path: Path) -> None:
    source = write(tmp_path, corpus(10))
    assert run(str(source), "-o", sink.target).exit_code == 0
    before = sink.rows()
    r = run(str(source), "-o", sink.target, "--dimensions", "128", "--force")
    assert r.exit_code == 2, r.output
    assert "another model or settings" in r.output and "--overwrite" in r.output
    r = run(str(source), "-o", sink.target, "--no-text")
    assert r.exit_code == 2 and "--no-text differ" in r.output, r.output
    assert "Traceback" not in r.output
    assert_same_rows(sink.rows(), before)  # nothing lost
    r = run(str(source), "-o", sink.target, "--dimensions", "128", "--force", "--overwrite")
    assert r.exit_code == 0, r.output
    assert {len(row[-1]) for row in sink.rows()} == {128}


def test_rows_written_by_hand_are_replaced_or_pruned(sink: Sink, tmp_path: Path) -> None:
    source = write(tmp_path, corpus(10))
    assert run(str(source), "-o", sink.target).exit_code == 0
    rows = sink.rows()
    _add_by_hand(sink.target, "d001", 7)  # a stray chunk of a known document
    _add_by_hand(sink.target, "zzz", 0)  # a document embedgen never wrote
    r = run(str(source), "-o", sink.target, "--prune")
    assert r.exit_code == 0, r.output
    assert "2 document(s)" in r.output and "rewritten" in r.output
    assert_same_rows(sink.rows(), rows)


def _add_by_hand(target: str, doc_id: str, chunk: int) -> None:
    """Insert one row the way another tool would: no fingerprint."""
    if target.startswith("lancedb:"):
        import lancedb
        import pyarrow as pa

        t = lancedb.connect(target.removeprefix("lancedb:")).open_table("chunks")
        row = {f.name: None for f in t.schema}
        row.update(id=doc_id, chunk=chunk, char_start=0, char_end=1, tokens=1, text="x")
        row["embedding"] = [0.0] * t.schema.field("embedding").type.list_size
        t.add(pa.Table.from_pylist([row], schema=t.schema))
        return
    import psycopg

    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO chunks (id, chunk, char_start, char_end, tokens, text, embedding) "
            "SELECT %s, %s, 0, 1, 1, 'x', embedding FROM chunks LIMIT 1",
            [doc_id, chunk],
        )


def test_index_is_built_after_the_load(sink: Sink, tmp_path: Path) -> None:
    r = run(str(write(tmp_path, corpus(300))), "-o", sink.target, "--index")
    assert r.exit_code == 0, r.output
    assert "index:" in r.output and "built in" in r.output


def test_duplicate_ids_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    docs = corpus(4) + [{"id": "d001", "text": "again", "n": 9}]
    r = run(str(write(tmp_path, docs)), "-o", f"lancedb:{tmp_path / 'db'}")
    assert r.exit_code == 2 and "appears twice" in r.output, r.output


def test_table_option_and_config_output_table(tmp_path: Path) -> None:
    source = write(tmp_path, corpus(5))
    db = tmp_path / "db"
    r = run(str(source), "-o", f"lancedb:{db}", "--table", "docs_v1")
    assert r.exit_code == 0, r.output
    assert len(lance_rows(db, "docs_v1")) == len(parquet_rows_of(tmp_path, source))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[output]\ntarget = "lancedb:{db}"\ntable = "docs_v2"\nmode = "sync"\n')
    r = run(str(source), "--config", str(cfg))
    assert r.exit_code == 0, r.output
    assert len(lance_rows(db, "docs_v2")) == len(lance_rows(db, "docs_v1"))
    r = run(str(source), "-o", str(tmp_path / "x.parquet"), "--table", "t")
    assert r.exit_code == 2 and "--table applies to" in r.output


def parquet_rows_of(tmp_path: Path, source: Path) -> list[tuple[Any, ...]]:
    return fresh(tmp_path, source)


def test_ray_engine_refuses_a_sink(tmp_path: Path) -> None:
    r = run(str(write(tmp_path, corpus(3))), "-o", f"lancedb:{tmp_path}/db", "--engine", "ray")
    assert r.exit_code == 2 and "--engine local" in r.output, r.output


@pytest.mark.parametrize(
    ("dsn", "code", "message"),
    [
        ("postgresql://u:s3cretpw@127.0.0.1:1/db", 1, "cannot connect to postgresql://u:***@"),
        ("postgresql://u:s3cretpw@127.0.0.1:5432/db?sslmode=bogus", 1, "invalid sslmode"),
    ],
)
def test_unreachable_database_costs_nothing(
    tmp_path: Path, dsn: str, code: int, message: str
) -> None:
    r = run(str(write(tmp_path, corpus(3))), "-o", dsn)
    assert r.exit_code == code, r.output
    assert message in r.output and "s3cretpw" not in r.output and "Traceback" not in r.output
    assert "nothing was embedded" in r.output or "chunks" not in r.output


def test_wrong_password_is_one_line_without_the_password(pg_dsn: str, tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS alice; CREATE ROLE alice LOGIN PASSWORD 'right'")
        hba = conn.execute("SHOW hba_file").fetchone()[0]
        Path(hba).write_text("local all alice scram-sha-256\n" + Path(hba).read_text())
        conn.execute("SELECT pg_reload_conf()")
    host = pg_dsn.split("host=")[1]
    try:
        r = run(
            str(write(tmp_path, corpus(3))),
            "-o",
            f"postgresql://alice:wr0ngpw@/postgres?host={host}",
        )
        assert r.exit_code == 1, r.output
        assert "password authentication failed" in r.output and "wr0ngpw" not in r.output
        assert "Traceback" not in r.output
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            Path(hba).write_text(
                Path(hba).read_text().replace("local all alice scram-sha-256\n", "")
            )
            conn.execute("SELECT pg_reload_conf()")


@pytest.mark.parametrize("kind", ["parquet", "lancedb", "postgres"])
def test_search_finds_a_chunk_by_its_own_text(kind: str, tmp_path: Path, request) -> None:
    source = write(tmp_path, corpus(30))
    target = {
        "parquet": str(tmp_path / "out.parquet"),
        "lancedb": f"lancedb:{tmp_path / 'db'}",
    }.get(kind) or request.getfixturevalue("pg_dsn")
    assert run(str(source), "-o", target).exit_code == 0
    rows = fresh(tmp_path, source)
    row = next(r for r in rows if r[0] == "d017")  # a chunk: its own text is the query
    r = runner.invoke(app, ["search", target, row[5], "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert [set(h) for h in hits] == [{"id", "chunk", "score", "text"}] * 3
    assert (hits[0]["id"], hits[0]["chunk"], hits[0]["text"]) == (row[0], row[1], row[5])
    assert hits[0]["score"] > 0.99 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    r = runner.invoke(app, ["search", target, row[5], "-k", "1"])
    assert r.exit_code == 0 and f"{row[0]}  #{row[1]}" in r.output, r.output


def test_encoder_for_a_target_embeds_queries_as_the_run_did(tmp_path: Path) -> None:
    from sink_helpers import COLUMNS

    import embedgen

    source = write(tmp_path, corpus(6))
    db = tmp_path / "db"
    # another dimension and chunk length than the defaults: the encoder reads them back
    assert run(str(source), "-o", f"lancedb:{db}", "--dimensions", "128", "--force").exit_code == 0
    rows = lance_rows(db)
    with embedgen.encoder_for(f"lancedb:{db}") as encoder:
        vectors = encoder.encode([rows[0][COLUMNS.index("text")], rows[1][5]])
    assert vectors.shape == (2, 128)
    # the int8 default's vectors move a little with their batch (not to the last digit)
    assert float(vectors[0] @ rows[0][-1]) > 0.99 and float(vectors[1] @ rows[1][-1]) > 0.99


def test_search_of_a_store_with_a_filter(tmp_path: Path, pg_dsn: str) -> None:
    source = write(tmp_path, corpus(12))
    for target in (f"lancedb:{tmp_path / 'db'}", pg_dsn):
        assert run(str(source), "-o", target, "--keep", "n").exit_code == 0
        r = runner.invoke(app, ["search", target, "doc 3", "--json", "--filter", "n > 5"])
        assert r.exit_code == 0, r.output
        assert all(int(h["id"][1:]) > 5 for h in json.loads(r.output))
    r = runner.invoke(app, ["search", str(source), "x", "--filter", "n > 5"])
    assert r.exit_code == 2


def test_search_of_a_missing_target(tmp_path: Path) -> None:
    r = runner.invoke(app, ["search", f"lancedb:{tmp_path / 'none'}", "x"])
    assert r.exit_code == 2 and "has no table" in r.output, r.output


def test_cost_estimate_into_a_sink_prices_only_what_changed(tmp_path: Path) -> None:
    """`cost-estimate -o SINK`: the documents the sink holds unchanged cost nothing, as a
    run into it would skip them (#18); a sink of another model, or several providers, is
    refused with a one-line reason."""
    db = tmp_path / "lance"
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nid_column = "id"\nmax_tokens = 16\n')
    first = write(tmp_path, corpus(40))
    assert (
        runner.invoke(app, ["run", str(first), "-c", str(cfg), "-o", f"lancedb:{db}"]).exit_code
        == 0
    )
    second = write(tmp_path, corpus(40, changed=(5, 7)), "c2.jsonl")

    def estimate(*extra: str) -> dict[str, Any]:
        args = ["cost-estimate", str(second), "-c", str(cfg), "--provider", "local:default",
                "--cache-dir", str(tmp_path / "empty-cache"), "--json", *extra]  # fmt: skip
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    whole = estimate()["providers"][0]
    synced = estimate("-o", f"lancedb:{db}")
    only = synced["providers"][0]
    assert synced["sink"] == f"lancedb:{db} (table chunks)"
    assert (whole["unchanged_in_sink"], only["unchanged_in_sink"]) == (0, 38)
    changed = [d for d in corpus(40, changed=(5, 7)) if d["n"] in (5, 7)]
    alone = write(tmp_path, changed, "changed.jsonl")
    args = ["cost-estimate", str(alone), "-c", str(cfg), "--provider", "local:default",
            "--cache-dir", str(tmp_path / "empty-cache"), "--json"]  # fmt: skip
    just_those = json.loads(runner.invoke(app, args).stdout)["providers"][0]
    assert (only["chunks"], only["tokens"]) == (just_those["chunks"], just_those["tokens"])
    assert only["tokens"] < whole["tokens"] / 10

    r = run(str(second), "-c", str(cfg), "-o", f"lancedb:{db}")  # the run agrees
    assert "38 documents unchanged, 2 written" in r.output, r.output
    two = runner.invoke(app, ["cost-estimate", str(second), "-o", f"lancedb:{db}"])
    assert two.exit_code == 2 and "price that one provider" in two.output, two.output
    other = runner.invoke(app, ["cost-estimate", str(second), "-c", str(cfg), "--provider",
                                "local:default-original", "-o", f"lancedb:{db}"])  # fmt: skip
    assert other.exit_code == 2 and "Traceback" not in other.output, other.output


def test_a_lost_database_connection_is_one_line_and_a_rerun_finishes(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops the run's connection mid-load (pg_terminate_backend, as a restart or
    a failover would): one error line, exit 1, no traceback; the same command again leaves
    the table equal to a fresh full run's (#18, exactly once under faults)."""
    import psycopg

    from embedgen.sinks.pg import PgSink

    cfg = tmp_path / "run.toml"
    cfg.write_text("[run]\nsort_window = 8\n")
    source = write(tmp_path, corpus(60))
    real, calls = PgSink._write, []

    def dropped(self: PgSink, table: Any, replace: list[Any]) -> None:
        calls.append(1)
        if len(calls) == 3:  # the third window: two are committed, the rest to come
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (self.conn.info.backend_pid,))
        real(self, table, replace)

    monkeypatch.setattr(PgSink, "_write", dropped)
    r = run(str(source), "-o", pg_dsn, "-c", str(cfg))
    assert r.exit_code == 1, r.output
    assert "lost the connection to" in r.output and "Traceback" not in r.output, r.output
    monkeypatch.setattr(PgSink, "_write", real)
    r = run(str(source), "-o", pg_dsn, "-c", str(cfg))
    assert r.exit_code == 0, r.output
    assert_same_rows(pg_rows(pg_dsn), fresh(tmp_path, source))
