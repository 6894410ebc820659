"""``embedgen cost-estimate`` against what a loopback API really bills, and ``models --prices``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedgen.budget.prices import cost_pico, usd
from embedgen.cli import app
from embedgen.config import OpenAIConfig
from embedgen.config.catalog import PRICES_AS_OF, list_price
from tests.api_servers import ApiServer

runner = CliRunner()
KEY = "sk-estimate-test-0123456789abcdef"


def _texts(n: int) -> list[str | None]:
    out: list[str | None] = []
    for i in range(n):
        if i % 9 == 0:  # long: several chunks of 12 tokens
            out.append(" ".join(f"word{i}x{j} alpha, beta; gamma" for j in range(12)))
        elif i % 13 == 0:
            out.append("the same sentence appears in several documents.")
        elif i == 5:
            out.append(None)
        else:
            out.append(f"document {i} says héllo to the wörld, {'and more ' * (i % 5)}")
    return out


def _config(tmp_path: Path, server: ApiServer, **extra: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    text = (
        '[run]\nproviders = ["openai"]\nmax_tokens = 12\n\n'
        f'[providers.openai]\nkind = "openai"\nbase_url = "{server.url}/v1"\n'
        "dimensions = 8\nmax_batch_inputs = 16\nmax_retries = 0\n" + "\n".join(lines) + "\n"
    )
    path = tmp_path / "embedgen.toml"
    path.write_text(text, "utf-8")
    return path


def _estimate(*args: str) -> dict:
    result = runner.invoke(app, ["cost-estimate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_tokens_and_cost_equal_what_the_api_bills(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_parquet({"id": list(range(120)), "text": _texts(120)})
    with ApiServer("openai", key=KEY) as server:
        cfg = _config(tmp_path, server)
        # estimating needs no key
        est = _estimate(str(src), "-c", str(cfg))
        (row,) = est["providers"]
        assert row["provider"] == "openai" and row["token_count"] == "exact (cl100k_base)"
        assert row["duplicate_chunks"] > 0 and row["cached_chunks"] == 0  # repeats: once
        assert server.records == []  # and sends nothing
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        out = tmp_path / "out.parquet"
        ran = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out), "--quiet"])
        assert ran.exit_code == 4, ran.output  # the null row is skipped
        billed = [r.texts for r in server.records if r.status == 200]
        server_tokens = sum(server.state.count_tokens(t) for req in billed for t in req)
    assert row["tokens"] == server_tokens
    assert row["requests"] == len(billed)
    assert row["chunks"] - row["duplicate_chunks"] == sum(len(r) for r in billed)
    assert row["documents"] == 120 and row["skipped"] == 1
    price = list_price("openai", "text-embedding-3-small")
    assert row["price_usd_per_mtok"] == price == 0.02
    assert row["cost_usd"] == usd(cost_pico(server_tokens, price))
    assert row["cost_usd"] == pytest.approx(server_tokens * price / 1e6, rel=1e-12)
    assert row["batch_cost_usd"] == pytest.approx(row["cost_usd"] / 2)
    # everything is cached now: nothing left to pay
    again = _estimate(str(src), "-c", str(cfg))["providers"][0]
    assert again["cached_pct"] == 100.0 and again["tokens"] == 0 and again["cost_usd"] == 0


def test_price_override_budget_fit_and_sample_extrapolation(tmp_path: Path, write_parquet) -> None:
    src = write_parquet({"text": [f"row {i} has a few words in it" for i in range(400)]})
    with ApiServer("openai") as server:
        cfg = _config(tmp_path, server, price_per_mtok=1000.0, rpm=60)
        text = cfg.read_text() + "\n[budget]\nrun_usd = 0.5\n"
        cfg.write_text(text)
        full = _estimate(str(src), "-c", str(cfg))["providers"][0]
        part = _estimate(str(src), "-c", str(cfg), "--sample", "40")
    assert full["cost_usd"] == usd(cost_pico(full["tokens"], 1000.0))
    assert full["fits_budget"] is (full["cost_usd"] <= 0.5)
    assert full["budget_remaining_usd"] == 0.5 and "run cap" in full["budget_note"]
    assert full["seconds"] == pytest.approx(full["requests"], abs=0.1)  # 60 requests a minute
    assert part["extrapolated"] and part["sample_documents"] == 40 and part["documents"] == 400
    (p,) = part["providers"]
    assert p["documents"] == 400
    assert p["tokens"] == pytest.approx(full["tokens"], rel=0.05)


def test_kind_model_specs_without_config_and_the_local_model(tmp_path: Path, write_jsonl) -> None:
    src = write_jsonl([json.dumps({"text": f"line {i} of the file"}) for i in range(30)])
    est = _estimate(
        str(src), "-p", "openai:text-embedding-3-large", "-p", "voyage:voyage-3",
        "-p", "cohere:embed-v4.0", "-p", "local:default",
    )  # fmt: skip
    rows = {r["provider"]: r for r in est["providers"]}
    assert list(rows) == [
        "openai:text-embedding-3-large", "voyage:voyage-3", "cohere:embed-v4.0", "local:default",
    ]  # fmt: skip
    assert rows["voyage:voyage-3"]["token_count"] == "exact (voyage3_base)"
    assert rows["cohere:embed-v4.0"]["token_count"].startswith("estimate")
    assert rows["voyage:voyage-3"]["price_usd_per_mtok"] == 0.06
    local = rows["local:default"]
    assert local["cost_usd"] == 0 and local["requests"] is None
    assert local["seconds"] > 0 and "measured" in local["time_basis"]
    assert est["prices_as_of"] == PRICES_AS_OF
    for r in rows.values():
        assert r["documents"] == 30 and r["chunks"] == 30


def test_table_output_and_bad_specs(tmp_path: Path, write_parquet) -> None:
    src = write_parquet({"body": ["one text", "two texts"]})
    result = runner.invoke(
        app,
        ["cost-estimate", str(src), "--text-column", "body", "-p", "openai:text-embedding-3-small"],
    )
    assert result.exit_code == 0, result.output
    assert "prices as of" in result.stdout and "cl100k_base" in result.stdout
    bad = runner.invoke(app, ["cost-estimate", str(src), "-p", "nonsense"])
    assert bad.exit_code == 2 and "KIND:MODEL" in bad.output
    unknown = runner.invoke(app, ["cost-estimate", str(src), "-p", "voyage:no-such-model"])
    assert unknown.exit_code == 2 and "not known" in unknown.output


def test_models_prices_is_the_table_the_providers_use() -> None:
    result = runner.invoke(app, ["models", "--prices", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["as_of"] == PRICES_AS_OF
    table = {(p["provider"], p["model"]): p for p in data["prices"]}
    assert table[("openai", "text-embedding-3-small")]["batch_usd_per_mtok"] == 0.01
    from embedgen.config.catalog import KINDS, family_of

    families = {family_of(k) for k in KINDS}
    assert {p for p, _ in table} <= families, "a listed provider that no kind accepts"
    assert OpenAIConfig(model="text-embedding-3-large").price() == 0.13
    assert OpenAIConfig(model="text-embedding-3-large", price_per_mtok=0.5).price() == 0.5
    text = runner.invoke(app, ["models", "--prices"])
    assert f"prices as of {PRICES_AS_OF}" in text.stdout


@pytest.mark.parametrize("columns", ["80", "110"])
def test_the_table_fits_narrow_terminals_and_shows_the_corpus_tokens(
    write_parquet, columns: str
) -> None:
    """At 80 and 110 columns every cell was cut (``prov…``, ``openai:te…``, ``$0.``); a fully
    cached local model showed 0 tokens (#24)."""
    src = write_parquet({"text": ["a first text to count", "and a second one"]})
    assert runner.invoke(app, ["run", str(src), "-q"]).exit_code == 0  # all cached now
    args = ["cost-estimate", str(src), "-p", "openai:text-embedding-3-small", "-p", "local:default"]
    result = runner.invoke(app, args, env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "$0. " not in result.output + " "
    flat = result.output.replace("\n", " ")
    assert "local:default" in flat and "100.0%" in flat
    data = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    local = next(p for p in data["providers"] if p["provider"] == "local:default")
    assert local["tokens"] == 0 and local["tokens_all_chunks"] > 0
    tokens_row = next(ln for ln in result.output.splitlines() if "│ tokens" in ln)
    assert f"{local['tokens_all_chunks']:,}" in tokens_row
