"""The Files and Batches endpoints of OpenAI and Azure OpenAI, over httpx.

OpenAI: ``POST {base}/files`` (multipart, ``purpose=batch``), ``POST {base}/batches``,
``GET {base}/batches/{id}``, ``POST {base}/batches/{id}/cancel``, ``GET {base}/batches``
(``after``/``limit`` pages), ``GET {base}/files/{id}/content``, ``DELETE {base}/files/{id}``,
with a bearer key; request lines ``POST /v1/embeddings``. Azure OpenAI: the same routes
under ``{resource}/openai/...?api-version=...`` with an ``api-key`` header; request lines
``POST /embeddings`` whose body names the (global batch) deployment as ``model``.

Every call goes through the providers' one HTTP transport
(:class:`~embedgen.providers.transport.Transport`: the same status → error map as a
synchronous request) and is retried by the same
:class:`~embedgen.providers.transport.RetryPolicy` on 429/5xx/timeouts/connection errors,
with full jitter and ``Retry-After`` honoured up to its clamp, up to the provider's
``max_retries``; 400/401/403/404 fail at once with the API's own message. Keys never
appear in a message (``redact``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from embedgen.errors import ConfigError, FatalProviderError, ProviderError
from embedgen.providers.transport import RetryPolicy, Transport
from embedgen.redact import Secret

if TYPE_CHECKING:
    from embedgen.config import ApiConfigBase
    from embedgen.providers.http_base import HttpProvider

BATCH_KINDS = frozenset({"openai", "azure"})
"""Provider kinds whose batch API embedgen speaks (documented Files + Batches protocol)."""

COMPLETION_WINDOW_S = 24 * 3600
"""OpenAI's and Azure's ``completion_window`` (``24h``): a batch ends within it."""

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""Batch statuses after which nothing changes."""

_TRANSFER_TIMEOUT = 600.0
"""Uploads and downloads move up to 200 MB: they get at least this long."""


class BatchClient:
    """One provider's batch endpoints; ``provider`` builds request bodies and reads replies."""

    def __init__(
        self,
        name: str,
        cfg: ApiConfigBase,
        key: Secret | None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if cfg.kind not in BATCH_KINDS:
            raise ConfigError(
                f"providers.{name}.mode: {cfg.kind!r} has no batch API embedgen can use "
                f"(batch mode works with {', '.join(sorted(BATCH_KINDS))})"
            )
        from embedgen.providers.api_factory import provider_class

        self.name = name
        self.cfg = cfg
        self._key = key
        self._sleep = sleep
        self.provider: HttpProvider = provider_class(name, cfg)(name, cfg, key)
        self._http = Transport(
            name,
            timeout=cfg.timeout,
            key_env=cfg.api_key_env,
            check="base_url, deployment and api_version",
        )
        self.retry = RetryPolicy(cfg.max_retries, cfg.backoff_base, cfg.backoff_max)
        self.polls_failed = 0

    # Routes ---------------------------------------------------------------------------
    @property
    def azure(self) -> bool:
        return self.cfg.kind == "azure"

    @property
    def endpoint(self) -> str:
        """The ``endpoint`` of a batch and the ``url`` of each request line."""
        return "/embeddings" if self.azure else "/v1/embeddings"

    def url(self, path: str) -> str:
        if self.azure:
            version = quote(str(self.cfg.api_version), safe="")  # type: ignore[attr-defined]
            sep = "&" if "?" in path else "?"
            return f"{self.cfg.endpoint()}/openai{path}{sep}api-version={version}"
        return f"{self.cfg.endpoint()}{path}"

    def headers(self) -> dict[str, str]:
        if self._key is None:
            return {}
        if self.azure:
            return {"api-key": self._key.reveal()}
        return {"Authorization": f"Bearer {self._key.reveal()}"}

    # Request lines --------------------------------------------------------------------
    def body(self, texts: Sequence[str]) -> dict[str, Any]:
        """The synchronous request body for ``texts`` (Azure: with the deployment as model)."""
        body = self.provider.payload(list(texts))
        if self.azure:
            body = {"model": self.cfg.deployment, **body}  # type: ignore[attr-defined]
        return body

    def request_line(self, custom_id: str, texts: Sequence[str]) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": self.endpoint,
                "body": self.body(texts)}  # fmt: skip
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def read_response(self, body: Any, n: int) -> tuple[Any, int | None]:
        """(vectors in input order, billed tokens) from one result line's response body."""
        return self.provider.read(body, n)

    # Calls ----------------------------------------------------------------------------
    def upload(self, data: bytes, filename: str) -> str:
        """Upload a JSONL request file; its file id."""
        reply = self._call(
            "POST", "/files", what="upload the batch file", transfer=True,
            files={"file": (filename, data, "application/jsonl")}, data={"purpose": "batch"},
        )  # fmt: skip
        return _field(reply, "id", self.name)

    def create(self, file_id: str, job_id: str) -> dict[str, Any]:
        """Start a batch over an uploaded file, tagged with ``job_id`` in its metadata.

        When a create request fails in a way that may have reached the server, the
        batches are searched for the tag before trying again, so a job is never
        submitted twice.
        """
        body = {"input_file_id": file_id, "endpoint": self.endpoint, "completion_window": "24h",
                "metadata": {"embedgen_job": job_id}}  # fmt: skip

        def again() -> dict[str, Any] | None:
            return self.find(job_id)

        return self._call(
            "POST", "/batches", what="create the batch", json=body, before_retry=again
        )

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batches/{quote(batch_id, safe='')}", what="poll the batch")

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._call(
            "POST", f"/batches/{quote(batch_id, safe='')}/cancel", what="cancel the batch"
        )

    def find(self, job_id: str, pages: int = 5) -> dict[str, Any] | None:
        """The batch tagged with ``job_id`` among the most recent ones, or None."""
        after: str | None = None
        for _ in range(pages):
            path = "/batches?limit=100" + (f"&after={quote(after, safe='')}" if after else "")
            reply = self._call("GET", path, what="list batches")
            items = reply.get("data") if isinstance(reply, dict) else None
            if not isinstance(items, list):
                return None
            for item in items:
                meta = item.get("metadata") if isinstance(item, dict) else None
                if isinstance(meta, dict) and meta.get("embedgen_job") == job_id:
                    return item  # type: ignore[no-any-return]
            if not reply.get("has_more") or not items:
                return None
            after = str(items[-1].get("id", ""))
        return None

    def files_named(self, filename: str, pages: int = 5) -> list[str]:
        """Ids of the uploaded batch files called ``filename`` among the most recent ones."""
        out: list[str] = []
        after: str | None = None
        for _ in range(pages):
            path = "/files?purpose=batch&limit=100"
            path += f"&after={quote(after, safe='')}" if after else ""
            reply = self._call("GET", path, what="list files")
            items = reply.get("data") if isinstance(reply, dict) else None
            if not isinstance(items, list) or not items:
                break
            named = [f for f in items if isinstance(f, dict) and f.get("filename") == filename]
            out += [str(f["id"]) for f in named if f.get("id")]
            if not reply.get("has_more"):
                break
            after = str(items[-1].get("id", ""))
        return out

    def content(self, file_id: str) -> bytes:
        path = f"/files/{quote(file_id, safe='')}/content"
        return self._call("GET", path, what="download results", transfer=True, raw=True)  # type: ignore[no-any-return]

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded or result file; one already gone is fine."""
        try:
            self._call("DELETE", f"/files/{quote(file_id, safe='')}", what="delete a file")
        except FatalProviderError as exc:
            if "HTTP 404" not in str(exc):
                raise

    def close(self) -> None:
        self._http.close()
        self.provider.close()

    # Internals ------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        transfer: bool = False,
        raw: bool = False,
        before_retry: Callable[[], dict[str, Any] | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One call with retries; the parsed JSON reply (or bytes when ``raw``)."""
        timeout = max(self.cfg.timeout, _TRANSFER_TIMEOUT) if transfer else None

        def attempt() -> Any:
            url, headers = self.url(path), self.headers()
            resp = self._http.send(
                method, url, headers=headers, what=what, timeout=timeout, **kwargs
            )
            return resp.content if raw else self._http.json(resp, what)

        return self.retry.call(attempt, sleep=self._sleep, before_retry=before_retry)


def _field(reply: Any, name: str, provider: str) -> str:
    value = reply.get(name) if isinstance(reply, dict) else None
    if not isinstance(value, str) or not value:
        raise ProviderError(f"{provider}: the batch API answered without {name!r}")
    return value


def build_client(name: str, cfg: ApiConfigBase) -> BatchClient:
    """The batch client of provider ``name``, with its key from the environment."""
    from embedgen.providers.api_factory import read_key

    return BatchClient(name, cfg, read_key(name, cfg))
