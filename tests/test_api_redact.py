"""The API key never shows: not in logs, errors, reprs, metadata, stats or fingerprints."""

from __future__ import annotations

import logging
import pickle

import pytest

from embedgen.errors import FatalProviderError, ProviderError
from embedgen.redact import MASK, RedactingFilter, Secret, redact
from embedgen.router import Router
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
        chain = Router([a, b])
        s1.fail_next("500", "429", "reset", "malformed", "nan")
        chain.embed(batch_of(chain, ["one"]))
        s1.state.down = "503"
        s2.state.down = "503"
        with pytest.raises(ProviderError) as failed:
            chain.embed(batch_of(chain, ["two"]))
        seen += [str(failed.value), repr(failed.value)]
        s1.state.down = s2.state.down = None
        s1.state.key = "a-different-key-000000"  # the server echoes what it was sent
        with pytest.raises(FatalProviderError) as fatal:
            chain.embed(batch_of(chain, ["three"]))
        seen += [str(fatal.value), repr(fatal.value), str(fatal.value.__context__)]
        assert "Incorrect API key provided" in str(fatal.value)
        for p in (a, b, chain):
            seen += [repr(p), repr(p.info), str(p.info.fingerprint), str(p.info.details)]
        seen += [repr(a.stats()), repr(b.stats()), repr(a.provider.cfg), repr(a.provider.__dict__)]
        seen.append(caplog.text)
        assert len(s1.records) > 5 and s1.records[0].headers["Authorization"].endswith(SECRET_KEY)
    blob = "\n".join(seen)
    assert SECRET_KEY not in blob
    assert SECRET_KEY[:16] not in blob


# -- keys that cannot be sent, and every form a server may echo (issue 14, defect 5) ---


def _echoed_error(kind: str, key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The error text after a server answers 401 echoing the key it was sent."""
    from embedgen.providers.api_factory import build_api_provider
    from embedgen.providers.base import Batch
    from tests.api_helpers import api_config

    var = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY"}[kind]
    monkeypatch.setenv(var, key)
    with ApiServer(kind, key="the-server-wants-another-key") as server:
        p = build_api_provider(kind, api_config(kind, server, max_retries=0))
        with pytest.raises(FatalProviderError) as failed:
            p.embed_batch(Batch(["one"], [3]))
    assert "401" in str(failed.value)
    return f"{failed.value}\n{failed.value!r}"


@pytest.mark.parametrize("kind", ["openai", "azure"])
def test_key_with_a_tab_is_masked_when_echoed(kind: str, monkeypatch) -> None:
    key = "sk-tab\tTABSECRET-0123456789"
    text = _echoed_error(kind, key, monkeypatch)
    assert "Incorrect API key provided" in text
    for part in ("TABSECRET", "0123456789", "sk-tab TAB", "sk-tabTAB"):
        assert part not in text, text


@pytest.mark.parametrize("key", ["k3y", "abcde", "x9"])
def test_short_keys_are_masked(key: str, monkeypatch) -> None:
    text = _echoed_error("openai", key, monkeypatch)
    assert f"provided: {key}" not in text and MASK in text, text
    assert redact(f"key={key}&x=1 '{key}'") == f"key={MASK}&x=1 '{MASK}'"


def test_every_form_of_a_key_is_masked() -> None:
    """Raw, whitespace-normalised, URL-, JSON-, HTML- and repr-escaped, any case."""
    import html
    import json
    from urllib.parse import quote, quote_plus

    key = 'sk-Forms/Of+A Key"\t\\ü-0123'
    Secret(key)
    forms = {
        "raw": key,
        "normalised": " ".join(key.split()),
        "no whitespace": "".join(key.split()),
        "url": quote(key, safe=""),
        "url path": quote(key),
        "url plus": quote_plus(key),
        "url lower": quote(key, safe="").lower(),
        "json": json.dumps(key)[1:-1],
        "json utf-8": json.dumps(key, ensure_ascii=False)[1:-1],
        "html": html.escape(key),
        "repr": repr(key)[1:-1],
        "bytes repr": repr(key.encode())[2:-1],
        "upper": key.upper(),
    }
    for name, form in forms.items():
        out = redact(f"echo <{form}> end")
        assert out == f"echo <{MASK}> end", (name, out)


def test_a_long_api_message_is_masked_before_it_is_cut() -> None:
    """A key straddling the 300-character cut of an API message leaves no prefix behind."""
    import json

    from embedgen.providers.transport import api_message

    key = "sk-SECRETPREFIX-straddles-the-cut-0123456789"
    Secret(key)
    body = json.dumps({"error": {"message": "x" * 280 + f" key {key} rejected"}}).encode()
    assert "SECRETPREFIX" not in redact(api_message(body))


@pytest.mark.parametrize("key", ["sk-clé-0123456789abcdef", "sk-line\nbreak-0123456789"])
def test_key_that_cannot_be_a_header_is_a_clear_error(key: str, monkeypatch) -> None:
    from embedgen.errors import ConfigError
    from embedgen.providers.api_factory import build_api_provider
    from tests.api_helpers import api_config

    monkeypatch.setenv("OPENAI_API_KEY", key)
    with ApiServer("openai") as server, pytest.raises(ConfigError) as bad:
        build_api_provider("openai", api_config("openai", server))
    message = str(bad.value)
    assert bad.value.exit_code == 2
    assert "OPENAI_API_KEY" in message and "header" in message
    assert "0123456789" not in message and "clé" not in message


def test_non_ascii_key_in_a_run_is_one_line_exit_2(tmp_path, write_parquet, monkeypatch) -> None:
    import os
    import subprocess
    import sys

    src = write_parquet({"text": ["one document"]})
    with ApiServer("openai") as server:
        cfg = tmp_path / "api.toml"
        cfg.write_text(
            '[run]\nproviders = ["openai"]\n\n[providers.openai]\nkind = "openai"\n'
            f'base_url = "{server.url}/v1"\ndimensions = 8\n',
            "utf-8",
        )
        env = {**os.environ, "OPENAI_API_KEY": "sk-ünïcödé-0123456789abcdef"}
        out = subprocess.run(
            [sys.executable, "-m", "embedgen", "run", str(src), "-c", str(cfg), "-q"],
            capture_output=True,
            text=True,
            env=env,
        )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "OPENAI_API_KEY" in lines[0] and "0123456789" not in out.stderr
