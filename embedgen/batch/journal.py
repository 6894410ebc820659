"""The batch job journal: what was submitted, written down before it is submitted.

One JSON file per job in ``<cache dir>/batch-jobs/``, replaced atomically (temporary
file, fsync, rename, fsync of the directory) at every step of a job's life::

    preparing ──► uploaded ──► submitted ──► collected        (results in the cache)
                                   │    └──► failed            (the batch was refused)
                                   └──────► cancelled

A job is written as ``preparing`` (with its custom_id -> chunk keys map) before its file
is uploaded, and its file id and batch id are recorded as soon as they are known. So
after a kill, a reboot or Ctrl-C, a re-run finds every job: a ``submitted`` one is
polled, a ``preparing``/``uploaded`` one is looked up by its tag (``metadata.embedgen_job``)
and only created when the provider has no batch with that tag. Nothing is ever submitted
twice. A lock file (``journal.lock``) serialises runs that submit from the same cache.

Job files are only ever replaced whole, so one that cannot be read was damaged: it may
stand for a batch that runs (and is billed) at the provider, so reading the journal stops
with a :class:`~embedgen.errors.CacheError` naming the file rather than resubmitting its
inputs.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedgen.errors import CacheError

JOURNAL_DIR = "batch-jobs"
FINAL = frozenset({"collected", "failed", "cancelled"})
_KEEP_SECONDS = 30 * 24 * 3600
"""Finished jobs are listed by ``embedgen batches`` for 30 days, then forgotten."""


@dataclass
class Job:
    """One batch job: one uploaded file, one provider batch."""

    id: str
    provider: str
    kind: str
    model: str
    fingerprint: str
    """The provider's model fingerprint: whose cache keys these are."""
    requests: dict[str, list[str]]
    """custom_id -> hex cache keys of that request's inputs, in order."""
    request_tokens: dict[str, int]
    """custom_id -> tokens of that request (billed when the reply has no usage)."""
    tokens: int
    """Tokens of every input, as counted here (what was reserved)."""
    price: float
    """USD per 1M tokens at the batch price."""
    reserved: int = 0
    """Pico-dollars reserved in the budget ledger (0 when free or settled)."""
    state: str = "preparing"
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None
    """The provider's status, as last polled."""
    counts: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    billed_tokens: int = 0
    cost: int = 0
    """Pico-dollars billed, once collected."""
    failed: list[str] = field(default_factory=list)
    """Hex keys whose requests failed or never ran (resubmitted by the next pass)."""
    error: str | None = None
    """The first error the provider reported."""
    output: str | None = None
    """The output path of the run that submitted it (for ``embedgen batches``)."""

    @property
    def inputs(self) -> int:
        return sum(len(keys) for keys in self.requests.values())

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def to_json(self) -> str:
        return json.dumps({"version": 1, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Job:
        data = json.loads(raw)
        data.pop("version", None)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def new_job_id() -> str:
    return f"eg-{time.strftime('%Y%m%d')}-{uuid.uuid4().hex[:12]}"


class Journal:
    """The job files of one cache directory."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = Path(cache_dir) / JOURNAL_DIR

    # Reading --------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """Every job, oldest first; CacheError naming a job file that cannot be read."""
        if not self.dir.is_dir():
            return []
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(Job.from_json(path.read_text("utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not a job record"
                raise CacheError(
                    f"batch journal file {path} is damaged ({why}); its batch may still run "
                    f"at the provider (metadata embedgen_job={path.stem}): cancel or collect "
                    "it there, then delete the file and re-run"
                ) from None
        out.sort(key=lambda j: j.created)
        return out

    def get(self, job_id: str) -> Job | None:
        for job in self.jobs():
            if job.id == job_id or job.batch_id == job_id:
                return job
        return None

    def pending(self, fingerprint: str | None = None) -> list[Job]:
        return [j for j in self.jobs() if not j.final
                and (fingerprint is None or j.fingerprint == fingerprint)]  # fmt: skip

    # Writing --------------------------------------------------------------------------
    def save(self, job: Job) -> None:
        """Write ``job`` durably (the caller submits only after this returns)."""
        job.updated = time.time()
        from embedgen.util.atomic import atomic_write_text

        path = self.dir / f"{job.id}.json"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, job.to_json())
        except OSError as exc:
            raise CacheError(
                f"cannot write the batch journal {path}: {exc.strerror}; check the cache "
                "directory's permissions and free space (nothing was submitted)"
            ) from None

    def prune(self, now: float | None = None) -> int:
        """Forget finished jobs older than 30 days; how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        for job in self.jobs():
            if job.final and now - job.updated > _KEEP_SECONDS:
                with contextlib.suppress(OSError):
                    (self.dir / f"{job.id}.json").unlink()
                    removed += 1
        return removed

    @contextlib.contextmanager
    def locked(self, timeout: float = 3600.0) -> Iterator[None]:
        """Hold the journal's OS lock (one submitting run per cache at a time)."""
        from embedgen.util.locks import FileMutex

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with FileMutex(self.dir / "journal.lock").held(timeout):
                yield
        except TimeoutError:
            raise CacheError(
                f"the batch journal {self.dir} stayed locked by another run for "
                f"{timeout:g}s; wait for it or stop it"
            ) from None
        except OSError as exc:
            raise CacheError(f"cannot lock the batch journal: {exc.strerror}") from None


def failures(jobs: list[Job], fingerprint: str) -> dict[str, int]:
    """Hex key -> how many collected jobs of ``fingerprint`` failed it (a cancelled or
    refused batch is not the inputs' fault and does not count)."""
    out: dict[str, int] = {}
    for job in jobs:
        if job.state == "collected" and job.fingerprint == fingerprint:
            for key in job.failed:
                out[key] = out.get(key, 0) + 1
    return out


def summary(job: Job, now: float | None = None) -> dict[str, Any]:
    """One job as ``embedgen batches --json`` lists it."""
    now = time.time() if now is None else now
    return {
        "id": job.id,
        "batch_id": job.batch_id,
        "provider": job.provider,
        "model": job.model,
        "state": job.state,
        "status": job.status,
        "requests": len(job.requests),
        "inputs": job.inputs,
        "completed": job.counts.get("completed", 0),
        "failed": job.counts.get("failed", 0),
        "tokens": job.tokens,
        "billed_tokens": job.billed_tokens,
        "cost_pico": job.cost if job.state == "collected" else job.reserved,
        "age_seconds": round(now - job.created, 1),
        "error": job.error,
        "output": job.output,
    }
