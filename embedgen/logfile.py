"""``--log-file``: a rotating, plain-text log of a run for unattended jobs.

Records of the ``embedgen`` logger go to the file with ISO 8601 timestamps and
without terminal escape codes, so a scheduled task's log reads cleanly in
Notepad. ``{date}`` (and ``{time}``) in the path are expanded when the run
starts, which gives one file per night without a wrapper script: a scheduled
task's action cannot compute a date itself, and ``%`` would need escaping in
crontab and systemd units.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
from datetime import datetime
from pathlib import Path

from embedgen.errors import UsageError

LOGGER_NAME = "embedgen"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5

_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: hyperlinks, titles
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return _ANSI.sub("", text)


def expand_log_path(pattern: str | Path, now: datetime | None = None) -> Path:
    """The log path for a run: ``{date}`` → ``YYYY-MM-DD``, ``{time}`` → ``HHMMSS``.

    Other text (including other braces) is kept as is; ``~`` is expanded.
    """
    now = now or datetime.now()
    text = str(pattern).replace("{date}", now.strftime("%Y-%m-%d"))
    text = text.replace("{time}", now.strftime("%H%M%S"))
    return Path(text).expanduser()


class PlainFormatter(logging.Formatter):
    """``2025-01-31T02:00:03.123+01:00 INFO    embedgen: message``, escape codes removed."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return (
            datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        )

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


def setup_log_file(
    path: str | Path,
    level: str | int = "INFO",
    *,
    max_bytes: int = MAX_BYTES,
    backup_count: int = BACKUP_COUNT,
) -> logging.Handler:
    """Attach a rotating file handler for ``path`` to the ``embedgen`` logger.

    ``path`` may hold ``{date}``/``{time}`` (see :func:`expand_log_path`); the
    folder is created. Undo with :func:`remove_log_file`.
    """
    target = expand_log_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            target, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
    except OSError as exc:
        raise UsageError(
            f"cannot open log file {target}: {exc.strerror or exc}; choose another --log-file"
        ) from None
    handler.setLevel(level if isinstance(level, int) else level.upper())
    handler.setFormatter(PlainFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    handler._embedgen_previous_level = logger.level  # type: ignore[attr-defined]
    if logger.level == logging.NOTSET or logger.level > handler.level:
        logger.setLevel(handler.level)
    logger.addHandler(handler)
    return handler


def remove_log_file(handler: logging.Handler) -> None:
    """Detach and close a handler from :func:`setup_log_file`, restoring the logger level."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.removeHandler(handler)
    handler.close()
    previous = getattr(handler, "_embedgen_previous_level", None)
    if previous is not None:
        logger.setLevel(previous)
