"""Loopback servers speaking the hosted embedding APIs, with switches to inject faults.

One :class:`ApiServer` speaks one protocol:

- ``openai``: ``POST /v1/embeddings`` (also what Mistral and compatible servers speak),
  ``Authorization: Bearer``; ``dimensions`` sets the vector size.
- ``azure``: ``POST /openai/deployments/{deployment}/embeddings?api-version=...``,
  ``api-key`` header.
- ``voyage``: ``POST /v1/embeddings`` with ``input_type``, ``output_dimension`` and
  ``output_dtype`` (float, or :func:`quantized`: int8, uint8, binary, ubinary).
- ``cohere``: ``POST /v2/embed`` answering ``embeddings.<type>`` for each of
  ``embedding_types``.

Vectors are deterministic (:func:`vector_for`: a hash of model and text seeds them),
tokens are counted with the tokenizer the client uses. Faults: ``faults`` is a queue
consumed one per request; ``fault_rate`` draws from ``random_faults`` with a seeded
RNG; ``down`` answers every request with 503 (or a reset); ``rpm``/``tpm`` make a
limiter that answers 429 past them. Every request is recorded.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from tests.loopback import LoopbackServer, Server

FAULTS = (
    "429",
    "429-date",
    "429-ms",
    "408",
    "500",
    "503",
    "slow",
    "drop",
    "reset",
    "malformed",
    "count",
    "dim",
    "nan",
    "401",
    "403",
    "404",
    "400",
)


STATUS_MESSAGES = {
    "400": "input is invalid: bad request",
    "401": "Invalid authentication",
    "403": "You are not allowed to use this model",
    "404": "The model does not exist",
    "408": "server error",
    "429": "Too many requests",
    "500": "server error",
    "503": "server error",
}
"""The faults that are an error status, and the API message each answers with."""


def status_fault(fault: str, retry_after: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """(status, JSON body, headers) of a status fault (``429`` with ``Retry-After:
    retry_after``, ``429-date`` two seconds ahead, ``429-ms`` 30 ms), or None for others."""
    head, _, form = fault.partition("-")
    if head not in STATUS_MESSAGES:
        return None
    headers: dict[str, str] = {}
    if head == "429":
        headers = {
            "date": {"Retry-After": email.utils.formatdate(time.time() + 2, usegmt=True)},
            "ms": {"retry-after-ms": "30"},
        }.get(form, {"Retry-After": retry_after})
    return int(head), {"error": {"message": STATUS_MESSAGES[head]}}, headers


OUTPUT_TYPES = ("float", "int8", "uint8", "binary", "ubinary")


def quantized(vecs: list[list[float]], dtype: str) -> list[list[Any]]:
    """Vectors as an API answers ``dtype``: codes of +-1 over 256 steps, or packed sign bits
    (``binary`` as int8: the byte minus 128), as Voyage and Cohere document them."""
    if dtype == "float" or not vecs:
        return vecs
    v = np.asarray(vecs, dtype=np.float64)
    if dtype in ("binary", "ubinary"):
        bits = np.packbits(v > 0, axis=1).astype(np.int64)
        return (bits - 128 if dtype == "binary" else bits).tolist()
    codes = np.clip(np.rint(v * 127), -128, 127).astype(np.int64)
    return (codes + 128 if dtype == "uint8" else codes).tolist()


def vector_for(text: str, dim: int, model: str) -> np.ndarray:
    """The unit vector every server returns for ``text`` under ``model``."""
    seed = int.from_bytes(hashlib.blake2b(f"{model}\0{text}".encode(), digest_size=8).digest())
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def words(text: str) -> int:
    return max(1, len(text.split()))


@dataclass
class Record:
    path: str
    texts: list[str]
    status: int
    fault: str | None
    headers: dict[str, str]
    at: float
    body: dict[str, Any] = field(default_factory=dict)
    """The request's JSON body, so a test can check the fields a client sent."""


@dataclass
class ServerState:
    protocol: str
    key: str | None
    dim: int
    model: str
    count_tokens: Callable[[str], int]
    deployment: str = "emb"
    faults: deque[str] = field(default_factory=deque)
    fault_rate: float = 0.0
    random_faults: tuple[str, ...] = ("429", "500", "reset")
    seed: int = 0
    down: str | None = None
    """None, "503" or "reset": answer every request this way."""
    slow_seconds: float = 1.0
    retry_after: str = "0"
    rate_headers: bool = False
    rpm: float | None = None
    tpm: float | None = None
    burst_seconds: float = 1.0
    window_limit: int | None = None
    """A fixed-window limiter: this many requests per ``window_seconds``, answered beyond
    that with 429 and ``Retry-After: window_retry_after`` (a server that understates it)."""
    window_seconds: float = 60.0
    window_retry_after: str = "1"
    honour_dimensions: bool = True
    """False: a server that makes ``dim``-d vectors whatever ``dimensions`` asks for."""
    records: list[Record] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._levels = {"requests": 0.0, "tokens": 0.0}
        self._stamp = time.monotonic()
        self._started = False
        self._window = (time.monotonic(), 0)

    def window_allows(self) -> bool:
        """Count a request against the fixed window; False when the window is full."""
        with self.lock:
            start, used = self._window
            now = time.monotonic()
            if now - start >= self.window_seconds:
                start, used = now, 0
            ok = used < (self.window_limit or 0)
            self._window = (start, used + int(ok))
            return ok

    def next_fault(self) -> str | None:
        with self.lock:
            if self.faults:
                return self.faults.popleft()
            if self.fault_rate and self.rng.random() < self.fault_rate:
                return self.rng.choice(self.random_faults)
        return None

    def limit(self, tokens: int) -> tuple[bool, dict[str, str]]:
        """A token-bucket limiter over requests and tokens: (allowed, headers)."""
        with self.lock:
            now = time.monotonic()
            caps = {
                "requests": (self.rpm / 60.0) if self.rpm else None,
                "tokens": (self.tpm / 60.0) if self.tpm else None,
            }
            if not self._started:
                for k, rate in caps.items():
                    if rate:
                        self._levels[k] = rate * self.burst_seconds
                self._started = True
            dt, self._stamp = now - self._stamp, now
            for k, rate in caps.items():
                if rate:
                    self._levels[k] = min(rate * self.burst_seconds, self._levels[k] + dt * rate)
            need = {"requests": 1.0, "tokens": float(tokens)}
            ok = all(
                rate is None or self._levels[k] >= min(need[k], rate * self.burst_seconds)
                for k, rate in caps.items()
            )
            if ok:
                for k, rate in caps.items():
                    if rate:
                        self._levels[k] -= need[k]
            headers: dict[str, str] = {}
            waits = [0.0]
            for k, rate in caps.items():
                if not rate:
                    continue
                missing = max(0.0, min(need[k], rate * self.burst_seconds) - self._levels[k])
                waits.append(missing / rate)
                if self.rate_headers:
                    limit = self.rpm if k == "requests" else self.tpm
                    headers[f"x-ratelimit-limit-{k}"] = str(int(limit or 0))
                    headers[f"x-ratelimit-remaining-{k}"] = str(max(0, int(self._levels[k])))
                    full = (rate * self.burst_seconds - self._levels[k]) / rate
                    headers[f"x-ratelimit-reset-{k}"] = f"{max(0, int(full * 1000))}ms"
            if not ok:
                headers["retry-after-ms"] = str(int(max(waits) * 1000) + 1)
            return ok, headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._reply(status, json.dumps(data).encode(), headers)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        url = urlparse(self.path)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._json(400, {"error": {"message": "body is not JSON"}})
        texts, err = self._texts(url.path, parse_qs(url.query), body)
        record = Record(
            url.path, texts, 0, None, dict(self.headers.items()), time.monotonic(), body
        )
        with st.lock:
            st.records.append(record)
            st.attempts[hashlib.sha1("\0".join(texts).encode()).hexdigest()] += 1
        if err is not None:
            record.status = err[0]
            return self._json(err[0], {"error": {"message": err[1]}})
        provided = self._key()
        if st.key is not None and provided != st.key:
            record.status = 401
            return self._json(
                401, {"error": {"message": f"Incorrect API key provided: {provided}."}}
            )
        if st.down == "reset":
            record.fault = "down"
            return self._reset()
        if st.down:
            record.status, record.fault = 503, "down"
            return self._json(503, {"error": {"message": "service unavailable"}})
        tokens = sum(st.count_tokens(t) for t in texts)
        limit_headers: dict[str, str] = {}
        if st.window_limit is not None and not st.window_allows():
            record.status, record.fault = 429, "window"
            return self._json(
                429,
                {"error": {"message": "Rate limit reached"}},
                {"Retry-After": st.window_retry_after},
            )
        if st.rpm or st.tpm:
            ok, limit_headers = st.limit(tokens)
            if not ok:
                record.status, record.fault = 429, "limit"
                return self._json(429, {"error": {"message": "Rate limit reached"}}, limit_headers)
        fault = st.next_fault()
        record.fault = fault
        asked = body.get("dimensions") or body.get("output_dimension")
        dim = int(asked if asked and st.honour_dimensions else st.dim)
        if fault is not None:
            done = self._fault(fault, record)
            if done:
                return None
        vecs = [vector_for(t, dim, st.model).tolist() for t in texts]
        if fault == "count":
            vecs = vecs[:-1]
        elif fault == "dim":  # one vector short: a malformed reply (a server that always
            vecs[0] = vecs[0][:-1]  # returns another size is the ``dim=`` of the server)
        elif fault == "nan":
            vecs[0][0] = float("nan")
        record.status = 200
        if fault == "malformed":
            return self._reply(200, b'{"data": [{"index": 0, "embedding": [0.1, ', limit_headers)
        self._json(200, self._answer(vecs, texts, tokens, body), limit_headers)

    def _fault(self, fault: str, record: Record) -> bool:
        """Act out a fault; True when the reply has been sent (or the line dropped)."""
        st = self.server.state
        reply = status_fault(fault, st.retry_after)
        if reply is not None:
            record.status = reply[0]
            self._json(*reply)
            return True
        if fault == "slow":
            time.sleep(st.slow_seconds)
            return False
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if fault == "reset":
            self._reset()
            return True
        return False

    def _key(self) -> str | None:
        if self.server.state.protocol == "azure":
            return self.headers.get("api-key")
        auth = self.headers.get("Authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def _texts(
        self, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[list[str], tuple[int, str] | None]:
        st = self.server.state
        proto = st.protocol
        if proto == "azure":
            want = f"/openai/deployments/{st.deployment}/embeddings"
            if path != want:
                return [], (404, f"deployment not found: {path}")
            if not query.get("api-version"):
                return [], (400, "api-version is required")
            texts = body.get("input")
        elif proto == "cohere":
            if path != "/v2/embed":
                return [], (404, "not found")
            types = body.get("embedding_types")
            if not types or not set(types) <= set(OUTPUT_TYPES) or not body.get("input_type"):
                return [], (400, "embedding_types and input_type are required")
            texts = body.get("texts")
        else:
            if path != "/v1/embeddings":
                return [], (404, "not found")
            if proto == "voyage" and body.get("input_type") not in (None, "document", "query"):
                return [], (400, "bad input_type")
            if proto == "voyage" and body.get("output_dtype", "float") not in OUTPUT_TYPES:
                return [], (400, "bad output_dtype")
            texts = body.get("input")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return [], (400, "input must be a list of strings")
        return texts, None

    def _answer(
        self, vecs: list[list[float]], texts: list[str], tokens: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        st = self.server.state
        if st.protocol == "cohere":
            return {
                "id": "x",
                "embeddings": {t: quantized(vecs, t) for t in body["embedding_types"]},
                "texts": texts,
                "meta": {"billed_units": {"input_tokens": tokens}},
            }
        vecs = quantized(vecs, body.get("output_dtype", "float"))
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vecs)]
        data.reverse()  # clients must order by index
        usage_key = "total_tokens" if st.protocol == "voyage" else "prompt_tokens"
        return {"object": "list", "data": data, "model": st.model, "usage": {usage_key: tokens}}


class ApiServer(LoopbackServer):
    """A loopback server for one protocol; use as a context manager."""

    def __init__(
        self,
        protocol: str = "openai",
        *,
        key: str | None = "sk-test-0123456789abcdef",
        dim: int = 8,
        model: str = "text-embedding-3-small",
        count_tokens: Callable[[str], int] | None = None,
        **options: Any,
    ) -> None:
        if count_tokens is None:
            count_tokens = _default_counter(protocol)
        self.state = ServerState(protocol, key, dim, model, count_tokens, **options)
        super().__init__(self.state, _Handler)

    def __enter__(self) -> ApiServer:
        return super().__enter__()  # type: ignore[no-any-return]

    # Helpers for tests -----------------------------------------------------------------
    def fail_next(self, *faults: str) -> None:
        with self.state.lock:
            self.state.faults.extend(faults)

    @property
    def records(self) -> list[Record]:
        with self.state.lock:
            return list(self.state.records)

    def ok_requests(self) -> int:
        return sum(1 for r in self.records if r.status == 200 and r.fault is None)


def _default_counter(protocol: str) -> Callable[[str], int]:
    from embedgen.providers.api_tokenizers import api_tokenizer

    tok = api_tokenizer(protocol, None)
    return tok.count
