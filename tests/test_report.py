"""``embedgen run --report FILE.json``: validated against its documented JSON Schema on
success, failure, a budget stop (Ctrl-C: ``test_resume.py``), and kept to the newest N."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embedgen.budget.ledger import Ledger, ledger_path, month_of
from embedgen.budget.prices import usd
from embedgen.cli import app
from tests.api_servers import ApiServer

runner = CliRunner()
SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "embedgen/data/report.schema.json").read_text()
)
KEY = "sk-report-test-0123456789abcdef"
TEXTS = ["The cat sat on the mat.", "Embeddings map text to vectors.", "A third one."]


def load_report(path: Path) -> dict[str, Any]:
    """The report at ``path``, checked against the documented schema."""
    data = json.loads(path.read_text("utf-8"))
    jsonschema.validate(data, SCHEMA, format_checker=jsonschema.FormatChecker())
    return data


def test_schema_and_docs_name_the_same_keys() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs/report.md").read_text("utf-8")
    for key in SCHEMA["required"]:
        assert f"`{key}`" in doc, key


def test_a_finished_run_reports_counts_that_add_up(write_parquet, tmp_path: Path) -> None:
    src = write_parquet({"text": [*TEXTS, "", TEXTS[0]]})
    out = tmp_path / "out.parquet"
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["run", str(src), "-o", str(out), "--report", str(report)])
    assert result.exit_code == 4, result.output
    data = load_report(report)
    assert (data["status"], data["exit_code"], data["output"]) == (
        "finished with skipped documents", 4, str(out),
    )  # fmt: skip
    assert "1 document(s) skipped" in data["message"]
    c = data["counts"]
    assert c["chunks"] == pq.read_table(out).num_rows
    assert c["skipped"] == 1 and data["kept"]["skipped_list"].endswith(".skipped.jsonl")
    assert data["model"] and data["spent_usd"] == 0 and data["seconds"] > 0

    again = runner.invoke(app, ["run", str(src), "-o", str(out), "--report", str(report)])
    assert again.exit_code == 4
    assert load_report(report)["counts"]["cached"] >= len(TEXTS)  # the re-run hit the cache


def test_a_usage_error_and_a_provider_failure_are_reported(
    write_parquet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "r.json"
    missing = runner.invoke(app, ["run", str(tmp_path / "nope.parquet"), "--report", str(report)])
    assert missing.exit_code == 2
    data = load_report(report)
    assert (data["status"], data["counts"], data["output"]) == ("usage error", None, None)
    assert "input not found" in data["message"]

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ApiServer("openai", key=KEY) as server:
        server.fail_next("401")
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[run]\nproviders = ["openai"]\n[providers.openai]\nkind = "openai"\n'
                       f'base_url = "{server.url}/v1"\ndimensions = 8\n')  # fmt: skip
        src = write_parquet({"text": TEXTS})
        failed = runner.invoke(app, ["run", str(src), "-c", str(cfg), "--report", str(report)])
    assert failed.exit_code == 1
    data = load_report(report)
    assert data["status"] == "failed" and "HTTP 401" in data["message"]
    assert KEY not in report.read_text()
    assert data["output"] is None and data["kept"]["partial"] is None


def test_a_budget_stop_is_reported_with_what_it_spent(
    write_parquet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    texts = [f"document {i} about {'things ' * (i % 5)}topic {i}" for i in range(120)]
    with ApiServer("openai", key=KEY) as server:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[run]\nproviders = ["openai"]\n[providers.openai]\nkind = "openai"\n'
                       f'base_url = "{server.url}/v1"\ndimensions = 8\nmax_batch_inputs = 8\n'
                       "price_per_mtok = 2000.0\nmax_retries = 0\n")  # fmt: skip
        src = write_parquet({"text": texts})
        report = tmp_path / "r.json"
        args = ["run", str(src), "-c", str(cfg), "--max-cost", "0.5", "--report", str(report)]
        stopped = runner.invoke(app, args)
    assert stopped.exit_code == 3, stopped.output
    data = load_report(report)
    assert data["status"] == "stopped on budget" and data["exit_code"] == 3
    spent = sum(Ledger(ledger_path()).read().month_spend(month_of()).values())
    assert 0 < data["spent_usd"] == usd(spent) <= 0.5
    assert "stopped on budget" in data["message"]


def test_keep_reports_keeps_the_newest_n_of_a_dated_pattern(write_parquet, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for day in range(1, 6):
        old = logs / f"embedgen-2026-01-0{day}.report.json"
        old.write_text("{}")
        os.utime(old, (day * 1000, day * 1000))
    (logs / "other.json").write_text("{}")
    src = write_parquet({"text": TEXTS})
    pattern = str(logs / "embedgen-{date}.report.json")
    result = runner.invoke(app, ["run", str(src), "--report", pattern, "--keep-reports", "3"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in logs.iterdir())
    assert len(names) == 4 and "other.json" in names
    assert {"embedgen-2026-01-04.report.json", "embedgen-2026-01-05.report.json"} < set(names)
    newest = [n for n in names if not n.startswith(("other", "embedgen-2026-01-0"))]
    assert load_report(logs / newest[0])["status"] == "finished"
