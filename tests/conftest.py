"""Shared fixtures: every test gets its own cache, model and config directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.s3_server import s3_store  # noqa: F401  (a fixture: moto's S3 server on loopback)

_CLEARED_PREFIXES = ("EMBEDGEN_", "HF_", "OPENAI_", "AZURE_", "VOYAGE_", "COHERE_", "MISTRAL_")


@pytest.fixture(scope="session")
def default_variant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model's int8 variant, built once for the session (about 4 s)."""
    from embedgen.models import default_variant as dv
    from embedgen.models.local import DEFAULT_SHA256, original_default_model

    folder = tmp_path_factory.mktemp("variant") / ".default" / dv.FOLDER_NAME
    dv.prepare(folder, original_default_model().onnx_path, DEFAULT_SHA256, announce=False)
    return folder


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_variant: Path) -> Path:
    """A clean environment with private cache, models and config directories.

    The models directory starts with the default's int8 variant already built (hard links
    to the session's build, which every run verifies by sha256): a test that alters it
    must replace the file, not write into it.
    """
    for key in list(os.environ):
        if key.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "_home"
    for sub in ("cache", "models", "config", "data"):
        (home / sub).mkdir(parents=True)
    variant = home / "models" / ".default" / default_variant.name
    variant.mkdir(parents=True)
    for f in default_variant.iterdir():
        os.link(f, variant / f.name)
    monkeypatch.setenv("EMBEDGEN_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("EMBEDGEN_MODELS_DIR", str(home / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    return home


@pytest.fixture
def write_parquet(tmp_path: Path):
    """Write a dict of columns to a Parquet file in tmp_path and return its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def _write(columns: dict, name: str = "corpus.parquet") -> Path:
        path = tmp_path / name
        pq.write_table(pa.table(columns), path)
        return path

    return _write


@pytest.fixture
def write_jsonl(tmp_path: Path):
    """Write raw lines (str or bytes) to a JSONL file in tmp_path and return its path."""

    def _write(lines: list, name: str = "corpus.jsonl") -> Path:
        path = tmp_path / name
        data = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
        path.write_bytes(data)
        return path

    return _write


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL with pgvector (the ``pgserver`` wheel), on a Unix socket, for the
    session; stopped and removed at the end. Yields its DSN (trust authentication).

    The folder is a fresh one under the system temp dir, not pytest's: run as root,
    pgserver starts the server as its own user, who cannot enter pytest's private folder.
    """
    pgserver = pytest.importorskip("pgserver")
    import shutil
    import tempfile
    import warnings

    folder = tempfile.mkdtemp(prefix="embedgen-pg-")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(folder, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: str):
    """The session's PostgreSQL, with every table of the public schema dropped first."""
    import psycopg

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    return pg_server
