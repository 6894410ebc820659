"""The API key never shows: not in logs, errors, reprs, metadata, stats or fingerprints."""

from __future__ import annotations

import logging
import pickle

import pytest

from embedgen.errors import FatalProviderError, ProviderError
from embedgen.providers.chain import FallbackChain
from embedgen.redact import MASK, RedactingFilter, Secret, redact
from tests.api_helpers import KEY_VARS_ALL, batch_of, provider
from tests.api_servers import ApiServer

SECRET_KEY = "sk-proj-SUPERSECRET-abcdefghijklmnop0123"


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEY_VARS_ALL:
        monkeypatch.setenv(var, SECRET_KEY)


def test_secret_hides_its_value() -> None:
    s = Secret("sk-abcdef-123456")
    assert "sk-abcdef" not in repr(s) and "sk-abcdef" not in str(s) and f"{s}" == repr(s)
    assert s.reveal() == "sk-abcdef-123456"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    assert redact("key=sk-abcdef-123456 end") == f"key={MASK} end"
    assert redact("Authorization: Bearer whatever-token") == f"Authorization: Bearer {MASK}"


def test_redacting_filter_scrubs_records() -> None:
    Secret("sk-filter-test-0001")
    record = logging.LogRecord(
        "embedgen", logging.INFO, "x", 1, "sent %s", ("sk-filter-test-0001",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == f"sent {MASK}"


def test_key_is_nowhere_after_faults_and_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log at DEBUG too
    seen: list[str] = []
    with ApiServer("openai", key=SECRET_KEY) as s1, ApiServer("azure", key=SECRET_KEY) as s2:
        a = provider("openai", s1, max_retries=2, failure_threshold=100)
        b = provider("azure", s2, max_retries=2)
        chain = FallbackChain([a, b])
        s1.fail_next("500", "429", "reset", "malformed", "nan")
        chain.embed_batch(batch_of(chain, ["one"]))
        s1.state.down = "503"
        s2.state.down = "503"
        with pytest.raises(ProviderError) as failed:
            chain.embed_batch(batch_of(chain, ["two"]))
        seen += [str(failed.value), repr(failed.value)]
        s1.state.down = s2.state.down = None
        s1.state.key = "a-different-key-000000"  # the server echoes what it was sent
        with pytest.raises(FatalProviderError) as fatal:
            chain.embed_batch(batch_of(chain, ["three"]))
        seen += [str(fatal.value), repr(fatal.value), str(fatal.value.__context__)]
        assert "Incorrect API key provided" in str(fatal.value)
        for p in (a, b, chain):
            seen += [repr(p), repr(p.info), str(p.info.fingerprint), str(p.info.details)]
        seen += [repr(a.stats()), repr(b.stats()), repr(a.inner.cfg), repr(a.inner.__dict__)]
        seen.append(caplog.text)
        assert len(s1.records) > 5 and s1.records[0].headers["Authorization"].endswith(SECRET_KEY)
    blob = "\n".join(seen)
    assert SECRET_KEY not in blob
    assert SECRET_KEY[:16] not in blob
