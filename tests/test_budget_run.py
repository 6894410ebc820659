"""``embedgen run`` under a budget, end to end against a loopback API.

Needs the lead's wiring of :class:`embedgen.budget.session.RunBudget` into
``embed_corpus`` (and in-flight batches cached before an error propagates).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedgen.budget.ledger import Ledger, ledger_path, month_of
from embedgen.budget.prices import PICO, cost_pico, fmt_usd
from embedgen.cli import app
from tests.api_servers import ApiServer

runner = CliRunner()
KEY = "sk-budget-run-0123456789abcdef"
PRICE = 2000.0  # USD per 1M tokens: a short corpus costs dollars, not nano-dollars


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _setup(tmp_path: Path, write_parquet, server: ApiServer) -> tuple[Path, Path]:
    texts = [f"document {i} talks about {'several things ' * (i % 6)}topic {i}" for i in range(240)]
    src = write_parquet({"id": list(range(240)), "text": texts})
    cfg = tmp_path / "embedgen.toml"
    cfg.write_text(
        '[run]\nproviders = ["openai"]\n\n'
        f'[providers.openai]\nkind = "openai"\nbase_url = "{server.url}/v1"\ndimensions = 8\n'
        f"max_batch_inputs = 8\nmax_concurrency = 4\nprice_per_mtok = {PRICE}\n"
        "max_retries = 0\n",
        "utf-8",
    )
    return src, cfg


def _spent() -> int:
    state = Ledger(ledger_path()).read()
    return sum(state.month_spend(month_of()).values())


def _billed_tokens(server: ApiServer) -> int:
    count = server.state.count_tokens
    return sum(count(t) for r in server.records if r.status == 200 for t in r.texts)


def test_run_cap_stops_with_exit_3_and_a_rerun_pays_only_the_rest(
    tmp_path: Path, write_parquet
) -> None:
    with ApiServer("openai", key=KEY) as server:
        src, cfg = _setup(tmp_path, write_parquet, server)
        est = runner.invoke(app, ["cost-estimate", str(src), "-c", str(cfg), "--json"])
        full = json.loads(est.stdout)["providers"][0]
        full_cost = cost_pico(full["tokens"], PRICE)
        half = full_cost / 2 / PICO
        out = tmp_path / "out.parquet"
        args = ["run", str(src), "-c", str(cfg), "-o", str(out), "--quiet"]

        stopped = runner.invoke(app, [*args, "--max-cost", f"{half}"])
        assert stopped.exit_code == 3, stopped.output
        msg = " ".join(stopped.output.split())
        assert "stopped on budget" in msg and "run cap" in msg
        assert "remaining:" in msg and "chunks" in msg and "tokens" in msg
        first = _spent()
        assert 0 < first <= full_cost / 2
        assert first == cost_pico(_billed_tokens(server), PRICE)
        assert f"spent {fmt_usd(first)} this run" in msg  # in-flight requests included
        left = full_cost - first
        assert f"about {fmt_usd(left)} at openai" in msg
        assert not out.exists()

        done = runner.invoke(app, [*args, "--max-cost", f"{2 * half + 1}"])
        assert done.exit_code == 0, done.output
        # nothing paid twice: two runs cost exactly one full run
        assert _spent() == full_cost
        assert _billed_tokens(server) == full["tokens"]

    status = runner.invoke(app, ["budget", "status", "--json"])
    data = json.loads(status.stdout)
    assert data["spent_usd"] == full_cost / PICO
    assert [r["provider"] for r in data["providers"]] == ["openai"]
    assert [r["status"] for r in data["last_runs"]] == ["stopped on budget", "finished"]
    reset = runner.invoke(app, ["budget", "reset", "--month"])
    assert reset.exit_code == 0 and "forgot" in reset.stdout
    assert _spent() == 0


def test_monthly_cap_in_config_stops_before_the_first_request(
    tmp_path: Path, write_parquet
) -> None:
    with ApiServer("openai", key=KEY) as server:
        src, cfg = _setup(tmp_path, write_parquet, server)
        cfg.write_text(cfg.read_text() + "\n[budget]\nmonthly_usd = 0\n")
        result = runner.invoke(
            app, ["run", str(src), "-c", str(cfg), "-o", str(tmp_path / "o.parquet")]
        )
        assert result.exit_code == 3, result.output
        assert "monthly cap" in result.output
        assert server.records == []


def test_max_cost_on_the_command_line_raises_the_config_run_cap(
    tmp_path: Path, write_parquet
) -> None:
    """``--max-cost`` overrides ``[budget] run_usd`` (it was the smaller of the two)."""
    with ApiServer("openai", key=KEY) as server:
        src, cfg = _setup(tmp_path, write_parquet, server)
        cfg.write_text(cfg.read_text() + "\n[budget]\nrun_usd = 0.000001\n")
        out = tmp_path / "out.parquet"
        args = ["run", str(src), "-c", str(cfg), "-o", str(out), "--quiet"]
        stopped = runner.invoke(app, args)
        assert stopped.exit_code == 3, stopped.output
        assert "--max-cost" in " ".join(stopped.output.split())
        done = runner.invoke(app, [*args, "--max-cost", "1000"])
        assert done.exit_code == 0, done.output
        assert out.exists()


def test_a_budget_stop_carries_what_was_kept_as_data(tmp_path: Path, write_parquet) -> None:
    """The failure context is a structured attribute (``exc.kept``), shown once in the text."""
    from embedgen import embed_corpus
    from embedgen.errors import BudgetExceeded, Kept

    with ApiServer("openai", key=KEY) as server:
        src, cfg = _setup(tmp_path, write_parquet, server)
        count = server.state.count_tokens
        texts = [
            f"document {i} talks about {'several things ' * (i % 6)}topic {i}" for i in range(240)
        ]
        cap = cost_pico(sum(count(t) for t in texts), PRICE) / 2 / PICO
        out = tmp_path / "out.parquet"
        with pytest.raises(BudgetExceeded) as err:
            embed_corpus(src, out, config=cfg, quiet=True, max_cost_usd=cap, sort_window=16)
    kept = err.value.kept
    assert isinstance(kept, Kept)
    assert kept.partial == tmp_path / "out.partial.parquet" and kept.partial.exists()
    text = str(err.value)
    assert text.endswith(f" ({kept})") and text.count("rows written so far") == 1
    assert "remaining:" in text and not out.exists()
