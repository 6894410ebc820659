"""``--log-file``: plain text, ISO timestamps, rotation, dated names."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from embedgen.errors import UsageError
from embedgen.logfile import expand_log_path, remove_log_file, setup_log_file, strip_ansi

_ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (INFO|WARNING|ERROR) ")


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("embedgen")
    level, handlers = log.level, list(log.handlers)
    yield log
    for h in list(log.handlers):
        if h not in handlers:
            log.removeHandler(h)
            h.close()
    log.setLevel(level)


def test_log_lines_have_iso_timestamps_and_no_ansi_codes(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "logs" / "run.log"
    handler = setup_log_file(path)
    logger.info("\x1b[1;32m12,000\x1b[0m documents, \x1b]8;;https://x\x07link\x1b]8;;\x07 done")
    logger.debug("not at INFO")
    try:
        raise ValueError("\x1b[31mred\x1b[0m failure")
    except ValueError:
        logger.exception("summary: failed")
    remove_log_file(handler)
    text = path.read_text("utf-8")
    assert "\x1b" not in text and "\x07" not in text
    assert "12,000 documents, link done" in text
    assert "not at INFO" not in text
    assert "ValueError: red failure" in text  # tracebacks are cleaned too
    lines = [ln for ln in text.splitlines() if _ISO_LINE.match(ln)]
    assert len(lines) == 2


def test_remove_log_file_detaches_and_restores_the_level(
    tmp_path: Path, logger: logging.Logger
) -> None:
    logger.setLevel(logging.WARNING)
    handler = setup_log_file(tmp_path / "a.log")
    assert logger.level == logging.INFO
    remove_log_file(handler)
    assert logger.level == logging.WARNING
    assert handler not in logger.handlers
    logger.warning("after removal")
    assert "after removal" not in (tmp_path / "a.log").read_text()


def test_log_file_rotates(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "logs" / "run.log"
    handler = setup_log_file(path, max_bytes=2000, backup_count=2)
    for i in range(200):
        logger.info("line %04d %s", i, "x" * 40)
    remove_log_file(handler)
    rotated = sorted(p.name for p in path.parent.iterdir())
    assert rotated == ["run.log", "run.log.1", "run.log.2"]
    assert all(p.stat().st_size <= 2000 for p in path.parent.iterdir())
    assert "line 0199" in path.read_text()


def test_expand_log_path_fills_in_the_date() -> None:
    when = datetime(2025, 3, 9, 2, 0, 7)
    assert expand_log_path("logs/embedgen-{date}.log", when) == Path("logs/embedgen-2025-03-09.log")
    assert expand_log_path("x-{date}_{time}.log", when) == Path("x-2025-03-09_020007.log")
    assert expand_log_path("plain{x}.log", when) == Path("plain{x}.log")


def test_setup_log_file_expands_the_pattern(tmp_path: Path, logger: logging.Logger) -> None:
    handler = setup_log_file(tmp_path / "embedgen-{date}.log")
    logger.info("hello")
    remove_log_file(handler)
    today = datetime.now().strftime("%Y-%m-%d")
    assert "hello" in (tmp_path / f"embedgen-{today}.log").read_text()


def test_unopenable_log_file_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot open log file"):
        setup_log_file(blocker / "run.log")


def test_strip_ansi_keeps_plain_text() -> None:
    assert strip_ansi("a\x1b[2K\x1b[1Gb [bold]c[/bold] ñ") == "ab [bold]c[/bold] ñ"


def test_run_log_file_has_the_summary_and_no_escape_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger: logging.Logger
) -> None:
    """End to end: `embedgen run --log-file` writes the closing summary as plain text."""
    from typer.testing import CliRunner

    from embedgen.cli import app

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "first document"}\n{"text": "second one"}\n')
    out = tmp_path / "out.parquet"
    pattern = tmp_path / "logs" / "embedgen-{date}.log"
    result = CliRunner().invoke(
        app, ["run", str(corpus), "-o", str(out), "--log-file", str(pattern)]
    )
    assert result.exit_code == 0, result.output
    (log_path,) = (tmp_path / "logs").iterdir()
    assert log_path.name == f"embedgen-{datetime.now():%Y-%m-%d}.log"
    text = log_path.read_text("utf-8")
    assert "\x1b" not in text
    assert "documents: 2" in text
    assert str(out) in text
    assert any(_ISO_LINE.match(ln) and "documents: 2" in ln for ln in text.splitlines())
