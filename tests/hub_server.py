"""A loopback HTTP server that speaks the parts of the Hugging Face Hub protocol
that ``huggingface_hub`` uses to download a model:

- ``GET /api/models/{repo}/revision/{rev}`` (``?blobs=true``): commit sha and siblings
  with size, git blob id and LFS sha256;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=true``): the file listing;
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS files, ``Content-Length`` and ``Range``.

Switches on :class:`HubServer` corrupt or truncate a served file (the listing keeps the
true size and sha256), list names without sizes or hashes (as some mirrors do), add a
path-escaping name to the listing, or make every request fail with 503. Every request
is logged, so a test can assert that none was made.
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
    bare_errors: bool = False
    """Errors without the Hub's ``X-Error-Code`` headers (a plain mirror's 404)."""
    unverified: bool = False
    """List file names only, without size, git blob id or sha256 (a mirror that lists
    no hashes); files are still served."""
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
        if self.server_state.bare_errors:
            headers = {}
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
        if self.server_state.unverified:
            return {p: {} for p in sorted(repo.files)}
        items = {p: repo.entry(p) for p in sorted(repo.files)}
        for name, data in self.server_state.extra_names.items():
            items[name] = {
                "size": len(data),
                "blobId": git_blob_sha1(data),
                "lfs": {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": 134,
                },
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
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": repo.commit,
                "private": False,
                "siblings": siblings,
                "tags": ["onnx"],
                "library_name": "sentence-transformers",
            }
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
            item = {
                "type": "file",
                "path": path,
                "oid": entry.get("blobId"),
                "size": entry.get("size"),
            }
            if "lfs" in entry:
                item["lfs"] = {
                    "oid": entry["lfs"]["sha256"],
                    "size": entry["size"],
                    "pointerSize": 134,
                }
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
            entry = {
                "size": len(data),
                "blobId": git_blob_sha1(data),
                "lfs": {"sha256": hashlib.sha256(data).hexdigest()},
            }
        else:
            self._error(404, "EntryNotFound", f"{path} does not exist", commit=repo.commit)
            return
        headers = {
            "X-Repo-Commit": repo.commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
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
            start_s, _, end_s = rng[len("bytes=") :].partition("-")
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


# -- model folders to serve ------------------------------------------------------------

STANDIN_TEXT = [
    "BGE M3 is an embedding model supporting dense retrieval, lexical matching and "
    "multi-vector interaction.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Embeddings turn text into vectors; similar texts get similar vectors.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "A model folder holds an ONNX graph, its weights and a tokenizer.",
] * 4


def build_tokenizer(folder: Path, vocab_size: int = 160) -> int:
    """An XLM-R-like Unigram tokenizer (<s>=0 <pad>=1 </s>=2 <unk>=3); returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(STANDIN_TEXT, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "cls_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "sep_token": "</s>",
                "unk_token": "<unk>",
                "mask_token": "<mask>",
            }
        )
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8192}))
    return tok.get_vocab_size()


def standin_weights(vocab: int, hidden: int, seed: int = 7) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "emb": rng.normal(0, 1, (vocab, hidden)).astype(np.float32),
        "bias": rng.normal(0, 0.1, (hidden,)).astype(np.float32),
        "sparse_w": rng.normal(0, 0.05, (hidden, 1)).astype(np.float32),
        "sparse_b": np.array([0.01], dtype=np.float32),
    }


def build_onnx(
    folder: Path,
    weights: dict,
    *,
    sparse_output: bool = True,
    external: bool = True,
    name: str = "model.onnx",
) -> Path:
    """A tiny graph with bge-m3's input and output names, weights as external data.

    ``last_hidden_state = tanh(emb[ids] + bias) * mask``; ``sentence_embedding`` is its
    L2-normalised first token; ``sparse_weights = relu(h @ w + b)``. The bias lives in a
    second external file (``Constant_7_attr__value``), as in the official export.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    vocab, hidden = weights["emb"].shape
    inits = [
        numpy_helper.from_array(weights["emb"], "emb"),
        numpy_helper.from_array(weights["bias"], "bias"),
        numpy_helper.from_array(weights["sparse_w"], "sparse_w"),
        numpy_helper.from_array(weights["sparse_b"], "sparse_b"),
        numpy_helper.from_array(__import__("numpy").array([-1], dtype="int64"), "axes"),
        numpy_helper.from_array(__import__("numpy").array(0, dtype="int64"), "zero"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["g"]),
        helper.make_node("Add", ["g", "bias"], ["a"]),
        helper.make_node("Tanh", ["a"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["h", "m3"], ["last_hidden_state"]),
        helper.make_node("Gather", ["last_hidden_state", "zero"], ["cls"], axis=1),
        helper.make_node("LpNormalization", ["cls"], ["sentence_embedding"], axis=-1, p=2),
    ]
    outputs = [
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", hidden]),
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["b", hidden]),
    ]
    if sparse_output:
        nodes += [
            helper.make_node("MatMul", ["last_hidden_state", "sparse_w"], ["sw"]),
            helper.make_node("Add", ["sw", "sparse_b"], ["sw2"]),
            helper.make_node("Relu", ["sw2"], ["sparse_weights"]),
        ]
        outputs.append(
            helper.make_tensor_value_info("sparse_weights", TensorProto.FLOAT, ["b", "s", 1])
        )
    graph = helper.make_graph(
        nodes,
        "bge_m3_standin",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if external:
        for t in model.graph.initializer:
            if t.name in ("emb", "sparse_w"):
                set_external_data(t, location=name + "_data")
            elif t.name == "bias":
                set_external_data(t, location="Constant_7_attr__value")
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path))
    return path


def write_torch_linear(path: Path, weight, bias) -> None:
    """Write a ``torch.save(linear.state_dict())`` zip archive without torch.

    The pickle names ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` and
    stores the raw float32 bytes in ``archive/data/<key>``, byte for byte as torch does.
    """
    import collections
    import io
    import pickle
    import sys
    import types
    import zipfile

    import numpy as np

    torch_mod = types.ModuleType("torch")
    utils_mod = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args):  # never called: only referenced by name in the pickle
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch_mod.FloatStorage = FloatStorage  # type: ignore[attr-defined]
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]

    class Storage:
        def __init__(self, key: str, arr) -> None:
            self.key, self.arr = key, arr

    class Tensor:
        def __init__(self, storage: Storage, shape: tuple) -> None:
            self.storage, self.shape = storage, shape

        def __reduce__(self):
            stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
            return (
                _rebuild_tensor_v2,
                (self.storage, 0, self.shape, stride, False, collections.OrderedDict()),
            )

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.arr.size)
            return None

    w = np.ascontiguousarray(weight, dtype="<f4")
    b = np.ascontiguousarray(bias, dtype="<f4")
    state = collections.OrderedDict(
        weight=Tensor(Storage("0", w), w.shape), bias=Tensor(Storage("1", b), b.shape)
    )
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(state)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", w.tobytes())
        z.writestr("archive/data/1", b.tobytes())
        z.writestr("archive/version", "3\n")


def bge_m3_repo(root: Path, *, hidden: int = 1024, sparse_output: bool = False) -> HubRepo:
    """A stand-in for BAAI/bge-m3: ``onnx/`` as in the official export, plus sparse_linear.pt."""
    onnx_dir = root / "onnx"
    vocab = build_tokenizer(onnx_dir)
    weights = standin_weights(vocab, hidden)
    build_onnx(onnx_dir, weights, sparse_output=sparse_output)
    (onnx_dir / "config.json").write_text(
        json.dumps({"model_type": "xlm-roberta", "hidden_size": hidden})
    )
    write_torch_linear(root / "sparse_linear.pt", weights["sparse_w"].T, weights["sparse_b"])
    (root / "README.md").write_text("stand-in for BAAI/bge-m3\n")
    (root / "pytorch_model.bin").write_bytes(b"not fetched" * 200)
    return HubRepo.from_folder("BAAI/bge-m3", root)
