"""Budget caps over real loopback servers: reserve, reconcile, fall back, stop; the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedgen.budget.caps import Budget, Caps
from embedgen.budget.ledger import Ledger, month_of
from embedgen.budget.prices import cost_pico, fmt_usd, pico_per_token, to_pico
from embedgen.errors import BudgetExceeded
from embedgen.router import Router
from tests.api_helpers import KEY, KEY_VARS_ALL, batch_of, provider
from tests.api_servers import ApiServer


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS_ALL:
        monkeypatch.setenv(var, KEY)


@pytest.fixture(scope="module")
def servers():
    with ApiServer("openai") as a, ApiServer("azure") as b:
        yield a, b


def _clear(*servers: ApiServer) -> None:
    for s in servers:
        with s.state.lock:
            s.state.records.clear()


def _billed(server: ApiServer) -> list[list[str]]:
    return [r.texts for r in server.records if r.status == 200 and r.fault is None]


# The property: caps hold, nothing lost or paid twice when the chain switches ---------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=24),
    price_a=st.sampled_from([0.02, 0.13, 1.0, 7.5, 25.0]),
    price_b=st.sampled_from([0.0, 0.02, 0.06, 3.0, 40.0]),
    cap_a=st.one_of(st.none(), st.integers(0, 3000)),
    cap_b=st.one_of(st.none(), st.integers(0, 3000)),
    run_cap=st.one_of(st.none(), st.integers(0, 4000)),
    workers=st.integers(1, 8),
)
def test_caps_hold_and_every_chunk_is_embedded_once(
    servers, sizes, price_a, price_b, cap_a, cap_b, run_cap, workers
) -> None:
    a_srv, b_srv = servers
    _clear(a_srv, b_srv)
    n = 0
    batches = []
    for size in sizes:
        batches.append([f"chunk {n + i} says {'word ' * ((n + i) % 7)}" for i in range(size)])
        n += size
    # caps in micro-dollars of the drawn integers: of the order of a few batches
    micro = 10**6
    caps = Caps(
        run=run_cap * micro if run_cap is not None else None,
        providers={k: v * micro for k, v in (("a", cap_a), ("b", cap_b)) if v is not None},
    )
    with tempfile.TemporaryDirectory() as tmp:
        budget = Budget(Ledger(Path(tmp) / "ledger.json"), caps)
        opts = {"max_concurrency": 8}
        a = provider("openai", a_srv, name="a", price_per_mtok=price_a, **opts)
        b = provider("azure", b_srv, name="b", price_per_mtok=price_b, **opts)
        guard = Router([a, b], spend=budget)

        def one(texts: list[str]) -> str:
            try:
                guard.embed(batch_of(guard, texts))
            except BudgetExceeded:
                return "stopped"
            return "ok"

        with ThreadPoolExecutor(workers) as pool:
            outcome = list(pool.map(one, batches))
        budget.close("test")
        state = Ledger(Path(tmp) / "ledger.json").read()

    billed_a, billed_b = _billed(a_srv), _billed(b_srv)
    sent = [t for req in billed_a + billed_b for t in req]
    ok_texts = [t for batch, o in zip(batches, outcome) if o == "ok" for t in batch]
    # every embedded chunk was paid exactly once; a stopped batch was never paid for
    assert sorted(sent) == sorted(ok_texts)
    count = a_srv.state.count_tokens
    spend_a = sum(cost_pico(count(t), price_a) for req in billed_a for t in req)
    spend_b = sum(cost_pico(count(t), price_b) for req in billed_b for t in req)
    assert budget.run_spent.get("a", 0) == spend_a
    assert budget.run_spent.get("b", 0) == spend_b
    assert state.month_spend(month_of()) == {k: v for k, v in (("a", spend_a), ("b", spend_b)) if v}
    assert state.reserved == {}
    if caps.run is not None:
        assert spend_a + spend_b <= caps.run
    for name, spend in (("a", spend_a), ("b", spend_b)):
        if name in caps.providers:
            assert spend <= caps.providers[name]
    # a batch stops the run only when no member could pay for it
    if "stopped" in outcome:
        assert budget.stop_reason is not None


def test_batch_moves_to_the_next_provider_when_the_first_is_out_of_budget(
    servers, tmp_path: Path
) -> None:
    a_srv, b_srv = servers
    _clear(a_srv, b_srv)
    texts = [f"text number {i} to embed" for i in range(40)]
    batches = [texts[i : i + 4] for i in range(0, 40, 4)]
    a = provider("openai", a_srv, name="a", price_per_mtok=10.0)
    b = provider("azure", b_srv, name="b", price_per_mtok=10.0)
    per_batch = cost_pico(batch_of(a, batches[0]).tokens, 10.0)
    caps = Caps(providers={"a": 3 * per_batch + per_batch // 2})
    budget = Budget(Ledger(tmp_path / "ledger.json"), caps)
    guard = Router([a, b], spend=budget)
    for batch in batches:
        guard.embed(batch_of(guard, batch))
    assert len(_billed(a_srv)) == 3
    assert len(_billed(b_srv)) == 7
    assert budget.run_spent["a"] <= caps.providers["a"]


def test_stop_message_says_what_was_spent(servers, tmp_path: Path) -> None:
    a_srv, _ = servers
    _clear(a_srv)
    a = provider("openai", a_srv, name="a", price_per_mtok=5.0)
    batch_cost = cost_pico(batch_of(a, ["one two three", "four five"]).tokens, 5.0)
    budget = Budget(Ledger(tmp_path / "l.json"), Caps(run=batch_cost * 2))
    guard = Router([a], spend=budget)
    guard.embed(batch_of(guard, ["one two three", "four five"]))
    guard.embed(batch_of(guard, ["one two three", "four six"]))
    with pytest.raises(BudgetExceeded) as info:
        guard.embed(batch_of(guard, ["seven eight nine", "ten"]))
    msg = str(info.value)
    assert info.value.exit_code == 3
    assert "run cap" in msg and fmt_usd(budget.run_total()) in msg and "re-run" in msg
    assert budget.run_total() <= batch_cost * 2
    # the run stays stopped: later batches are refused without a request
    before = len(a_srv.records)
    with pytest.raises(BudgetExceeded):
        guard.embed(batch_of(guard, ["x"]))
    assert len(a_srv.records) == before


def test_monthly_caps_count_earlier_runs_and_alerts_fire_once(
    servers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a_srv, _ = servers
    _clear(a_srv)
    path = tmp_path / "ledger.json"
    a = provider("openai", a_srv, name="a", price_per_mtok=50.0)
    one = cost_pico(batch_of(a, ["alpha beta gamma"]).tokens, 50.0)
    caps = Caps(monthly=one * 4, alert_at=(0.5, 0.8))
    first = Budget(Ledger(path), caps)
    g1 = Router([a], spend=first)
    with caplog.at_level("WARNING", logger="embedgen"):
        for _ in range(2):
            g1.embed(batch_of(g1, ["alpha beta gamma"]))
    first.close("finished")
    assert [r.message for r in caplog.records].count(
        f"budget: 50% of the monthly cap ({month_of()}) used ({fmt_usd(2 * one)} of "
        f"{fmt_usd(4 * one)})"
    ) == 1
    second = Budget(Ledger(path), caps)  # a later run of the same month
    g2 = Router([a], spend=second)
    g2.embed(batch_of(g2, ["alpha beta gamma"]))
    g2.embed(batch_of(g2, ["alpha beta gamma"]))
    with pytest.raises(BudgetExceeded, match="monthly cap"):
        g2.embed(batch_of(g2, ["alpha beta gamma"]))
    second.close("stopped")
    state = Ledger(path).read()
    assert state.month_spend(month_of()) == {"a": 4 * one}
    assert [r["status"] for r in state.runs] == ["finished", "stopped"]


def test_usage_reported_by_the_api_is_what_is_recorded(tmp_path: Path) -> None:
    # the server bills twice our count: the ledger follows the API's usage
    with ApiServer("openai", count_tokens=lambda t: 2 * len(t.split())) as srv:
        a = provider("openai", srv, name="a", price_per_mtok=1.0, tokenizer="estimate")
        budget = Budget(Ledger(tmp_path / "l.json"), Caps())
        guard = Router([a], spend=budget)
        guard.embed(batch_of(guard, ["one two three"]))
    assert budget.run_tokens == {"a": 6}
    assert budget.run_spent == {"a": cost_pico(6, 1.0)}


# The ledger -------------------------------------------------------------------------

_ADD = """
import sys
from pathlib import Path
from embedgen.budget.ledger import Ledger
ledger = Ledger(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    with ledger.update() as state:
        state.add_spend("2030-01", "p", 7)
"""


def test_concurrent_processes_and_threads_add_up(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    procs = [subprocess.Popen([sys.executable, "-c", _ADD, str(path), "100"]) for _ in range(3)]

    def threads_add() -> None:
        ledger = Ledger(path)  # its own lock object: only the file lock serialises
        for _ in range(100):
            with ledger.update() as state:
                state.add_spend("2030-01", "p", 7)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda _: threads_add(), range(3)))
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert Ledger(path).read().months == {"2030-01": {"p": 600 * 7}}
    assert not list(tmp_path.glob(".*.tmp"))


def test_reservations_of_a_dead_run_count_as_spent(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    import socket

    data = {
        "months": {},
        "runs": [],
        "reserved": {
            "gone": {
                "pid": int(dead.stdout),
                "host": socket.gethostname(),
                "updated": time.time(),
                "amounts": {"p": 123},
            },  # fmt: skip
            "alive": {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "updated": time.time(),
                "amounts": {"p": 5},
            },  # fmt: skip
        },
    }
    path.write_text(json.dumps(data))
    state = Ledger(path).read()
    assert state.month_spend(month_of()) == {"p": 123}
    assert list(state.reserved) == ["alive"] and state.in_flight() == {"p": 5}


def test_damaged_ledger_is_a_one_line_error(tmp_path: Path) -> None:
    from embedgen.errors import CacheError

    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    with pytest.raises(CacheError, match="damaged; fix or delete it"):
        Ledger(path).read()


def test_prices_are_exact_integers() -> None:
    assert pico_per_token(0.02) == 20_000
    assert cost_pico(1_000_000, 0.13) == to_pico(0.13)
    assert sum(cost_pico(1, 0.1) for _ in range(10)) == cost_pico(10, 0.1)
