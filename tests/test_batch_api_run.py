"""``embedgen run`` with ``mode = "batch"`` end to end, against the loopback batch server.

The acceptance lines of issue 13: 3,000 rows through failed requests and failed polls;
``--no-wait`` (exit 6, no output, the next run collects without submitting again);
``kill -9`` while waiting and the same command again; the ledger at the batch price of
exactly the billed tokens; a wrong key that never shows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embedgen.batch.journal import Journal
from embedgen.budget.ledger import Ledger, ledger_path, month_of
from embedgen.budget.prices import cost_pico
from embedgen.cache import resolve_cache_dir
from embedgen.cli import app
from tests.api_servers import vector_for
from tests.batch_server import KEY, BatchServer

runner = CliRunner()
PRICE = 1000.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def setup(tmp_path: Path, write_parquet, server: BatchServer, rows: int, poll: float = 0.001):
    texts = [f"row {i} is about {'many things ' * (i % 4)}topic {i % 89}" for i in range(rows)]
    src = write_parquet({"id": list(range(rows)), "text": texts})
    cfg = tmp_path / "embedgen.toml"
    cfg.write_text(
        '[run]\nproviders = ["openai"]\n\n[providers.openai]\nkind = "openai"\nmode = "batch"\n'
        f'base_url = "{server.url}/v1"\ndimensions = 8\nmax_batch_inputs = 64\n'
        f"batch_poll = {poll}\nbatch_poll_max = {poll * 4}\nbatch_price_per_mtok = {PRICE}\n"
        "max_retries = 4\nbackoff_base = 0.001\nbackoff_max = 0.01\ntimeout = 10\n",
        "utf-8",
    )
    return texts, src, cfg, tmp_path / "out.parquet"


def check_output(out: Path, texts: list[str], server: BatchServer) -> None:
    table = pq.read_table(out)
    assert table.num_rows == len(texts)
    assert table.column("id").to_pylist() == list(range(len(texts)))
    got = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    want = np.stack([vector_for(t, 8, server.state.model) for t in texts])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def spent() -> dict[str, int]:
    return Ledger(ledger_path()).read().month_spend(month_of())


def test_3000_rows_with_failed_requests_and_polls(tmp_path: Path, write_parquet) -> None:
    with BatchServer(fail_rate=0.05, poll_fail_rate=0.1, polls_to_start=20) as server:
        texts, src, cfg, out = setup(tmp_path, write_parquet, server, 3000)
        result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out)])
        assert result.exit_code == 0, result.output
        check_output(out, texts, server)
        assert server.calls["poll_failed"] > 0 and "batches:" in result.output
        assert max(server.state.embedded.values()) == 1  # nothing embedded (billed) twice
        assert spent() == {"openai": cost_pico(server.state.billed_tokens, PRICE)}
        assert server.live_files() == []


def test_no_wait_exits_6_and_the_next_run_collects(tmp_path: Path, write_parquet) -> None:
    with BatchServer(fail_rate=0.05) as server:
        texts, src, cfg, out = setup(tmp_path, write_parquet, server, 400)
        args = ["run", str(src), "-c", str(cfg), "-o", str(out)]
        first = runner.invoke(app, [*args, "--no-wait"])
        assert first.exit_code == 6, first.output
        assert "run the same command again" in first.output
        assert not out.exists() and not list(tmp_path.glob(".out.parquet*"))
        created = server.calls["create"]
        listed = runner.invoke(app, ["batches", "--json"])
        jobs = json.loads(listed.stdout)["jobs"]
        assert len(jobs) == created and {j["state"] for j in jobs} == {"submitted"}
        assert all(j["cost_usd"] > 0 and j["provider"] == "openai" for j in jobs)

        second = runner.invoke(app, args)
        assert second.exit_code == 0, second.output
        check_output(out, texts, server)
        # only the requests that failed inside a batch went out again
        resubmitted = server.calls["create"] - created
        assert resubmitted <= 1
        assert (resubmitted == 1) == bool(server.state.failed_texts)


def test_kill_9_while_waiting_then_the_same_command_collects(tmp_path: Path, write_parquet) -> None:
    with BatchServer(polls_to_start=10**9) as server:
        texts, src, cfg, out = setup(tmp_path, write_parquet, server, 300, poll=0.02)
        args = ["run", str(src), "-c", str(cfg), "-o", str(out)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedgen", *args], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while server.calls["poll"] < 3 and time.monotonic() < deadline:
                assert proc.poll() is None, "the run ended before it was killed"
                time.sleep(0.05)
            assert server.calls["poll"] >= 3
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert server.calls["create"] == 1
        (job,) = Journal(resolve_cache_dir()).jobs()
        assert job.state == "submitted" and job.reserved > 0
        server.state.polls_to_start = 0  # the provider finishes the batch meanwhile

        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        check_output(out, texts, server)
        assert server.calls["create"] == 1
        state = Ledger(ledger_path()).read()
        assert state.in_flight() == {}
        assert spent() == {"openai": cost_pico(server.state.billed_tokens, PRICE)}


def test_a_wrong_key_fails_and_never_appears_anywhere(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-batch-key-00112233445566"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with BatchServer() as server:
        _, src, cfg, out = setup(tmp_path, write_parquet, server, 20)
        log = tmp_path / "run.log"
        result = runner.invoke(
            app, ["run", str(src), "-c", str(cfg), "-o", str(out), "--log-file", str(log)]
        )
        assert result.exit_code == 1, result.output
        assert "HTTP 401" in result.output and "OPENAI_API_KEY" in result.output
        assert server.state.seen_keys and set(server.state.seen_keys) == {wrong}
        written = [log, *resolve_cache_dir().rglob("*")]
        for path in written:
            if path.is_file():
                assert wrong.encode() not in path.read_bytes(), path
        assert wrong not in result.output and not out.exists()


def test_batch_mode_needs_the_cache(tmp_path: Path, write_parquet) -> None:
    with BatchServer() as server:
        _, src, cfg, out = setup(tmp_path, write_parquet, server, 5)
        result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out), "--no-cache"])
        assert result.exit_code == 2, result.output
        assert "--no-cache" in result.output and server.calls["upload"] == 0


def test_batches_cancel_all(tmp_path: Path, write_parquet) -> None:
    with BatchServer() as server:
        _, src, cfg, out = setup(tmp_path, write_parquet, server, 50)
        args = ["run", str(src), "-c", str(cfg), "-o", str(out)]
        assert runner.invoke(app, [*args, "--no-wait"]).exit_code == 6
        cancelled = runner.invoke(app, ["batches", "cancel", "--all", "-c", str(cfg)])
        assert cancelled.exit_code == 0, cancelled.output
        assert server.calls["cancel"] == 1 and "cancelling" in cancelled.output
        table = runner.invoke(app, ["batches"])
        assert table.exit_code == 0 and "openai" in table.output
        (job,) = json.loads(runner.invoke(app, ["batches", "--json"]).stdout)["jobs"]
        assert job["status"] == "cancelling" and job["state"] == "submitted"
        stopped = runner.invoke(app, args)
        assert stopped.exit_code == 1 and "was cancelled" in stopped.output
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        assert server.calls["create"] == 2


def test_exit_code_6_is_documented_everywhere() -> None:
    from embedgen import errors

    assert errors.BatchesPending.exit_code == errors.EXIT_PENDING == 6
    readme = (REPO / "README.md").read_text("utf-8")
    assert re.search(r"^\| 6 \| batch jobs submitted", readme, re.MULTILINE)
    doc = (REPO / "docs" / "windows.md").read_text("utf-8")
    assert re.search(r"^\| 6 \| batch jobs submitted", doc, re.MULTILINE)
    script = (REPO / "windows" / "Register-EmbedgenTask.ps1").read_text("utf-8")
    assert re.search(r"6 \(0x6\) batch jobs submitted", script)
    printed = runner.invoke(app, ["schedule", "print", "--platform", "linux"])
    if printed.exit_code != 0:  # no --platform option: the host's own instructions
        printed = runner.invoke(app, ["schedule", "print"])
    assert "6 batch jobs submitted" in printed.output or "exit code 6" in printed.output


def test_cost_estimate_states_batch_cost_and_time_and_the_run_bills_it(
    tmp_path: Path, write_parquet
) -> None:
    with BatchServer() as server:
        _, src, cfg, out = setup(tmp_path, write_parquet, server, 200)
        est = runner.invoke(app, ["cost-estimate", str(src), "-c", str(cfg), "--json"])
        assert est.exit_code == 0, est.output
        (row,) = json.loads(est.stdout)["providers"]
        assert row["batch_price_usd_per_mtok"] == PRICE
        assert row["batch_jobs"] == 1 and row["batch_seconds_max"] == 24 * 3600
        table = runner.invoke(app, ["cost-estimate", str(src), "-c", str(cfg)])
        cost = f"${row['batch_cost_usd']:,.6g}"
        assert f"batch mode: {cost} in 1 job, done within 24.0 h" in " ".join(table.output.split())
        result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert spent() == {"openai": cost_pico(row["tokens"], PRICE)}
        assert row["tokens"] == server.state.billed_tokens
