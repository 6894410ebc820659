"""Voyage and Cohere are asked for int8/binary themselves when the output type is one.

Loopback servers check the request fields (``output_dtype``, ``embedding_types``) and
answer quantized vectors; the output holds the API's own codes and bits, unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.pipeline.vectors import column_format, read_float
from tests.api_servers import ApiServer, quantized, vector_for

runner = CliRunner()
KEY = "sk-test-0123456789abcdef"
DIM = 16
MODELS = {"voyage": "voyage-3.5", "cohere": "embed-v4.0"}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOYAGE_API_KEY", KEY)
    monkeypatch.setenv("CO_API_KEY", KEY)


def _config(tmp_path: Path, kind: str, server: ApiServer) -> Path:
    base = server.url + ("/v1" if kind == "voyage" else "")
    path = tmp_path / f"{kind}.toml"
    path.write_text(
        f'[run]\nproviders = ["api"]\n\n[providers.api]\nkind = "{kind}"\n'
        f'base_url = "{base}"\ndimensions = {DIM}\nmax_retries = 0\n',
        "utf-8",
    )
    return path


def _run(kind: str, server: ApiServer, tmp_path: Path, src: Path, *args: str) -> Path:
    out = tmp_path / f"out-{len(server.records)}.parquet"
    cfg = _config(tmp_path, kind, server)
    result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out), "-q", *args])
    assert result.exit_code == 0, result.output
    return out


def _asked(kind: str, server: ApiServer) -> object:
    body = server.records[-1].body
    return body.get("output_dtype") if kind == "voyage" else body.get("embedding_types")


@pytest.mark.parametrize("kind", ["voyage", "cohere"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_native_output_is_asked_for_and_written_unchanged(
    kind: str, dtype: str, write_parquet, tmp_path: Path
) -> None:
    texts = [f"text number {i}" for i in range(12)]
    src = write_parquet({"text": texts})
    with ApiServer(kind, key=KEY, dim=DIM, model=MODELS[kind]) as server:
        out = _run(kind, server, tmp_path, src, "--vector-dtype", dtype)
        assert _asked(kind, server) == (dtype if kind == "voyage" else [dtype])
        floats = [vector_for(t, DIM, MODELS[kind]).tolist() for t in texts]
        want = np.asarray(quantized(floats, dtype))
        column = pq.read_table(out).column("embedding").combine_chunks()
        stored = np.frombuffer(column.buffers()[1], dtype=np.int8 if "u" not in dtype else np.uint8)
        assert np.array_equal(stored.reshape(len(texts), -1), want), "codes changed on the way"
        back = read_float(out)
        if dtype in ("binary", "ubinary"):
            assert np.array_equal(back, np.where(np.asarray(floats) > 0, 1.0, -1.0))
        else:
            assert np.array_equal(back, want.astype(np.float32))
            fmt = column_format(pq.read_schema(out).metadata)
            assert fmt.ranges is not None and "native" in fmt.ranges.source

        again = _run(kind, server, tmp_path, src)  # float32: the float vectors, not the codes
        assert _asked(kind, server) == (None if kind == "voyage" else ["float"])
        assert np.allclose(read_float(again), floats, atol=1e-6)


def test_types_an_api_cannot_answer_are_made_locally(write_parquet, tmp_path: Path) -> None:
    src = write_parquet({"text": ["alpha", "beta", "gamma"]})
    with ApiServer("voyage", key=KEY, dim=DIM, model=MODELS["voyage"]) as server:
        out = _run("voyage", server, tmp_path, src, "--vector-dtype", "float16")
        assert _asked("voyage", server) is None
        assert str(pq.read_schema(out).field("embedding").type.value_type) == "halffloat"


def test_a_chain_asks_for_floats(write_parquet, tmp_path: Path) -> None:
    """A fallback member's floats must never be written as an API's codes: chains quantize."""
    src = write_parquet({"text": [f"item {i}" for i in range(5)]})
    with ApiServer("voyage", key=KEY, dim=DIM, model=MODELS["voyage"]) as server:
        cfg = _config(tmp_path, "voyage", server)
        text = cfg.read_text("utf-8").replace('providers = ["api"]', 'providers = ["api", "b"]')
        table = text.split("[providers.api]")[1]
        cfg.write_text(text + "\n[providers.b]" + table, "utf-8")
        out = tmp_path / "chain.parquet"
        args = ["run", str(src), "-c", str(cfg), "-o", str(out), "-q", "--vector-dtype", "int8"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert _asked("voyage", server) is None
        fmt = column_format(pq.read_schema(out).metadata)
        assert fmt.ranges is not None and "fitted" in fmt.ranges.source
