"""A re-run with nothing to do: the output already holds what this run would write.

A local run into a Parquet file stamps the finished file's footer with a hash of what
decides its rows (embedgen's version, the resolved settings, the model's fingerprint, the
output path, and each input file's path, size and modification time, as ``make`` and
``rsync`` judge a file unchanged) and the run's counts. When a later run has the same
stamp, the file is already what it would write: the run says so and stops, in the time of
its start-up (a cached re-run of 20,000 texts would read, look up and rewrite every row).
The cache still records that the model was used, so ``cache prune --unused-since`` keeps
its vectors. Anything else (another setting, a touched input, a new embedgen, a sink, an
``s3://`` path, the skip list gone) runs as usual; so do ``--no-cache`` and
``rerun_unchanged = true`` under ``[run]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from embedgen.util import storage

STAMP = "embedgen.run_stamp"
COUNTS = "embedgen.run_counts"
_COUNTED = ("documents", "chunks", "tokens", "skipped", "cached", "computed", "duplicate")
_NOT_IN_ROWS = (
    "log_file", "cache_dir", "use_cache", "max_cost_usd", "batch_wait", "rerun_unchanged",
)  # fmt: skip
"""``[run]`` settings that never change the rows (a nightly task's dated log file among them)."""


def _settings(cfg: Any) -> str:
    settings = cfg.model_dump(mode="json")
    for name in _NOT_IN_ROWS:
        settings["run"].pop(name, None)
    return json.dumps(settings, sort_keys=True)


def run_stamp(spec: Any, fingerprint: str) -> str | None:
    """The stamp of a run over ``spec`` with a model of ``fingerprint``; None when the run
    cannot be judged unchanged (a sink, an object-store path, a missing input)."""
    from embedgen import __version__

    run = spec.cfg.run
    if spec.sink is not None or run.rerun_unchanged or not run.use_cache:
        return None  # --no-cache: compute everything, as asked
    if storage.is_remote(spec.output):
        return None
    parts = [__version__, fingerprint, _settings(spec.cfg), str(Path(spec.output).resolve())]
    files = [*spec.paths]
    if spec.cfg.run.calibration:
        files.append(spec.cfg.run.calibration)
    for path in files:
        if storage.is_remote(path):
            return None
        try:
            st = Path(path).stat()
        except OSError:
            return None
        parts.append(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.blake2b("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def stamped(stamp: str | None, counters: Any) -> dict[str, str]:
    """The footer entries of a finished output (none without a stamp)."""
    if stamp is None:
        return {}
    counts = {name: int(getattr(counters, name)) for name in _COUNTED}
    return {STAMP: stamp, COUNTS: json.dumps(counts, sort_keys=True)}


def finished_counts(spec: Any, stamp: str | None) -> dict[str, int] | None:
    """The counts of the run that wrote ``spec.output``, when its stamp is ``stamp`` and the
    file (and its skip list, if it had skips) is still whole; None otherwise."""
    output = Path(spec.output)
    if stamp is None or not output.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(output).metadata or {}
        if meta.get(STAMP.encode()) != stamp.encode():
            return None
        counts = {k: int(v) for k, v in json.loads(meta[COUNTS.encode()]).items()}
        if set(counts) != set(_COUNTED):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or foreign: the run writes it again
    if counts["skipped"] and not spec.skipped_path.is_file():
        return None
    return counts
