"""Batch mode's core against a loopback Files + Batches server: submit, wait, collect.

These drive :class:`embedgen.batch.runner.BatchRunner` with explicit cache misses;
``tests/test_batch_api_run.py`` runs the whole command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from pydantic import Field, TypeAdapter
from typer.testing import CliRunner

from embedgen.batch.client import BatchClient
from embedgen.batch.journal import Journal, summary
from embedgen.batch.pack import Item, Limits, pack
from embedgen.batch.runner import BatchOptions, BatchRunner
from embedgen.budget.caps import Caps
from embedgen.budget.ledger import Ledger, month_of
from embedgen.budget.pending import BatchSpend
from embedgen.budget.prices import cost_pico, to_pico
from embedgen.cache import VectorCache, cache_key, fingerprint_id
from embedgen.cli import app
from embedgen.config import ApiConfig
from embedgen.errors import (
    BatchesPending,
    BudgetExceeded,
    CacheError,
    FatalProviderError,
    ProviderError,
)
from embedgen.redact import Secret
from tests.api_servers import vector_for
from tests.batch_server import KEY, BatchServer

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Annotated[ApiConfig, Field(discriminator="kind")])
FAST = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.001, "backoff_max": 0.01}
PRICE = 1000.0  # USD per 1M tokens at the batch price: small corpora cost dollars


def config(server: BatchServer, kind: str = "openai", **over: Any) -> Any:
    base: dict[str, Any] = {"base_url": server.url + "/v1"}
    if kind == "azure":
        base = {"base_url": server.url, "deployment": server.state.deployment}
    return _ADAPTER.validate_python(
        {"kind": kind, "mode": "batch", "dimensions": 8, **FAST, **base, **over}
    )


class Harness:
    """A runner over a private cache, with the misses of ``texts`` as its scan."""

    def __init__(self, server: BatchServer, cache_dir: Path, texts: list[str], **kw: Any):
        kind = kw.pop("kind", "openai")
        key = kw.pop("key", KEY)
        self.cfg = config(server, kind, **kw.pop("cfg", {}))
        self.client = BatchClient(kind, self.cfg, Secret(key), sleep=lambda s: None)
        info = self.client.provider.info
        self.fp = fingerprint_id(info.fingerprint)
        self.cache = VectorCache.open(cache_dir)
        self.cache.register_model(self.fp, info.fingerprint, info.model, info.dim, "float32")
        self.spend = kw.pop("spend", None)
        self.texts = texts
        self.items = [Item(cache_key(self.fp, t), t, server.state.count(t)) for t in texts]
        limits = kw.pop("limits", Limits(request_inputs=16, file_inputs=400))
        self.runner = BatchRunner(
            self.client, self.cache, Journal(cache_dir), self.spend,
            fingerprint=info.fingerprint, fp_id=self.fp, dim=8, price=PRICE,
            options=BatchOptions(wait=kw.pop("wait", True), poll_interval=0.001,
                                 poll_max=0.002, limits=limits),
            sleep=lambda s: None,
        )  # fmt: skip
        assert not kw, kw

    def scan(self) -> list[Item]:
        hits = self.cache.get_many(self.fp, [it.key for it in self.items])
        return [it for it, hit in zip(self.items, hits) if hit is None]

    def run(self) -> Any:
        return self.runner.run(self.scan)

    def vectors(self) -> list[np.ndarray | None]:
        return self.cache.get_many(self.fp, [it.key for it in self.items])

    def close(self) -> None:
        self.client.close()
        self.cache.close()


def texts_of(n: int) -> list[str]:
    return [f"row {i} says {'more ' * (i % 5)}about topic {i % 97}" for i in range(n)]


def expected_ok(h: Harness, server: BatchServer) -> None:
    got = h.vectors()
    assert all(v is not None for v in got)
    want = np.stack([vector_for(t, 8, server.state.model) for t in h.texts])
    np.testing.assert_allclose(np.stack(got), want, rtol=1e-6)  # type: ignore[arg-type]


@pytest.fixture
def cache_dir(isolated_env: Path) -> Path:
    return isolated_env / "cache"


def test_failed_requests_and_polls_are_survived_and_resubmitted_once(cache_dir: Path) -> None:
    texts = texts_of(3000)
    with BatchServer(fail_rate=0.05, poll_fail_rate=0.1) as server:
        h = Harness(server, cache_dir, texts)
        summary = h.run()
        expected_ok(h, server)
        assert server.state.embedded and max(server.state.embedded.values()) == 1
        assert summary.vectors == len(set(texts))
        assert summary.resubmitted_inputs > 0
        assert server.calls["poll_failed"] > 0
        assert server.live_files() == []  # inputs and results deleted once collected
        assert all(j.state == "collected" for j in Journal(cache_dir).jobs())
        h.close()


def test_a_repeated_run_submits_nothing(cache_dir: Path) -> None:
    with BatchServer() as server:
        h = Harness(server, cache_dir, texts_of(50))
        h.run()
        creates = server.calls["create"]
        assert h.run().submitted == 0
        assert server.calls["create"] == creates
        h.close()


def test_validation_failure_stops_with_the_providers_message_and_bills_nothing(
    cache_dir: Path,
) -> None:
    with BatchServer(validation_error="line 1: input is too long") as server:
        spend = BatchSpend(Ledger(cache_dir / "budget-ledger.json"), Caps())
        h = Harness(server, cache_dir, texts_of(20), spend=spend)
        with pytest.raises(ProviderError, match="input is too long"):
            h.run()
        (job,) = Journal(cache_dir).jobs()
        assert job.state == "failed" and job.reserved == 0
        state = Ledger(cache_dir / "budget-ledger.json").read()
        assert state.in_flight() == {} and state.month_spend(month_of()) == {}
        assert server.live_files() == []
        h.close()


def test_an_expired_batch_keeps_its_partial_results_and_resubmits_the_rest(
    cache_dir: Path,
) -> None:
    with BatchServer(expire=1, partial=0.5) as server:
        h = Harness(server, cache_dir, texts_of(64), limits=Limits(request_inputs=8))
        h.run()
        expected_ok(h, server)
        jobs = Journal(cache_dir).jobs()
        assert [j.status for j in jobs] == ["expired", "completed"]
        assert len(jobs[1].requests) == len(jobs[0].requests) // 2
        assert max(server.state.embedded.values()) == 1
        h.close()


def test_a_cancelled_batch_stops_the_wait_and_a_rerun_submits_only_the_rest(
    cache_dir: Path,
) -> None:
    with BatchServer(cancel_at_end=1, partial=0.25) as server:
        h = Harness(server, cache_dir, texts_of(64), limits=Limits(request_inputs=8))
        with pytest.raises(ProviderError, match="cancelled"):
            h.run()
        assert sum(v is not None for v in h.vectors()) == 16
        h.run()
        expected_ok(h, server)
        assert server.calls["create"] == 2
        assert max(server.state.embedded.values()) == 1
        h.close()


def test_no_wait_exits_pending_and_the_next_run_collects_without_resubmitting(
    cache_dir: Path,
) -> None:
    with BatchServer(polls_to_start=2) as server:
        h = Harness(server, cache_dir, texts_of(100), wait=False)
        with pytest.raises(BatchesPending) as err:
            h.run()
        assert err.value.exit_code == 6 and "run the same command again" in str(err.value)
        assert server.calls["create"] == 1 and server.calls["poll"] == 0
        h.close()
        again = Harness(server, cache_dir, texts_of(100))
        again.run()
        expected_ok(again, server)
        assert server.calls["create"] == 1
        again.close()


def test_a_job_interrupted_after_upload_is_found_by_its_tag_not_created_again(
    cache_dir: Path,
) -> None:
    with BatchServer() as server:
        h = Harness(server, cache_dir, texts_of(30))
        # the process dies right after ``create`` reached the server, before journalling
        journal = Journal(cache_dir)
        real_create = h.client.create

        def create_then_die(file_id: str, job_id: str) -> dict[str, Any]:
            real_create(file_id, job_id)
            raise KeyboardInterrupt

        h.client.create = create_then_die  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            h.run()
        (job,) = journal.jobs()
        assert job.state == "uploaded" and job.batch_id is None
        h.close()
        again = Harness(server, cache_dir, texts_of(30))
        again.run()
        expected_ok(again, server)
        assert server.calls["create"] == 1 and server.calls["list"] >= 1
        again.close()


def test_a_job_interrupted_before_upload_is_dropped_and_its_inputs_resubmitted(
    cache_dir: Path,
) -> None:
    with BatchServer() as server:
        h = Harness(server, cache_dir, texts_of(30))
        h.client.upload = lambda data, name: (_ for _ in ()).throw(KeyboardInterrupt)  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            h.run()
        assert [j.state for j in Journal(cache_dir).jobs()] == ["preparing"]
        h.close()
        again = Harness(server, cache_dir, texts_of(30))
        again.run()
        expected_ok(again, server)
        states = sorted(j.state for j in Journal(cache_dir).jobs())
        assert states == ["cancelled", "collected"] and server.calls["create"] == 1
        again.close()


def test_a_kill_between_upload_and_journalling_leaves_no_file_and_no_cost(
    cache_dir: Path,
) -> None:
    """The file reached the provider but its id never reached the journal: the next run
    deletes it (found by name), and the job, cancelled before its batch, shows no cost."""
    ledger = Ledger(cache_dir / "budget-ledger.json")
    with BatchServer() as server:
        h = Harness(server, cache_dir, texts_of(30), spend=BatchSpend(ledger, Caps()))
        save = h.runner.journal.save

        def die_when_uploaded(job: Any) -> None:
            if job.state == "uploaded":
                raise KeyboardInterrupt
            save(job)

        h.runner.journal.save = die_when_uploaded  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            h.run()
        (orphan,) = server.live_files()
        assert [j.state for j in Journal(cache_dir).jobs()] == ["preparing"]
        h.close()
        again = Harness(server, cache_dir, texts_of(30), spend=BatchSpend(ledger, Caps()))
        again.run()
        expected_ok(again, server)
        assert orphan in server.state.deleted and server.live_files() == []
        assert server.calls["create"] == 1
        jobs = {j.state: summary(j) for j in Journal(cache_dir).jobs()}
        assert jobs["cancelled"]["cost_pico"] == 0 and jobs["collected"]["cost_pico"] > 0
        assert ledger.read().in_flight() == {}
        again.close()


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_damaged_journal_file_stops_the_run_naming_it(cache_dir: Path, damage: str) -> None:
    """Today's batch stays the only one: no new upload or create for the same inputs."""
    with BatchServer(polls_to_start=5) as server:
        h = Harness(server, cache_dir, texts_of(60), wait=False)
        with pytest.raises(BatchesPending):
            h.run()
        h.close()
        (path,) = (cache_dir / "batch-jobs").glob("eg-*.json")
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"")
        again = Harness(server, cache_dir, texts_of(60))
        with pytest.raises(CacheError) as err:
            again.run()
        assert str(path) in str(err.value) and f"embedgen_job={path.stem}" in str(err.value)
        assert "\n" not in str(err.value) and err.value.exit_code == 1
        assert (server.calls["upload"], server.calls["create"]) == (1, 1)
        again.close()
        listed = CliRunner().invoke(app, ["batches", "--cache-dir", str(cache_dir)])
        assert listed.exit_code == 1 and str(path) in listed.output


def test_the_ledger_records_the_batch_price_of_exactly_the_billed_tokens(
    cache_dir: Path,
) -> None:
    ledger = Ledger(cache_dir / "budget-ledger.json")
    with BatchServer(fail_rate=0.1, polls_to_start=1) as server:
        h = Harness(server, cache_dir, texts_of(200), spend=BatchSpend(ledger, Caps()), wait=False)
        with pytest.raises(BatchesPending):
            h.run()
        reserved = ledger.read().in_flight()["openai"]
        assert reserved == cost_pico(sum(it.tokens for it in h.items), PRICE)
        h.close()
        # collected by another process: the reservation outlives the one that made it
        again = Harness(server, cache_dir, texts_of(200), spend=BatchSpend(ledger, Caps()))
        again.run()
        state = ledger.read()
        assert state.in_flight() == {}
        assert state.month_spend(month_of()) == {
            "openai": cost_pico(server.state.billed_tokens, PRICE)
        }
        assert server.state.billed_tokens == sum(it.tokens for it in again.items)
        again.close()


def test_a_batch_over_the_cap_is_not_submitted(cache_dir: Path) -> None:
    ledger = Ledger(cache_dir / "budget-ledger.json")
    with BatchServer() as server:
        spend = BatchSpend(ledger, Caps(run=to_pico(0.0001)))
        h = Harness(server, cache_dir, texts_of(50), spend=spend)
        with pytest.raises(BudgetExceeded, match="batch price"):
            h.run()
        assert server.calls["upload"] == 0 and ledger.read().in_flight() == {}
        h.close()


def test_a_wrong_key_fails_at_once_and_never_shows_the_key(cache_dir: Path) -> None:
    wrong = "sk-wrong-key-abcdef0123456789"
    with BatchServer() as server:
        h = Harness(server, cache_dir, texts_of(5), key=wrong)
        with pytest.raises(FatalProviderError) as err:
            h.run()
        assert "HTTP 401" in str(err.value) and wrong not in str(err.value)
        assert "OPENAI_API_KEY" in str(err.value)
        assert server.calls["upload"] == 0
        h.close()


def test_azure_routes_and_deployment(cache_dir: Path) -> None:
    with BatchServer("azure", fail_rate=0.05) as server:
        h = Harness(server, cache_dir, texts_of(120), kind="azure")
        h.run()
        expected_ok(h, server)
        h.close()


def test_packing_respects_every_limit() -> None:
    items = [
        Item(bytes([i % 256, i // 256]) * 16, "x" * (i % 7 + 1), i % 9 + 1) for i in range(1000)
    ]
    limits = Limits(request_inputs=10, request_tokens=40, file_requests=7, file_inputs=50,
                    file_bytes=4000)  # fmt: skip
    files = list(pack(items, limits))
    assert [it for f in files for r in f.requests for it in r] == items
    for f in files:
        assert len(f.requests) <= 7 and f.inputs <= 50 and f.bytes <= 4000
        for r in f.requests:
            assert 0 < len(r) <= 10 and sum(it.tokens for it in r) <= 40


@pytest.mark.parametrize("kind", ["voyage", "mistral", "cohere", "openai_compatible"])
def test_batch_mode_without_a_batch_api_is_a_config_error(kind: str) -> None:
    from embedgen.config import validate
    from embedgen.errors import ConfigError

    table: dict[str, Any] = {"kind": kind, "mode": "batch", "dim": 8}
    if kind == "openai_compatible":
        table.update(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ConfigError, match="batch"):
        validate({"providers": {"p": table}})


def test_only_the_first_provider_may_use_batch_mode() -> None:
    from embedgen.batch.prepass import batch_member
    from embedgen.config import validate
    from embedgen.errors import ConfigError

    table = {"kind": "openai", "mode": "batch", "dimensions": 8}
    cfg = validate({"run": {"providers": ["a", "b"]},
                    "providers": {"a": {"kind": "openai"}, "b": table}})  # fmt: skip
    with pytest.raises(ConfigError, match="first provider"):
        batch_member(cfg)


def test_finished_jobs_are_forgotten_after_30_days(cache_dir: Path) -> None:
    from embedgen.batch.journal import Job

    journal = Journal(cache_dir)
    old = Job(id="eg-old", provider="openai", kind="openai", model="m", fingerprint="f",
              requests={}, request_tokens={}, tokens=0, price=0.0, state="collected")  # fmt: skip
    journal.save(old)
    pending = Job(id="eg-pending", provider="openai", kind="openai", model="m",
                  fingerprint="f", requests={}, request_tokens={}, tokens=0, price=0.0,
                  state="submitted")  # fmt: skip
    journal.save(pending)
    assert journal.prune(now=old.updated + 29 * 86400) == 0
    assert journal.prune(now=old.updated + 31 * 86400) == 1
    assert [j.id for j in journal.jobs()] == ["eg-pending"]
