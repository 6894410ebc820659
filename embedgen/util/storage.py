"""Object storage: ``s3://bucket/key`` inputs and outputs through ``pyarrow.fs``.

A location in object storage travels through the pipeline as a ``Path`` whose text starts
with ``s3:/`` (``Path("s3://b/k")`` keeps one slash), so file names, suffixes and
siblings work as for local files; :func:`uri` gives the ``s3://`` text back for messages
and records. Reading streams from the store (Parquet by ranges, JSONL as a stream);
nothing is downloaded whole. Writing uploads a finished local file to a temporary key
and then copies it to the final key, so a failed or killed upload never leaves an object
under the final key.

Credentials come from the standard AWS chain (environment, shared files, instance role).
``AWS_ENDPOINT_URL`` (which ``pyarrow.fs.S3FileSystem`` does not read by itself) points
at an S3-compatible store (MinIO, Ceph, moto); ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
set the region. Only ``s3://`` is served (``gs://`` and ``az://`` are refused).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from pathlib import Path
from typing import Any

from embedgen.errors import EmbedgenError, InputError, UsageError

SCHEME = "s3://"
UNSUPPORTED = ("gs://", "gcs://", "az://", "abfs://", "abfss://", "hdfs://")


ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
)  # fmt: skip
"""The variables the S3 client reads (what a Ray chunk task is handed, in memory)."""


def environment() -> dict[str, str]:
    """This process's S3 settings and credentials (:data:`ENV`), to hand to a worker."""
    return {k: os.environ[k] for k in ENV if k in os.environ}


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names an object in S3 (``s3://...``, or a Path made from one)."""
    text = str(location)
    if text.startswith(UNSUPPORTED):
        raise UsageError(f"{text}: only s3:// object storage is supported (or a local path)")
    return text.startswith("s3:/")


def uri(location: str | os.PathLike[str]) -> str:
    """``s3://bucket/key`` for a remote location; a local path's text unchanged."""
    text = str(location)
    if text.startswith("s3:/") and not text.startswith(SCHEME):
        return SCHEME + text[len("s3:/") :]
    return text


def key(location: str | os.PathLike[str]) -> str:
    """``bucket/key`` of a remote location (what ``pyarrow.fs`` takes)."""
    return uri(location)[len(SCHEME) :]


def filesystem() -> Any:
    """A ``pyarrow.fs.S3FileSystem`` from the standard AWS chain and ``AWS_ENDPOINT_URL``."""
    import pyarrow.fs as pafs

    opts: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        opts["endpoint_override"] = host or scheme
        opts["scheme"] = scheme if host else "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["region"] = region
    return pafs.S3FileSystem(**opts)


def open_input(location: str | os.PathLike[str]) -> Any:
    """A random-access file of a remote object (for Parquet)."""
    try:
        return filesystem().open_input_file(key(location))
    except OSError as exc:
        raise InputError(f"cannot open {uri(location)}: {exc}") from None


def open_stream(location: str | os.PathLike[str]) -> Any:
    """A remote object's bytes as a buffered stream, gunzipped when it ends in ``.gz``."""
    import io

    compression = "gzip" if str(location).lower().endswith(".gz") else None
    try:
        raw = filesystem().open_input_stream(key(location), compression=compression)
    except OSError as exc:
        raise InputError(f"cannot open {uri(location)}: {exc}") from None
    return io.BufferedReader(raw)


def list_inputs(spec: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Objects named by ``s3://bucket/key``, a prefix (``s3://bucket/dir/``) or a glob
    (``s3://bucket/dir/*.parquet``), with one of ``suffixes``, in key order."""
    import pyarrow.fs as pafs

    fs = filesystem()
    name = key(spec)
    marks = [name.find(c) for c in "*?[" if c in name]
    try:
        if marks:  # a glob: list below its fixed part, keep the matches
            root = name[: min(marks)].rsplit("/", 1)[0]
        elif fs.get_file_info(name).type == pafs.FileType.File:
            root = ""
        else:  # a prefix
            root = name.rstrip("/")
        found = [name]
        if root:
            selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
            found = [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
        if marks:
            found = [p for p in found if fnmatch.fnmatchcase(p, name)]
    except OSError as exc:
        raise InputError(f"cannot list {uri(spec)}: {exc}") from None
    files = sorted(p for p in found if p.lower().endswith(suffixes))
    if not files:
        raise InputError(f"{uri(spec)}: no .parquet or .jsonl objects found")
    return [Path(SCHEME + p) for p in files]


def files_under(prefix: str | os.PathLike[str]) -> list[Path]:
    """Every object under a remote prefix (``s3://bucket/dir``), in key order."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(key(prefix).rstrip("/"), recursive=True, allow_not_found=True)
    try:
        infos = filesystem().get_file_info(selector)
    except OSError as exc:
        raise EmbedgenError(f"cannot list {uri(prefix)}: {exc}") from None
    return sorted(Path(SCHEME + i.path) for i in infos if i.type == pafs.FileType.File)


def upload(local: Path, remote: str | os.PathLike[str]) -> None:
    """Copy a finished local file to ``remote``: to a temporary key first, then into place
    with one server-side copy, so the final key only ever holds a complete object."""
    fs = filesystem()
    final = key(remote)
    tmp = f"{final.rsplit('/', 1)[0]}/.{final.rsplit('/', 1)[-1]}.tmp-{os.getpid()}"
    try:
        with open(local, "rb") as src, fs.open_output_stream(tmp, compression=None) as dst:
            while chunk := src.read(8 * 1024 * 1024):
                dst.write(chunk)
        fs.move(tmp, final)
    except OSError as exc:
        _delete(fs, tmp)
        raise EmbedgenError(f"cannot write {uri(remote)}: {exc}") from None
    except BaseException:
        _delete(fs, tmp)
        raise


def delete(remote: str | os.PathLike[str]) -> None:
    """Remove a remote object if it is there."""
    _delete(filesystem(), key(remote))


def _delete(fs: Any, name: str) -> None:
    with contextlib.suppress(OSError):
        fs.delete_file(name)
