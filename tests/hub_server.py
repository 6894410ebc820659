"""A loopback HTTP server that speaks the parts of the Hugging Face Hub protocol
that ``huggingface_hub`` uses to download a model:

- ``GET /api/models/{repo}/revision/{rev}`` (``?blobs=true``): commit sha and siblings
  with size, git blob id and LFS sha256;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=true``): the file listing;
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS files, ``Content-Length`` and ``Range``.

Switches on :class:`HubServer` corrupt or truncate a served file (the listing keeps the
true size and sha256), add a path-escaping name to the listing, or make every request
fail with 503. Every request is logged, so a test can assert that none was made.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 1024
"""Files at least this large (or with a weight-like suffix) are served as LFS files."""
LFS_SUFFIXES = (".onnx", ".onnx_data", ".data", ".pt", ".safetensors", ".bin", ".model")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    """An in-memory model repo at one commit."""

    repo_id: str
    files: dict[str, bytes]
    commit: str = ""
    revisions: tuple[str, ...] = ("main",)

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1(self.repo_id.encode())
            for path in sorted(self.files):
                h.update(path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
            self.commit = h.hexdigest()

    @classmethod
    def from_folder(cls, repo_id: str, folder: Path, prefix: str = "") -> HubRepo:
        files = {
            prefix + p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        return cls(repo_id, files)

    def is_lfs(self, path: str) -> bool:
        return len(self.files[path]) >= LFS_THRESHOLD or path.endswith(LFS_SUFFIXES)

    def entry(self, path: str) -> dict:
        data = self.files[path]
        item: dict = {"size": len(data), "blobId": git_blob_sha1(data)}
        if self.is_lfs(path):
            item["lfs"] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "pointerSize": 134,
            }
        return item


@dataclass
class HubServer:
    """The server's state and switches; the handler reads them on every request."""

    repos: dict[str, HubRepo] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    """Served with one byte flipped (same length)."""
    truncate: set[str] = field(default_factory=set)
    """Served with only the first half of the bytes (consistent Content-Length)."""
    extra_names: dict[str, bytes] = field(default_factory=dict)
    """Names added to every listing and served as given (e.g. ``onnx/../../x``)."""
    down: bool = False
    """Answer every request with 503."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        state = self

        class Handler(_Handler):
            server_state = state

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server_state: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    # -- helpers ---------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, data: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self._send(200, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _repo_rev(self, parts: list[str]) -> tuple[HubRepo, str, list[str]] | None:
        """Split ``org/name/<rev>/rest`` and resolve; None after sending an error."""
        if len(parts) < 3:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        repo = self.server_state.repos.get(f"{parts[0]}/{parts[1]}")
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        rev = unquote(parts[2])
        if rev not in repo.revisions and rev != repo.commit:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo, rev, parts[3:]

    def _listing(self, repo: HubRepo) -> dict[str, dict]:
        items = {p: repo.entry(p) for p in sorted(repo.files)}
        for name, data in self.server_state.extra_names.items():
            items[name] = {
                "size": len(data),
                "blobId": git_blob_sha1(data),
                "lfs": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "pointerSize": 134},
            }
        return items

    # -- routes ------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        state = self.server_state
        split = urlsplit(self.path)
        state.requests.append((self.command, split.path))
        state.auth_headers.append(self.headers.get("authorization"))
        if state.down:
            self._send(503, b"service unavailable")
            return
        parts = [p for p in split.path.split("/") if p]
        query = parse_qs(split.query)
        if parts[:2] == ["api", "models"] and len(parts) >= 5 and parts[4] == "revision":
            self._revision(parts[2:4] + parts[5:])
        elif parts[:2] == ["api", "models"] and len(parts) >= 5 and parts[4] == "tree":
            self._tree(parts[2:4] + parts[5:], query)
        elif len(parts) >= 4 and parts[2] == "resolve":
            self._resolve(parts[:2] + parts[3:])
        else:
            self._error(404, "EntryNotFound", f"no route for {split.path}")

    def _revision(self, parts: list[str]) -> None:
        found = self._repo_rev(parts)
        if found is None:
            return
        repo, _rev, _ = found
        siblings = [{"rfilename": p, **e} for p, e in self._listing(repo).items()]
        self._json(
            {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
             "siblings": siblings, "tags": ["onnx"], "library_name": "sentence-transformers"}
        )

    def _tree(self, parts: list[str], query: dict[str, list[str]]) -> None:
        found = self._repo_rev(parts)
        if found is None:
            return
        repo, _rev, rest = found
        prefix = "/".join(unquote(p) for p in rest)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        out, folders = [], set()
        for path, entry in self._listing(repo).items():
            if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                continue
            rel = path[len(prefix.rstrip("/")) + 1 :] if prefix else path
            if not recursive and "/" in rel:
                folder = (prefix.rstrip("/") + "/" if prefix else "") + rel.split("/")[0]
                if folder not in folders:
                    folders.add(folder)
                    out.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
                continue
            item = {"type": "file", "oid": entry["blobId"], "size": entry["size"], "path": path}
            if "lfs" in entry:
                item["lfs"] = {"oid": entry["lfs"]["sha256"], "size": entry["size"],
                               "pointerSize": 134}
            out.append(item)
        self._json(out)

    def _resolve(self, parts: list[str]) -> None:
        found = self._repo_rev(parts)
        if found is None:
            return
        repo, _rev, rest = found
        path = "/".join(unquote(p) for p in rest)
        state = self.server_state
        if path in repo.files:
            data = repo.files[path]
            entry = repo.entry(path)
        elif path in state.extra_names:
            data = state.extra_names[path]
            entry = {"size": len(data), "blobId": git_blob_sha1(data),
                     "lfs": {"sha256": hashlib.sha256(data).hexdigest()}}
        else:
            self._error(404, "EntryNotFound", f"{path} does not exist", commit=repo.commit)
            return
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if "lfs" in entry:
            headers["ETag"] = f'"{entry["lfs"]["sha256"]}"'
            headers["X-Linked-Etag"] = f'"{entry["lfs"]["sha256"]}"'
            headers["X-Linked-Size"] = str(len(data))
        else:
            headers["ETag"] = f'"{entry["blobId"]}"'
        body = data
        if path in state.corrupt and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if path in state.truncate:
            body = body[: len(body) // 2]
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[len("bytes="):].partition("-")
            start = int(start_s or 0)
            end = int(end_s) if end_s else len(body) - 1
            if start >= len(body):
                self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body = body[start : end + 1]
            status = 206
        headers["Content-Length"] = str(len(body))
        self._send(status, body, headers)
