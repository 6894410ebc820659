"""Packing cache misses into requests, and requests into batch files, within the limits.

OpenAI's documented limits: a file holds at most 50,000 requests and 200 MB; an
embeddings batch holds at most 50,000 inputs in all; each request keeps the synchronous
limits (2,048 inputs, 300,000 tokens, the model's tokens per input). Inputs arrive one
by one (a stream of misses) and files are cut as they fill, so memory is one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """One distinct cache miss: its cache key, its text, its tokens (with overhead)."""

    key: bytes
    text: str
    tokens: int


@dataclass(frozen=True)
class Limits:
    request_inputs: int = 2048
    request_tokens: int = 300_000
    file_requests: int = 50_000
    file_inputs: int = 50_000
    file_bytes: int = 200 * 1000 * 1000
    """Kept a little under the documented 200 MB (JSON escapes are counted exactly)."""


@dataclass
class Packed:
    """One batch file's requests: each a list of items, in custom_id order."""

    requests: list[list[Item]] = field(default_factory=list)
    bytes: int = 0

    @property
    def inputs(self) -> int:
        return sum(len(r) for r in self.requests)

    @property
    def tokens(self) -> int:
        return sum(it.tokens for r in self.requests for it in r)


def _text_bytes(text: str) -> int:
    """Bytes ``text`` takes in a JSON line (quotes, escapes, comma), cheaply and exactly."""
    import json

    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) + 1


REQUEST_OVERHEAD = 512
"""Bytes of a request line beyond its texts (custom_id, url, model, options)."""


def pack(items: Iterable[Item], limits: Limits) -> Iterator[Packed]:
    """Files of requests, each within every limit; an item never splits."""
    current = Packed()
    request: list[Item] = []
    req_tokens = req_bytes = 0

    def close_request() -> None:
        nonlocal request, req_tokens, req_bytes
        if request:
            current.requests.append(request)
            current.bytes += req_bytes + REQUEST_OVERHEAD
        request, req_tokens, req_bytes = [], 0, 0

    for item in items:
        size = _text_bytes(item.text)
        if request and (
            len(request) >= limits.request_inputs
            or req_tokens + item.tokens > limits.request_tokens
        ):
            close_request()
        full = (
            current.inputs + len(request) + 1 > limits.file_inputs
            or (not request and len(current.requests) + 1 > limits.file_requests)
            or current.bytes + req_bytes + size + REQUEST_OVERHEAD > limits.file_bytes
        )
        if full:
            close_request()
            if current.requests:
                yield current
            current = Packed()
        request.append(item)
        req_tokens += item.tokens
        req_bytes += size
    close_request()
    if current.requests:
        yield current
