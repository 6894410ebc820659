"""The embedgen exception tree and its exit codes.

::

    EmbedgenError                 exit 1   something failed; finished work is kept
    ├── UsageError                exit 2   bad command line, config or input selection
    │   ├── ConfigError                    a config key has a bad value (names the key path)
    │   │   └── DimensionMismatch          an API returns vectors of another size than set
    │   ├── InputError                     missing file, unknown format, missing column
    │   ├── DeviceUnavailableError         the asked-for device is not usable
    │   ├── EngineUnavailableError         the asked-for engine is not installed or cannot start
    │   └── SinkMismatchError              the sink table holds another model's rows or columns
    ├── DataError                 exit 1   malformed input data (bad JSONL line, corrupt Parquet)
    ├── ModelError                exit 1   missing or corrupt model files, failed download
    │   └── FidelityFloorError             no optimized variant met the fidelity floor
    ├── CacheError                exit 1   the cache cannot be opened or written
    ├── WorkerLost                exit 1   a Ray worker died more often than Ray restarts it
    ├── SinkError                 exit 1   a vector store cannot be reached or written
    ├── ProviderError             exit 1   a provider failed (the API's message, key redacted)
    │   ├── FatalProviderError             a failure retrying cannot fix (400/401/403/404/422)
    │   ├── TransientProviderError         a failed request a retry may fix (429, 5xx, timeout)
    │   ├── BreakerOpenError               the provider's circuit breaker is open
    │   └── OverBudget                     this provider's budget does not cover the batch
    ├── BudgetExceeded            exit 3   no provider's budget covers the remaining work
    ├── SkippedDocuments          exit 4   finished, but some documents were skipped
    ├── MissingColumns            exit 4   finished, but a model slot failed (--allow-missing)
    ├── LockHeld                  exit 5   another run holds the output lock
    └── BatchesPending            exit 6   batches submitted; run the same command to collect

Every error carries a one-line message that says what went wrong and what to do. A run
that fails attaches what it kept (:class:`Kept`) as ``exc.kept``: structured data, which
the message shows in parentheses, never text re-parsed from the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Kept:
    """What a failed run kept, and how to go on from it (any engine).

    ``committed`` is None where the engine cannot count the cached chunks (Ray's driver).
    """

    partial: Path | None = None
    """The rows written so far, kept as ``<stem>.partial.parquet``."""
    committed: int | None = None
    """Embedded chunks committed to the cache by this run."""
    cache: str | None = None
    """Where the cache is."""

    @property
    def says_rerun(self) -> bool:
        """The note ends by saying to re-run (only cached chunks were kept, no rows)."""
        return self.partial is None and bool(self.committed)

    def __str__(self) -> str:
        if self.committed is None:
            return f"rows written so far are in {self.partial}" if self.partial else ""
        done = self.committed
        where = f"{done:,} embedded chunks are in the cache at {self.cache}" if done else ""
        if self.partial is not None:
            note = f"rows written so far are in {self.partial}"
            return note + (f"; {where}" if where else "")
        if self.says_rerun:
            return f"no rows were written yet; {where}: re-run the same command to go on"
        return "nothing was embedded yet"


class EmbedgenError(Exception):
    """Base of every error embedgen reports to the user."""

    exit_code = 1
    warning = False
    """True: the command did its work, and the message is printed as ``warning: ...``."""
    kept: Kept | None = None
    """What the failed run kept (set by the run, shown after the message)."""

    def __str__(self) -> str:
        text = super().__str__()
        note = str(self.kept) if self.kept is not None else ""
        return f"{text} ({note})" if note else text


class UsageError(EmbedgenError):
    exit_code = 2


class ConfigError(UsageError):
    pass


class DimensionMismatch(ConfigError):
    """An API returned vectors of one other size than configured: a setting, never retried."""

    def __init__(self, message: str, *, got: int, expected: int) -> None:
        super().__init__(message)
        self.got = got
        self.expected = expected


class InputError(UsageError):
    pass


class DeviceUnavailableError(UsageError):
    pass


class EngineUnavailableError(UsageError):
    """``--engine ray`` without the ``ray`` extra, or a Ray cluster that cannot be reached."""


class SinkMismatchError(UsageError):
    """The sink table was written by another model, dimension or set of columns."""


class DataError(EmbedgenError):
    pass


class ModelError(EmbedgenError):
    pass


class FidelityFloorError(ModelError):
    """``embedgen optimize``: no variant met the floor (the message names the best reached)."""


class CacheError(EmbedgenError):
    pass


class WorkerLost(EmbedgenError):
    """A Ray embedding worker died after its last restart (killed, out of memory, crashed)."""


class SinkError(EmbedgenError):
    """A vector store (LanceDB, PostgreSQL) cannot be reached, read or written."""


class ProviderError(EmbedgenError):
    pass


class FatalProviderError(ProviderError):
    """A provider answered with an error that retrying cannot fix."""


class TransientProviderError(ProviderError):
    """A failed request that a retry may fix (rate limit, 5xx, timeout, bad body).

    ``retry_after`` is the wait the server asked for, ``status`` the HTTP status (None for
    a timeout or a broken connection), ``rate_limits`` the reply's parsed ``x-ratelimit-*``
    headers, if any. The message must already be redacted by whoever raises it.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        rate_limits: object | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.rate_limits = rate_limits


class BreakerOpenError(ProviderError):
    """The provider's circuit breaker is open: it is not being called for a while."""


class OverBudget(ProviderError):
    """This provider's remaining budget does not cover the batch (the router tries the next)."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class BudgetExceeded(EmbedgenError):
    exit_code = 3


class SkippedDocuments(EmbedgenError):
    """The run finished; some documents were skipped. A warning, not an error."""

    exit_code = 4
    warning = True


class MissingColumns(EmbedgenError):
    """A run with several model slots finished, but a slot failed: its columns are null.
    A warning: the output is written."""

    exit_code = 4
    warning = True


class LockHeld(EmbedgenError):
    exit_code = 5


class BatchesPending(EmbedgenError):
    """Batch jobs were submitted (``--no-wait``) or are still running; re-run to collect."""

    exit_code = 6


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_SKIPPED = 4
EXIT_LOCKED = 5
EXIT_PENDING = 6
