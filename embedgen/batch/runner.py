"""Submitting cache misses as batch jobs, waiting for them, collecting them into the cache.

:class:`BatchRunner` is the whole life of batch mode for one provider:

1. **attach**: jobs of the journal that were written but not confirmed submitted are
   finished (an ``uploaded`` job is looked up by its tag, then created only if absent;
   a ``preparing`` one never reached ``create``, so it is dropped and its inputs go
   into the next file);
2. **submit**: the distinct misses not already in a pending job are packed into files;
   for each, the journal entry is written and the budget reserved (batch price)
   *before* the upload and the create;
3. **wait**: every pending job is polled with backoff and jitter until it ends (a
   failed poll is logged and retried later); a finished one is collected into the
   cache and settled; inputs that failed go back to step 2, at most ``max_retries``
   times each. With ``wait=False`` the runner returns :class:`BatchesPending` (exit 6)
   as soon as anything is pending.

When it returns, every miss is in the cache and the normal run writes the output.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embedgen.batch.client import TERMINAL
from embedgen.batch.collect import cleanup, collect
from embedgen.batch.journal import Job, Journal, failures, new_job_id
from embedgen.batch.pack import Item, Limits, Packed, pack
from embedgen.budget.prices import fmt_usd
from embedgen.errors import BatchesPending, BudgetExceeded, FatalProviderError, ProviderError

if TYPE_CHECKING:
    from embedgen.batch.client import BatchClient
    from embedgen.budget.pending import BatchSpend

log = logging.getLogger("embedgen")


@dataclass
class BatchOptions:
    wait: bool = True
    poll_interval: float = 10.0
    """Seconds before the first poll; it grows by half each quiet round."""
    poll_max: float = 300.0
    limits: Limits = Limits()
    output: str | None = None
    """The run's output path, recorded with each job."""


@dataclass
class BatchSummary:
    provider: str = ""
    submitted: int = 0
    """Jobs submitted by this run."""
    resubmitted_inputs: int = 0
    collected: int = 0
    vectors: int = 0
    billed_tokens: int = 0
    cost: int = 0
    polls_failed: int = 0

    def lines(self) -> list[str]:
        if not (self.submitted or self.collected):
            return []
        return [
            f"batches:   {self.provider}: {self.submitted:,} submitted, "
            f"{self.collected:,} collected ({self.vectors:,} vectors, "
            f"{self.billed_tokens:,} tokens billed, {fmt_usd(self.cost)} at the batch price)"
        ]


class BatchRunner:
    """Batch mode for one provider over one cache."""

    def __init__(
        self,
        client: BatchClient,
        cache: Any,
        journal: Journal,
        spend: BatchSpend | None,
        *,
        fingerprint: str,
        fp_id: bytes,
        dim: int,
        price: float,
        options: BatchOptions,
        notify: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.cache = cache
        self.journal = journal
        self.spend = spend
        self.fingerprint = fingerprint
        self.fp_id = fp_id
        self.dim = dim
        self.price = price
        self.opts = options
        self.notify = notify or log.info
        self._sleep = sleep
        self.name = client.name
        self.summary = BatchSummary(self.name)
        self._seen: dict[str, tuple[str | None, int, int]] = {}

    # The whole life -------------------------------------------------------------------
    def run(self, scan: Callable[[], Iterable[Item]]) -> BatchSummary:
        """Submit, wait and collect until every miss ``scan`` yields is in the cache."""
        self.summary = BatchSummary(self.name)
        rescan = True
        delay = self.opts.poll_interval
        fresh: set[str] = set()
        while True:
            if rescan:
                with self.journal.locked():
                    self.journal.prune()
                    fresh |= self._attach()
                    fresh |= self._submit(scan())
                rescan = False
            pending = [j for j in self.journal.pending(self.fingerprint) if j.state == "submitted"]
            if not pending:
                return self.summary
            if not self.opts.wait:
                pending = [j for j in pending if j.id not in fresh]
                if not pending:
                    raise self._pending_error()
            changed, failed = self._poll_round(pending)
            if failed:
                rescan = True
                delay = self.opts.poll_interval
                continue
            if not self.opts.wait:
                if any(not j.final for j in self.journal.pending(self.fingerprint)):
                    raise self._pending_error()
                continue
            delay = self.opts.poll_interval if changed else min(self.opts.poll_max, delay * 1.5)
            self._sleep(delay * (0.8 + 0.4 * random.random()))

    # Step 1: jobs written but not confirmed submitted ----------------------------------
    def _attach(self) -> set[str]:
        """Finish the submission of journalled jobs that have no batch id; their ids."""
        out: set[str] = set()
        for job in self.journal.pending(self.fingerprint):
            if job.state == "preparing":
                # ``create`` is only called once the file id is journalled: no batch exists
                self._drop_upload(job)
                if self.spend is not None:
                    self.spend.release(job.id)
                job.state, job.error = "cancelled", "interrupted before upload; resubmitted"
                job.failed, job.reserved = [], 0
                self.journal.save(job)
            elif job.state == "uploaded":
                found = self.client.find(job.id)
                if found is not None:
                    self._submitted(job, found)
                else:
                    self._create(job)
                out.add(job.id)
        return out

    def _drop_upload(self, job: Job) -> None:
        """Delete the file of a job killed between its upload and journalling the file id."""
        try:
            for file_id in self.client.files_named(f"{job.id}.jsonl"):
                self.client.delete_file(file_id)
        except ProviderError as exc:
            name = f"{job.id}.jsonl"
            log.warning(f"batch {job.id}: could not look for its uploaded file ({exc}); "
                        f"delete a file named {name} at {self.name} if there is one")  # fmt: skip

    # Step 2: misses into new jobs ------------------------------------------------------
    def _submit(self, items: Iterable[Item]) -> set[str]:
        jobs = self.journal.jobs()
        pending = {k for j in jobs if not j.final and j.fingerprint == self.fingerprint
                   for keys in j.requests.values() for k in keys}  # fmt: skip
        fails = failures(jobs, self.fingerprint)
        limit = self.client.cfg.max_retries
        exhausted: list[str] = []
        last_error = next((j.error for j in reversed(jobs) if j.error and j.failed), None)

        def todo() -> Iterator[Item]:
            seen: set[bytes] = set()
            for it in items:
                if it.key in seen:
                    continue
                seen.add(it.key)
                hex_key = it.key.hex()
                if hex_key in pending:
                    continue
                n = fails.get(hex_key, 0)
                if n > limit:
                    exhausted.append(hex_key)
                    continue
                if n:
                    self.summary.resubmitted_inputs += 1
                yield it

        out: set[str] = set()
        try:
            for packed in pack(todo(), self.opts.limits):
                out.add(self._new_job(packed))
        except BudgetExceeded as exc:
            waiting = len(self.journal.pending(self.fingerprint))
            if not waiting:
                raise
            raise BudgetExceeded(
                f"{exc}; the {waiting:,} batch jobs already submitted are collected by the next run"
            ) from None
        if exhausted:
            raise ProviderError(
                f"{self.name}: {len(exhausted):,} chunks failed in {limit + 1} batches each "
                f"(last error: {last_error or 'unknown'}); finished batches are cached, "
                "re-run to try again"
            )
        return out

    def _new_job(self, packed: Packed) -> str:
        requests = {f"r{i}": [it.key.hex() for it in req] for i, req in enumerate(packed.requests)}
        tokens = {f"r{i}": sum(it.tokens for it in req) for i, req in enumerate(packed.requests)}
        info = self.client.provider.info
        job = Job(
            id=new_job_id(), provider=self.name, kind=info.kind, model=info.model,
            fingerprint=self.fingerprint, requests=requests, request_tokens=tokens,
            tokens=packed.tokens, price=self.price, output=self.opts.output,
        )  # fmt: skip
        self.journal.save(job)
        if self.spend is not None:
            try:
                job.reserved = self.spend.reserve(job.id, self.name, job.tokens, self.price)
            except BaseException:
                job.state, job.error = "cancelled", "not submitted: over budget"
                self.journal.save(job)
                raise
            self.journal.save(job)
        data = b"".join(
            self.client.request_line(cid, [it.text for it in req])
            for cid, req in zip(requests, packed.requests)
        )
        job.input_file_id = self.client.upload(data, f"{job.id}.jsonl")
        job.state = "uploaded"
        self.journal.save(job)
        self._create(job)
        self.summary.submitted += 1
        self.notify(f"batch {job.id}: submitted {job.inputs:,} inputs in {len(requests):,} "
                    f"requests ({job.tokens:,} tokens) to {self.name}")  # fmt: skip
        return job.id

    def _create(self, job: Job) -> None:
        assert job.input_file_id is not None
        try:
            remote = self.client.create(job.input_file_id, job.id)
        except FatalProviderError as exc:
            self._abandon(job, str(exc))
            raise
        self._submitted(job, remote)

    def _submitted(self, job: Job, remote: dict[str, Any]) -> None:
        batch_id = remote.get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise ProviderError(f"{self.name}: the batch API answered without a batch id")
        job.batch_id, job.state = batch_id, "submitted"
        self._update(job, remote)
        self.journal.save(job)

    def _abandon(self, job: Job, error: str) -> None:
        if self.spend is not None:
            self.spend.release(job.id)
        job.state, job.error, job.reserved = "failed", error[:300], 0
        self.journal.save(job)
        cleanup(self.client, job)

    # Step 3: polling and collecting ----------------------------------------------------
    def _poll_round(self, jobs: list[Job]) -> tuple[bool, bool]:
        """Poll each job once, collect the finished; (anything changed, any failures)."""
        changed = failed = False
        for job in jobs:
            assert job.batch_id is not None
            try:
                remote = self.client.get(job.batch_id)
            except FatalProviderError:
                raise
            except ProviderError as exc:
                self.summary.polls_failed += 1
                log.warning(f"batch {job.id}: poll failed ({exc}); trying again later")
                continue
            if self._update(job, remote):
                changed = True
                self.journal.save(job)  # ``embedgen batches`` shows live status and counts
            if job.status in TERMINAL:
                changed = True
                failed |= self._finish(job, remote)
        return changed, failed

    def _update(self, job: Job, remote: dict[str, Any]) -> bool:
        status = remote.get("status")
        counts = remote.get("request_counts")
        job.status = str(status) if status else job.status
        if isinstance(counts, dict):
            job.counts = {k: int(v) for k, v in counts.items() if isinstance(v, int)}
        for name in ("output_file_id", "error_file_id"):
            value = remote.get(name)
            if isinstance(value, str) and value:
                setattr(job, name, value)
        key = (job.status, job.counts.get("completed", 0), job.counts.get("failed", 0))
        if self._seen.get(job.id) == key:
            return False
        self._seen[job.id] = key
        total = job.counts.get("total", len(job.requests))
        self.notify(f"batch {job.id} ({job.batch_id}): {job.status}, {key[1]:,}/{total:,} "
                    f"requests done, {key[2]:,} failed")  # fmt: skip
        return True

    def _finish(self, job: Job, remote: dict[str, Any]) -> bool:
        """Collect a job that ended; True when some of its inputs must be submitted again."""
        if job.status == "failed":
            errors = remote.get("errors")
            data = errors.get("data") if isinstance(errors, dict) else None
            first = data[0] if isinstance(data, list) and data else {}
            msg = first.get("message") if isinstance(first, dict) else None
            self._abandon(job, str(msg or "the batch failed"))
            raise ProviderError(
                f"{self.name}: batch {job.batch_id} failed: {job.error}; nothing was billed, "
                "fix the cause and re-run"
            )
        got = collect(self.client, job, self.cache, self.fp_id, self.dim)
        job.billed_tokens, job.failed, job.error = got.billed_tokens, got.failed, got.error
        if self.spend is not None:
            job.cost = self.spend.settle(job.id, self.name, got.billed_tokens, self.price)
        job.reserved = 0
        job.state = "cancelled" if job.status == "cancelled" else "collected"
        self.journal.save(job)
        cleanup(self.client, job)
        s = self.summary
        s.collected, s.vectors = s.collected + 1, s.vectors + got.vectors
        s.billed_tokens, s.cost = s.billed_tokens + got.billed_tokens, s.cost + job.cost
        self.notify(f"batch {job.id}: collected {got.vectors:,} vectors, {len(got.failed):,} "
                    f"inputs to resubmit, {fmt_usd(job.cost)}")  # fmt: skip
        if job.state == "cancelled":
            raise ProviderError(
                f"{self.name}: batch {job.batch_id} was cancelled; its finished requests are "
                "cached, re-run to submit the rest"
            )
        return bool(got.failed)

    def _pending_error(self) -> BatchesPending:
        jobs = [j for j in self.journal.pending(self.fingerprint)]
        inputs = sum(j.inputs for j in jobs)
        return BatchesPending(
            f"submitted: {len(jobs):,} batch jobs ({inputs:,} inputs) are pending at "
            f"{self.name}; run the same command again to collect them (no output was written)"
        )
