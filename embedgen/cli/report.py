"""``run --report FILE.json``: a machine-readable record of one run, for cron and scheduled tasks.

Written on success and on every failure (bad config, budget stop, Ctrl-C...), atomically, so
a monitor never reads half a report. Its schema is ``embedgen/data/report.schema.json``,
described in ``docs/report.md``. ``{date}`` and ``{time}`` in the path expand as in
``--log-file``; ``--keep-reports N`` then removes all but the newest N reports of that pattern.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = "embedgen-run-report/1"
STATUS = {
    0: "finished",
    1: "failed",
    2: "usage error",
    3: "stopped on budget",
    4: "finished with skipped documents",
    5: "locked",
    6: "batches pending",
    130: "interrupted",
}
"""The report's ``status`` for each exit code."""

log = logging.getLogger("embedgen")


@dataclass
class RunReport:
    """Where the report goes, and what is known of the run before it ends."""

    pattern: str
    keep: int | None = None
    input: str = ""
    output: str | None = None
    cache_dir: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    clock: float = field(default_factory=time.perf_counter)

    written: Path | None = None

    def failed(self, exc: BaseException) -> None:
        """Write the report of a run that ``exc`` ended (unless one was written already)."""
        if self.written is not None:
            return
        if isinstance(exc, KeyboardInterrupt):
            kept = str(getattr(exc, "kept", "") or "")  # what the run kept (errors.Kept)
            note = f" ({kept})" if kept else ""
            code, message = 130, f"interrupted{note}"
        else:
            found = getattr(exc, "exit_code", None)  # EmbedgenError; click's usage errors
            code = found if isinstance(found, int) else 1
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        try:
            self.write(exit_code=code, message=message)
        except Exception as err:  # never hide the run's own error behind the report's
            log.warning(f"report: cannot write {self.pattern} ({err})")

    def write(self, *, exit_code: int, message: str | None = None, summary: Any = None) -> Path:
        """Write the report of a run that ended with ``exit_code`` (and ``summary``, if any)."""
        from embedgen.logfile import expand_log_path
        from embedgen.redact import redact
        from embedgen.util.atomic import atomic_write_text

        output = str(summary.output) if summary is not None else self._output()
        data = {
            "schema": SCHEMA,
            "embedgen": _version(),
            "status": STATUS.get(exit_code, "failed"),
            "exit_code": exit_code,
            "message": redact(message) if message else None,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self.clock, 3),
            "input": self.input,
            "output": output if exit_code in (0, 4) else None,
            "counts": _counts(summary),
            "model": summary.model if summary is not None else None,
            "spent_usd": self._spent(),
            "kept": _kept(output, summary, exit_code),
        }
        path = expand_log_path(self.pattern, self.started.astimezone())
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
        self.written = path
        if self.keep is not None:
            prune_reports(self.pattern, self.keep)
        return path

    def _output(self) -> str | None:
        """The output path, the default one when none was given (None: the input is bad)."""
        if self.output is not None:
            return self.output
        from embedgen.pipeline.read import discover_inputs
        from embedgen.pipeline.spec import default_output

        try:
            return str(default_output(discover_inputs(self.input), self.input))
        except Exception:
            return None

    def _spent(self) -> float:
        """What the budget ledger recorded for runs of this host since the report started."""
        from embedgen.budget.ledger import Ledger, ledger_path
        from embedgen.budget.prices import usd

        try:
            path = ledger_path(self.cache_dir)
            if not path.exists():
                return 0.0
            runs = Ledger(path).read().runs
        except Exception as exc:  # the report must be written even if the ledger is unreadable
            log.warning(f"report: cannot read the budget ledger ({exc})")
            return 0.0
        since = self.started.replace(microsecond=0).isoformat(timespec="seconds")
        host = socket.gethostname() + "-"
        total = sum(
            int(v)
            for r in runs
            if str(r.get("id", "")).startswith(host) and str(r.get("started", "")) >= since
            for v in (r.get("spend") or {}).values()
        )
        return usd(total)


def _counts(summary: Any) -> dict[str, int] | None:
    if summary is None:
        return None
    names = ("documents", "chunks", "tokens", "skipped", "cached", "computed", "duplicate")
    return {n: int(getattr(summary, n)) for n in names}


def _kept(output: str | None, summary: Any, exit_code: int) -> dict[str, Any]:
    """What a run left beside its output: the partial file and its rows, the skip list."""
    partial = rows = None
    if output and exit_code not in (0, 4):
        from embedgen.pipeline.write import partial_path

        candidate = partial_path(Path(output))
        if candidate.is_file():
            partial, rows = str(candidate), _rows(candidate)
    skipped = summary.skipped_path if summary is not None else None
    return {
        "partial": partial,
        "partial_rows": rows,
        "skipped_list": str(skipped) if skipped else None,
    }


def _rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:
        return None


def _version() -> str:
    from embedgen import __version__

    return __version__


def prune_reports(pattern: str, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` files named by ``pattern`` (``{date}``, ``{time}``)."""
    path = Path(pattern)
    if "{date}" not in path.name and "{time}" not in path.name:
        return []
    rx = re.escape(path.name).replace(r"\{date\}", r"\d{4}-\d{2}-\d{2}")
    rx = rx.replace(r"\{time\}", r"\d{6}")
    found = sorted(
        (p for p in path.parent.iterdir() if re.fullmatch(rx, p.name)),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    old = found[: max(len(found) - keep, 0)]
    for p in old:
        p.unlink(missing_ok=True)
    return old
