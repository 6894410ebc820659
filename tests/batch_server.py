"""A loopback server speaking the OpenAI (or Azure OpenAI) Files and Batches protocol.

Files: ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files`` (one page),
``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``. Batches: ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``, ``GET /v1/batches``
(``limit``/``after``). Azure: the same under ``/openai/...?api-version=...`` with an
``api-key`` header, request lines ``POST /embeddings`` naming the deployment as ``model``.

A batch moves ``validating -> in_progress -> finalizing -> completed`` one step per
poll after ``polls_to_start`` polls (slow completion: raise it). Vectors are those of
``tests/api_servers.vector_for`` (deterministic per text), usage counts tokens with
the client's tokenizer. Switches: ``validation_error`` (the batch fails validation),
``fail_rate`` (requests that fail into the error file; each text fails at most once),
``poll_fail_rate`` (that share of batch GETs answer 500, evenly spread), ``expire``
(that many batches expire with only ``partial`` of their requests done),
``cancel_at_end`` (that many end cancelled with ``partial`` done), and
:meth:`BatchServer.fail_next` (the next requests answer the status faults of
``tests/api_servers.status_fault``, 429s with ``Retry-After: retry_after``). Everything
is recorded for the tests to count.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, deque
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.api_servers import _default_counter, status_fault, vector_for
from tests.loopback import LoopbackServer, Server

KEY = "sk-batch-test-0123456789abcdef"


class BatchState:
    def __init__(self, protocol: str, key: str | None, dim: int, model: str, **opts: Any):
        self.protocol = protocol
        self.key = key
        self.dim = dim
        self.model = model
        self.deployment = opts.pop("deployment", "emb-batch")
        self.polls_to_start = int(opts.pop("polls_to_start", 0))
        self.validation_error: str | None = opts.pop("validation_error", None)
        self.fail_rate = float(opts.pop("fail_rate", 0.0))
        self.poll_fail_rate = float(opts.pop("poll_fail_rate", 0.0))
        self.expire = int(opts.pop("expire", 0))
        """How many batches (the first ones to end) expire instead of completing."""
        self.cancel_at_end = int(opts.pop("cancel_at_end", 0))
        """How many batches end cancelled (as if cancelled in the provider's console)."""
        self.partial = float(opts.pop("partial", 0.5))
        self.max_inputs = int(opts.pop("max_inputs", 50_000))
        self.retry_after = str(opts.pop("retry_after", "0"))
        self.faults: deque[str] = deque()
        if opts:
            raise TypeError(f"unknown options {sorted(opts)}")
        self.count = _default_counter("openai")
        self.rng = random.Random(7)
        self.lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.failed_texts: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.deleted: list[str] = []
        self.embedded: Counter[str] = Counter()
        """Text -> times it was embedded successfully (billed)."""
        self.billed_tokens = 0
        self.seen_keys: list[str] = []
        self._n = 0

    def new_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n:05d}"


class _Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # Plumbing -----------------------------------------------------------------------
    def _reply(
        self,
        status: int,
        data: Any,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = raw if raw is not None else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/jsonl")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._reply(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def _route(self) -> tuple[str, dict[str, list[str]]] | None:
        st = self.server.state
        url = urlparse(self.path)
        query = parse_qs(url.query)
        path = url.path
        if st.protocol == "azure":
            if not path.startswith("/openai/") or not query.get("api-version"):
                self._error(404, f"not found: {path}")
                return None
            path = "/v1" + path.removeprefix("/openai")
            got = self.headers.get("api-key")
        else:
            auth = self.headers.get("Authorization", "")
            got = auth[7:] if auth.startswith("Bearer ") else None
        with st.lock:
            st.seen_keys.append(got or "")
        if st.key is not None and got != st.key:
            self._error(401, f"Incorrect API key provided: {got}")
            return None
        with st.lock:
            fault = st.faults.popleft() if st.faults else None
            reply = status_fault(fault, st.retry_after) if fault else None
            if reply is not None:
                st.calls["faulted"] += 1
        if reply is not None:
            status, data, headers = reply
            self._reply(status, data, headers=headers)
            return None
        return path, query

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # Verbs --------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        routed = self._route()
        if routed is None:
            return
        path, _ = routed
        st = self.server.state
        parts = path.strip("/").split("/")
        if parts == ["v1", "files"]:
            return self._upload(body)
        if parts == ["v1", "batches"]:
            return self._create(json.loads(body))
        if len(parts) == 4 and parts[:2] == ["v1", "batches"] and parts[3] == "cancel":
            with st.lock:
                st.calls["cancel"] += 1
                b = st.batches.get(parts[2])
                if b is None:
                    return self._error(404, "no such batch")
                if b["status"] not in ("completed", "failed", "expired", "cancelled"):
                    b["status"] = "cancelling"
                    b["_cancel"] = True
                return self._reply(200, _public(b))
        self._error(404, f"not found: {path}")

    def do_GET(self) -> None:  # noqa: N802
        routed = self._route()
        if routed is None:
            return
        path, query = routed
        st = self.server.state
        parts = path.strip("/").split("/")
        if parts == ["v1", "batches"]:
            with st.lock:
                st.calls["list"] += 1
                ids = list(reversed(st.order))
                after = query.get("after", [None])[0]
                if after in ids:
                    ids = ids[ids.index(after) + 1 :]
                limit = int(query.get("limit", ["20"])[0])
                page = [_public(st.batches[i]) for i in ids[:limit]]
                return self._reply(200, {"object": "list", "data": page,
                                         "has_more": len(ids) > limit})  # fmt: skip
        if len(parts) == 3 and parts[:2] == ["v1", "batches"]:
            with st.lock:
                st.calls["poll"] += 1
                n = st.calls["poll"]  # exactly poll_fail_rate of the polls fail, spread evenly
                if int(n * st.poll_fail_rate) != int((n - 1) * st.poll_fail_rate):
                    st.calls["poll_failed"] += 1
                    return self._error(500, "internal error (injected)")
                b = st.batches.get(parts[2])
                if b is None:
                    return self._error(404, "no such batch")
                self._advance(b)
                return self._reply(200, _public(b))
        if parts == ["v1", "files"]:
            with st.lock:
                st.calls["list_files"] += 1
                page = [{"id": i, "object": "file", "filename": f.get("filename", ""),
                         "purpose": f.get("purpose", "batch_output")}
                        for i, f in st.files.items()]  # fmt: skip
                return self._reply(200, {"object": "list", "data": page, "has_more": False})
        if len(parts) == 4 and parts[:2] == ["v1", "files"] and parts[3] == "content":
            with st.lock:
                f = st.files.get(parts[2])
                if f is None:
                    return self._error(404, "no such file")
                return self._reply(200, None, raw=f["data"])
        self._error(404, f"not found: {path}")

    def do_DELETE(self) -> None:  # noqa: N802
        routed = self._route()
        if routed is None:
            return
        path, _ = routed
        st = self.server.state
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "files"]:
            with st.lock:
                if st.files.pop(parts[2], None) is None:
                    return self._error(404, "no such file")
                st.deleted.append(parts[2])
                return self._reply(200, {"id": parts[2], "object": "file", "deleted": True})
        self._error(404, f"not found: {path}")

    # Files and batches --------------------------------------------------------------
    def _upload(self, body: bytes) -> None:
        st = self.server.state
        head = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        msg = BytesParser(policy=HTTP).parsebytes(head + body)
        fields: dict[str, bytes] = {}
        for part in msg.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = part.get_payload(decode=True) or b""
            if name == "file":
                fields["filename"] = str(part.get_filename() or "").encode()
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return self._error(400, "purpose=batch and a file are required")
        with st.lock:
            st.calls["upload"] += 1
            fid = st.new_id("file-in")
            st.files[fid] = {"data": fields["file"], "purpose": "batch",
                             "filename": fields["filename"].decode()}  # fmt: skip
        self._reply(200, {"id": fid, "object": "file", "bytes": len(fields["file"]),
                          "purpose": "batch"})  # fmt: skip

    def _create(self, req: dict[str, Any]) -> None:
        st = self.server.state
        want = "/embeddings" if st.protocol == "azure" else "/v1/embeddings"
        if req.get("endpoint") != want or req.get("completion_window") != "24h":
            return self._error(400, "bad endpoint or completion_window")
        with st.lock:
            f = st.files.get(str(req.get("input_file_id")))
            if f is None:
                return self._error(400, "input file not found")
            st.calls["create"] += 1
            bid = st.new_id("batch")
            lines = [json.loads(x) for x in f["data"].splitlines() if x.strip()]
            b = {
                "id": bid, "object": "batch", "endpoint": want, "errors": None,
                "input_file_id": req["input_file_id"], "completion_window": "24h",
                "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": req.get("metadata"),
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "_lines": lines, "_polls": 0, "_cancel": False,
            }  # fmt: skip
            st.batches[bid] = b
            st.order.append(bid)
        self._reply(200, _public(b))

    def _advance(self, b: dict[str, Any]) -> None:
        """One poll's worth of progress (called under the lock)."""
        st = self.server.state
        if b["status"] in ("completed", "failed", "expired", "cancelled"):
            return
        if b["_cancel"]:
            return self._finish(b, "cancelled", 0.0)
        b["_polls"] += 1
        if b["_polls"] <= st.polls_to_start:
            return
        if b["status"] == "validating":
            problem = st.validation_error or self._validate(b["_lines"])
            if problem:
                b["status"] = "failed"
                error = {"code": "invalid_request", "message": problem, "line": 1}
                b["errors"] = {"object": "list", "data": [error]}
                return None
            b["status"] = "in_progress"
        elif b["status"] == "in_progress":
            b["status"] = "finalizing"
        elif b["status"] == "finalizing":
            if st.expire:
                st.expire -= 1
                return self._finish(b, "expired", st.partial)
            if st.cancel_at_end:
                st.cancel_at_end -= 1
                return self._finish(b, "cancelled", st.partial)
            self._finish(b, "completed", 1.0)
        return None

    def _validate(self, lines: list[dict[str, Any]]) -> str | None:
        st = self.server.state
        want = "/embeddings" if st.protocol == "azure" else "/v1/embeddings"
        inputs = 0
        for i, line in enumerate(lines):
            body = line.get("body") or {}
            if line.get("method") != "POST" or line.get("url") != want or "custom_id" not in line:
                return f"line {i + 1}: bad request line"
            model = st.deployment if st.protocol == "azure" else st.model
            if body.get("model") != model:
                return f"line {i + 1}: model {body.get('model')!r} not found"
            inputs += len(body.get("input") or [])
        if inputs > st.max_inputs:
            return f"the batch has {inputs} embedding inputs, more than {st.max_inputs}"
        return None

    def _finish(self, b: dict[str, Any], status: str, done_share: float) -> None:
        st = self.server.state
        lines = b["_lines"]
        n_done = int(len(lines) * done_share)
        out, err = [], []
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            texts = line["body"]["input"]
            if i >= n_done:
                if status == "expired":
                    err.append({"id": f"req-{i}", "custom_id": cid, "response": None,
                                "error": {"code": "batch_expired",
                                          "message": "This request could not be executed "
                                          "before the completion window expired."}})  # fmt: skip
                continue
            fresh = [t for t in texts if t not in st.failed_texts]
            if st.fail_rate and fresh and st.rng.random() < st.fail_rate:
                st.failed_texts.update(texts)
                err.append({"id": f"req-{i}", "custom_id": cid, "response": {
                    "status_code": 500, "request_id": f"r{i}",
                    "body": {"error": {"message": "The server had an error (injected)",
                                       "type": "server_error"}}}, "error": None})  # fmt: skip
                continue
            dims = line["body"].get("dimensions") or st.dim
            vecs = [vector_for(t, dims, st.model).tolist() for t in texts]
            tokens = sum(st.count(t) for t in texts)
            st.billed_tokens += tokens
            st.embedded.update(texts)
            data = [{"object": "embedding", "index": j, "embedding": v} for j, v in enumerate(vecs)]
            data.reverse()
            out.append({"id": f"req-{i}", "custom_id": cid, "response": {
                "status_code": 200, "request_id": f"r{i}",
                "body": {"object": "list", "data": data, "model": st.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}},
                "error": None})  # fmt: skip
        st.rng.shuffle(out)
        b["status"] = status
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        if out:
            fid = st.new_id("file-out")
            st.files[fid] = {"data": b"".join(json.dumps(x).encode() + b"\n" for x in out)}
            b["output_file_id"] = fid
        if err:
            fid = st.new_id("file-err")
            st.files[fid] = {"data": b"".join(json.dumps(x).encode() + b"\n" for x in err)}
            b["error_file_id"] = fid


def _public(b: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in b.items() if not k.startswith("_")}


class BatchServer(LoopbackServer):
    """The loopback batch server; use as a context manager."""

    def __init__(
        self,
        protocol: str = "openai",
        *,
        key: str | None = KEY,
        dim: int = 8,
        model: str = "text-embedding-3-small",
        **options: Any,
    ) -> None:
        self.state = BatchState(protocol, key, dim, model, **options)
        super().__init__(self.state, _Handler)

    def __enter__(self) -> BatchServer:
        return super().__enter__()  # type: ignore[no-any-return]

    @property
    def calls(self) -> Counter[str]:
        with self.state.lock:
            return Counter(self.state.calls)

    def fail_next(self, *faults: str) -> None:
        """Answer the next requests with these status faults (``"429"``, ``"500"``...)."""
        unknown = [f for f in faults if status_fault(f, "0") is None]
        if unknown:
            raise ValueError(f"not status faults: {unknown}")
        with self.state.lock:
            self.state.faults.extend(faults)

    def live_files(self) -> list[str]:
        with self.state.lock:
            return sorted(self.state.files)
