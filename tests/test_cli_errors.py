"""How the command reports failure: one ``error:`` line per error, the same in the
``--log-file`` of a failed run, and help that shows no value after a flag."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedgen.cli import app
from tests.api_servers import ApiServer

runner = CliRunner()
KEY = "sk-log-test-KEY-0123456789abcdef"


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    log = logging.getLogger("embedgen")
    state = (log.level, list(log.handlers), log.propagate)
    yield
    for h in list(log.handlers):
        if h not in state[1]:
            log.removeHandler(h)
            h.close()
    log.setLevel(state[0])
    log.propagate = state[2]


def _embedgen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed command in a subprocess, piped (not a terminal)."""
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "embedgen", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


# -- defect 3: every error once, as `error: ...` ------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "show", "-c", "missing.toml"], "config file not found: missing.toml"),
        (["download", "no-such-model-xyz"], "unknown model 'no-such-model-xyz'"),
        (["budget", "reset"], "say what to reset"),
        (["run", "missing.parquet"], "input not found: missing.parquet"),
    ],
)
def test_every_command_prints_its_error_once(tmp_path: Path, args: list[str], message: str) -> None:
    out = _embedgen(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    matching = [ln for ln in lines if message in ln]
    assert len(matching) == 1 and matching[0].startswith("error: "), out.stderr
    assert out.stderr.count(message) == 1, out.stderr
    assert "Traceback" not in out.stderr


# -- defect 2: the log file of a failed run says why -----------------------------------


def _log_text(folder: Path) -> str:
    logs = list(folder.glob("*.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text("utf-8")


def test_log_file_records_bad_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not really parquet")
    logs = tmp_path / "logs"
    result = runner.invoke(app, ["run", str(bad), "-q", "--log-file", str(logs / "run-{date}.log")])
    assert result.exit_code == 1
    text = _log_text(logs)
    assert " ERROR " in text and "not a readable Parquet file" in text, text


def _api_config(path: Path, server: ApiServer) -> Path:
    path.write_text(
        '[run]\nproviders = ["openai"]\n'
        f'\n[providers.openai]\nkind = "openai"\nbase_url = "{server.url}/v1"\n'
        "dimensions = 8\ntimeout = 0.5\nmax_retries = 1\nbackoff_base = 0.001\n"
        "backoff_max = 0.01\nfailure_threshold = 2\nrecovery_timeout = 0.1\n",
        "utf-8",
    )
    return path


@pytest.mark.parametrize("failure", ["401", "down"])
def test_log_file_records_provider_failures(
    tmp_path: Path, write_parquet, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    src = write_parquet({"text": ["one document", "another document"]})
    logs = tmp_path / "logs"
    with ApiServer("openai", key=KEY if failure == "down" else "sk-another-key-999999") as s:
        if failure == "down":
            s.state.down = "503"
        cfg = _api_config(tmp_path / "api.toml", s)
        result = runner.invoke(
            app,
            ["run", str(src), "-c", str(cfg), "-q", "--log-file", str(logs / "run.log")],
        )
    assert result.exit_code != 0, result.output
    text = _log_text(logs)
    errors = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert errors, text
    assert ("HTTP 401" if failure == "401" else "HTTP 503") in errors[-1], text
    assert KEY not in text and "sk-another-key-999999" not in text


def test_log_file_records_config_errors(tmp_path: Path) -> None:
    """A bad config is logged too when --log-file is given on the command line."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[run]\nbatch_size = 'many'\n", "utf-8")
    logs = tmp_path / "logs"
    result = runner.invoke(
        app, ["run", "x.parquet", "-c", str(cfg), "--log-file", str(logs / "run.log")]
    )
    assert result.exit_code == 2
    assert "run.batch_size" in _log_text(logs)


# -- defect 12: flags take no value and help shows none ---------------------------------


def _all_commands() -> list[list[str]]:
    import typer

    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(cmd: object, prefix: list[str]) -> None:
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("words", _all_commands(), ids=lambda w: " ".join(w) or "embedgen")
def test_help_shows_no_value_after_flags(words: list[str]) -> None:
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--help" in result.output


def test_help_keeps_value_types_of_options_that_take_one() -> None:
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    flag_line = next(ln for ln in result.output.splitlines() if "--no-cache" in ln)
    value_line = next(ln for ln in result.output.splitlines() if "--batch-size" in ln)
    assert "<" not in flag_line.split("Neither")[0]
    assert "<int>" in value_line


# -- the command process skips the interpreter's teardown: what it wrote is complete -----


def test_the_command_ends_with_its_exit_code_and_everything_it_wrote(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    (tmp_path / "c.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    done = _embedgen("run", "c.jsonl", "--log-file", "ok.log", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "chunks:" in done.stderr and "chunks:" in (tmp_path / "ok.log").read_text("utf-8")
    assert pq.read_table(tmp_path / "c.embeddings.parquet").num_rows == 2
    assert not list(tmp_path.glob(".*tmp*")) and not list(tmp_path.glob("*.lock"))
    failed = _embedgen("run", "missing.parquet", "--log-file", "bad.log", cwd=tmp_path)
    assert failed.returncode == 2
    assert "input not found" in (tmp_path / "bad.log").read_text("utf-8")
    listed = _embedgen("models", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.endswith("\n") and len(listed.stdout) > 100
