"""One HTTP transport: a status means the same from a provider and from the batch client,
and both wait by the same retry policy (against the loopback servers, issue #19)."""

from __future__ import annotations

from typing import Any

import pytest

from embedgen.batch.client import BatchClient
from embedgen.errors import FatalProviderError, ProviderError, TransientProviderError
from embedgen.providers.api_factory import build_api_provider
from embedgen.providers.base import Batch
from embedgen.redact import Secret
from embedgen.router.limits import RetryPolicy
from tests.api_helpers import api_config
from tests.api_servers import STATUS_MESSAGES, ApiServer
from tests.batch_server import KEY as BATCH_KEY
from tests.batch_server import BatchServer
from tests.test_batch_api import config as batch_config

API_KEY = "sk-test-0123456789abcdef"


def test_the_batch_client_clamps_a_huge_retry_after_and_retries() -> None:
    slept: list[float] = []
    with BatchServer(retry_after="86400") as server:
        client = BatchClient("openai", batch_config(server), Secret(BATCH_KEY), sleep=slept.append)
        server.fail_next("429")
        file_id = client.upload(b'{"custom_id": "a"}\n', "in.jsonl")
        client.close()
        assert file_id in server.live_files()
        assert server.calls["faulted"] == 1 and server.calls["upload"] == 1
    clamp = RetryPolicy().max_retry_after  # 600 s: a day's wait is a broken server
    assert len(slept) == 1 and clamp <= slept[0] <= clamp + 0.05, slept


def test_the_batch_client_gives_up_after_max_retries_with_the_last_error() -> None:
    slept: list[float] = []
    with BatchServer() as server:
        cfg = batch_config(server, max_retries=2)
        client = BatchClient("openai", cfg, Secret(BATCH_KEY), sleep=slept.append)
        server.fail_next("500", "503", "500", "500")
        with pytest.raises(TransientProviderError, match="cannot poll the batch: HTTP 500") as err:
            client.get("batch-00001")
        client.close()
        assert err.value.status == 500 and server.calls["faulted"] == 3
    assert len(slept) == 2 and all(0.0 <= s <= 0.01 for s in slept), slept  # backoff_max


def _provider_error(server: ApiServer, fault: str) -> ProviderError:
    p = build_api_provider("openai", api_config("openai", server, max_retries=0))
    server.fail_next(fault)
    try:
        with pytest.raises(ProviderError) as err:
            p.embed_batch(Batch(["one"], [3]))
    finally:
        p.close()
    return err.value


def _batch_error(server: BatchServer, fault: str) -> ProviderError:
    client = BatchClient(
        "openai", batch_config(server, max_retries=0), Secret(BATCH_KEY), sleep=lambda s: None
    )
    server.fail_next(fault)
    try:
        with pytest.raises(ProviderError) as err:
            client.get("batch-00001")
    finally:
        client.close()
    return err.value


EXPECTED: dict[int, tuple[type[ProviderError], str]] = {
    401: (FatalProviderError, "(check the key in $OPENAI_API_KEY)"),
    403: (FatalProviderError, "(check the key in $OPENAI_API_KEY and its permissions)"),
    404: (FatalProviderError, "(check base_url, "),
    429: (TransientProviderError, ""),
    500: (TransientProviderError, ""),
}


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_a_status_is_the_same_error_from_a_provider_and_from_the_batch_client(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with ApiServer("openai", retry_after="7") as api, BatchServer(retry_after="7") as batch:
        errors = [_provider_error(api, str(status)), _batch_error(batch, str(status))]
    cls, hint = EXPECTED[status]
    for err in errors:
        text = str(err)
        assert type(err) is cls and err.exit_code == 1, (type(err), text)
        assert f"HTTP {status}: {STATUS_MESSAGES[str(status)]}" in text and hint in text, text
        assert "\n" not in text and API_KEY not in text and BATCH_KEY not in text
        if isinstance(err, TransientProviderError):
            want: dict[str, Any] = {"status": status, "retry_after": 7.0 if status == 429 else None}
            assert {"status": err.status, "retry_after": err.retry_after} == want
    assert errors[1].__class__ is errors[0].__class__
