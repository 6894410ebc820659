"""``embedgen run --sparse`` on the bge-m3 stand-in: a sparse column of lexical weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import HubServer, bge_m3_repo
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.models.local import resolve_model
from embedgen.providers.sparse import special_token_ids

runner = CliRunner()
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Sparse weights for lexical search."]


@pytest.fixture(params=[False, True], ids=["head-file", "graph-output"])
def bge_downloaded(request, tmp_path_factory, monkeypatch, tmp_path) -> Path:
    repo = bge_m3_repo(tmp_path_factory.mktemp("bge"), hidden=64, sparse_output=request.param)
    server = HubServer()
    server.add(repo)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    try:
        result = runner.invoke(app, ["download", "bge-m3", "--dim", "64"])
        if result.exit_code != 0:  # the registry pins 1024-d; an explicit --dim may be refused
            result = runner.invoke(app, ["download", "bge-m3"])
        assert result.exit_code == 0, result.output
    finally:
        server.stop()
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return src


def test_sparse_column(bge_downloaded: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        app, ["run", str(bge_downloaded), "--model", "bge-m3", "--sparse", "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    sparse_type = table.schema.field("sparse").type
    assert pa.types.is_map(sparse_type)
    assert (sparse_type.key_type, sparse_type.item_type) == (pa.int32(), pa.float32())
    special = special_token_ids(resolve_model("bge-m3").tokenizer_path)
    for row in table.column("sparse").to_pylist():
        assert row, "every text has some lexical weight"
        ids = [k for k, _ in row]
        assert len(ids) == len(set(ids)) and not set(ids) & special
        assert all(v > 0 and np.isfinite(v) for _, v in row)
    # a second run (cache warm) still gives the same sparse weights
    out2 = tmp_path / "out2.parquet"
    again = runner.invoke(
        app, ["run", str(bge_downloaded), "--model", "bge-m3", "--sparse", "-o", str(out2), "-q"]
    )
    assert again.exit_code == 0, again.output
    assert pq.read_table(out2).column("sparse").to_pylist() == table.column("sparse").to_pylist()


def test_sparse_needs_a_sparse_head(write_parquet) -> None:
    result = runner.invoke(app, ["run", str(write_parquet({"text": TEXTS})), "--sparse", "-q"])
    assert result.exit_code == 1
    assert "--sparse needs a model with a sparse head" in result.output
