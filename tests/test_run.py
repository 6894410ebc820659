"""embedgen run end to end on the embedded default model: inputs, outputs, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import embedgen
from embedgen.cli import app

runner = CliRunner()

TEXTS = [
    "The cat sat on the mat.",
    "Embeddings map text to vectors.",
    "Parquet is a columnar storage format.",
    "A short one.",
]


def invoke(*args: str):
    return runner.invoke(app, ["run", *args, "--quiet"])


def test_parquet_in_parquet_out_schema_and_metadata(write_parquet, tmp_path: Path) -> None:
    src = write_parquet({"doc": ["a", "b", "c", "d"], "text": TEXTS, "lang": ["en"] * 4})
    result = invoke(str(src), "--id-column", "doc", "--keep", "lang")
    assert result.exit_code == 0, result.output
    out = tmp_path / "corpus.embeddings.parquet"
    table = pq.read_table(out)
    assert table.column_names == [
        "id",
        "chunk",
        "char_start",
        "char_end",
        "tokens",
        "text",
        "embedding",
        "lang",
    ]
    assert table.schema.field("embedding").type.list_size == 384
    assert str(table.schema.field("embedding").type.value_type) == "float"
    assert table.column("id").to_pylist() == ["a", "b", "c", "d"]
    assert table.column("lang").to_pylist() == ["en"] * 4
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["embedgen.model"] == "all-minilm-l6-v2-int8"  # the fast int8 default
    # ... and the Hub id of the model it is a variant of, for other tools to find (#24)
    assert meta["embedgen.source_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["embedgen.dim"] == "384"
    assert meta["embedgen.pooling"] == "mean"
    assert meta["embedgen.normalize"] == "true"
    assert meta["embedgen.version"] == embedgen.__version__
    from embedgen.models.local import default_model, sha256_file

    variant = default_model()  # the int8 variant built on the first run, verified by sha256
    assert f"sha256={sha256_file(variant.onnx_path)}" in meta["embedgen.fingerprint"]
    vecs = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert not (tmp_path / "corpus.embeddings.skipped.jsonl").exists()
    assert not list(tmp_path.glob(".*tmp*"))


def test_jsonl_gz_and_row_number_ids(write_jsonl, tmp_path: Path) -> None:
    plain = write_jsonl([json.dumps({"text": t}) for t in TEXTS])
    gz = tmp_path / "corpus2.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    result = invoke(str(gz), "-o", str(tmp_path / "out.parquet"))
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == [0, 1, 2, 3]
    assert table.column("text").to_pylist() == TEXTS


def test_same_vectors_from_jsonl_and_parquet(write_jsonl, write_parquet, tmp_path) -> None:
    a = embedgen.embed_corpus(write_parquet({"text": TEXTS}), tmp_path / "a.parquet", quiet=True)
    b = embedgen.embed_corpus(
        write_jsonl([json.dumps({"text": t}) for t in TEXTS]), tmp_path / "b.parquet", quiet=True
    )
    assert a.chunks == b.chunks == 4
    va = pq.read_table(tmp_path / "a.parquet").column("embedding").to_pylist()
    vb = pq.read_table(tmp_path / "b.parquet").column("embedding").to_pylist()
    assert np.allclose(va, vb, atol=1e-6)


def test_directory_and_glob_inputs(write_parquet, write_jsonl, tmp_path: Path) -> None:
    d = tmp_path / "corpus"
    d.mkdir()
    write_parquet({"text": TEXTS[:2]}, name="corpus/a.parquet")
    write_jsonl([json.dumps({"text": t}) for t in TEXTS[2:]], name="corpus/b.jsonl")
    s = embedgen.embed_corpus(d, quiet=True)
    assert s.output == tmp_path / "corpus.embeddings.parquet"
    assert pq.read_table(s.output).column("text").to_pylist() == TEXTS
    assert pq.read_table(s.output).column("id").to_pylist() == [0, 1, 2, 3]
    s2 = embedgen.embed_corpus(str(d / "*.parquet"), tmp_path / "g.parquet", quiet=True)
    assert s2.documents == 2


def test_long_document_is_chunked_with_exact_offsets(write_parquet, tmp_path: Path) -> None:
    words = [f"word{i % 97} embedding-{i}" for i in range(1500)]
    doc = " ".join(words) + "."
    src = write_parquet({"text": [doc, "tiny"]})
    s = embedgen.embed_corpus(src, tmp_path / "o.parquet", quiet=True, max_tokens=64, overlap=8)
    t = pq.read_table(tmp_path / "o.parquet").to_pylist()
    doc_rows = [r for r in t if r["id"] == 0]
    assert len(doc_rows) > 10
    assert [r["chunk"] for r in doc_rows] == list(range(len(doc_rows)))
    for r in doc_rows:
        assert doc[r["char_start"] : r["char_end"]] == r["text"]
        assert 0 < r["tokens"] <= 62
    assert doc_rows[0]["char_start"] == 0 and doc_rows[-1]["char_end"] == len(doc)
    # overlap: each chunk starts before the previous one ended
    for prev, cur in zip(doc_rows, doc_rows[1:]):
        assert cur["char_start"] < prev["char_end"]
    assert t[-1]["id"] == 1 and t[-1]["text"] == "tiny"
    assert s.chunks == len(t)


def test_chunks_cover_the_document_without_overlap(write_parquet, tmp_path: Path) -> None:
    doc = "Alpha beta gamma delta. " * 400
    src = write_parquet({"text": [doc]})
    embedgen.embed_corpus(src, tmp_path / "o.parquet", quiet=True)
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert len(rows) > 1
    assert rows[0]["char_start"] == 0 and rows[-1]["char_end"] == len(doc.rstrip())
    for prev, cur in zip(rows, rows[1:]):
        assert prev["char_end"] <= cur["char_start"]
        assert doc[prev["char_end"] : cur["char_start"]].strip() == ""
    assert all(r["tokens"] <= 254 for r in rows)


def test_null_and_empty_text_are_skipped_and_listed(write_parquet, tmp_path: Path) -> None:
    src = write_parquet({"id": ["x", "y", "z"], "text": ["fine text", None, "   "]})
    result = invoke(str(src), "--id-column", "id")
    assert result.exit_code == 4
    assert "skipped" in result.output
    rows = pq.read_table(tmp_path / "corpus.embeddings.parquet").column("id").to_pylist()
    assert rows == ["x"]
    listed = [
        json.loads(x)
        for x in (tmp_path / "corpus.embeddings.skipped.jsonl").read_text().splitlines()
    ]
    assert [(x["id"], x["reason"]) for x in listed] == [("y", "null text"), ("z", "empty text")]


def test_missing_text_column_lists_columns(write_parquet) -> None:
    src = write_parquet({"body": ["a"], "title": ["b"]})
    result = invoke(str(src))
    assert result.exit_code == 2
    assert "no column 'text'" in result.output and "body, title" in result.output
    assert "Traceback" not in result.output


def test_missing_id_column(write_parquet) -> None:
    result = invoke(str(write_parquet({"text": ["a"]})), "--id-column", "doc_id")
    assert result.exit_code == 2 and "no column 'doc_id'" in result.output


def test_missing_text_field_in_jsonl(write_jsonl) -> None:
    result = invoke(str(write_jsonl(['{"body": "x"}'])))
    assert result.exit_code == 2 and "no field 'text'" in result.output and "body" in result.output


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "nope.parquet"))
    assert result.exit_code == 2 and "input not found" in result.output
    csv = tmp_path / "data.csv"
    csv.write_text("text\nhello\n")
    result = invoke(str(csv))
    assert result.exit_code == 2 and "unknown input format" in result.output


def test_malformed_jsonl_line_fails_with_line_number(write_jsonl, tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(5)]
    lines.insert(3, '{"text": "broken')
    src = write_jsonl(lines)
    result = invoke(str(src))
    assert result.exit_code == 1
    assert f"{src}:4: malformed JSONL line" in result.output
    assert "--on-error skip" in result.output
    assert not (tmp_path / "corpus.embeddings.parquet").exists()


def test_malformed_jsonl_line_skipped_on_request(write_jsonl, tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(5)]
    lines.insert(2, "not json at all")
    lines.insert(4, b'{"text": "caf\xe9"}')
    src = write_jsonl(lines)
    result = invoke(str(src), "--on-error", "skip")
    assert result.exit_code == 4, result.output
    texts = pq.read_table(tmp_path / "corpus.embeddings.parquet").column("text").to_pylist()
    assert texts == [f"doc {i}" for i in range(5)]
    listed = [
        json.loads(x)
        for x in (tmp_path / "corpus.embeddings.skipped.jsonl").read_text().splitlines()
    ]
    assert [x["line"] for x in listed] == [3, 5]
    assert "not UTF-8" in listed[1]["reason"]


def test_corrupt_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not really parquet")
    result = invoke(str(bad))
    assert result.exit_code == 1
    assert "not a readable Parquet file" in result.output
    assert "Traceback" not in result.output


def test_missing_model_folder(write_parquet, tmp_path: Path) -> None:
    result = invoke(str(write_parquet({"text": ["a"]})), "--model", str(tmp_path / "nomodel/"))
    assert result.exit_code == 1
    assert "not found" in result.output


def test_model_folder_without_onnx(write_parquet, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    result = invoke(str(write_parquet({"text": ["a"]})), "--model", str(folder))
    assert result.exit_code == 1 and "no ONNX file" in result.output


def test_bad_option_values(write_parquet) -> None:
    src = str(write_parquet({"text": ["a"]}))
    result = invoke(src, "--dtype", "int4")
    assert result.exit_code == 2 and "--dtype" in result.output
    result = invoke(src, "--device", "tpu")
    assert result.exit_code == 2 and "--device" in result.output
    result = invoke(src, "--batch-size", "0")
    assert result.exit_code == 2 and "--batch-size" in result.output


def test_explicit_unavailable_device_exits_2(write_parquet) -> None:
    result = invoke(str(write_parquet({"text": ["a"]})), "--device", "cuda")
    assert result.exit_code == 2
    assert "not available" in result.output and "onnxruntime" in result.output


def test_limit_dimensions_float16_no_text(write_parquet, tmp_path: Path) -> None:
    src = write_parquet({"text": TEXTS})
    s = embedgen.embed_corpus(
        src,
        tmp_path / "o.parquet",
        quiet=True,
        limit=3,
        dimensions=64,
        force_dimensions=True,
        dtype="float16",
        no_text=True,
    )
    t = pq.read_table(tmp_path / "o.parquet")
    assert s.documents == 3 and t.num_rows == 3
    assert "text" not in t.column_names
    assert t.schema.field("embedding").type.list_size == 64
    assert str(t.schema.field("embedding").type.value_type) == "halffloat"
    v = np.array(t.column("embedding").to_pylist(), dtype=np.float32)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=2e-3)


def test_matryoshka_truncation_is_renormalised_prefix(write_parquet, tmp_path: Path) -> None:
    src = write_parquet({"text": TEXTS})
    embedgen.embed_corpus(src, tmp_path / "full.parquet", quiet=True)
    embedgen.embed_corpus(
        src, tmp_path / "cut.parquet", quiet=True, dimensions=32, force_dimensions=True
    )
    full = np.array(pq.read_table(tmp_path / "full.parquet").column("embedding").to_pylist())
    cut = np.array(pq.read_table(tmp_path / "cut.parquet").column("embedding").to_pylist())
    expect = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    assert np.allclose(cut, expect, atol=1e-5)


def test_batching_does_not_change_vectors_or_order(write_parquet, tmp_path: Path) -> None:
    texts = [("word " * (i % 37 + 1)).strip() + f" {i}" for i in range(150)]
    src = write_parquet({"text": texts})
    embedgen.embed_corpus(src, tmp_path / "a.parquet", quiet=True, batch_size=1)
    embedgen.embed_corpus(src, tmp_path / "b.parquet", quiet=True, batch_size=64, sort_window=50)
    a = pq.read_table(tmp_path / "a.parquet")
    b = pq.read_table(tmp_path / "b.parquet")
    assert a.column("text").to_pylist() == texts == b.column("text").to_pylist()
    va, vb = (np.array(t.column("embedding").to_pylist()) for t in (a, b))
    assert np.min(np.sum(va * vb, axis=1)) > 0.9999


def test_output_in_unwritable_place_is_a_clear_error(write_parquet, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke(str(write_parquet({"text": ["a"]})), "-o", str(blocker / "out.parquet"))
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_summary_is_printed(write_parquet) -> None:
    result = runner.invoke(app, ["run", str(write_parquet({"text": TEXTS}))])
    assert result.exit_code == 0, result.output
    for word in ("documents: 4", "chunks:", "tokens:", "skipped:", "seconds:", "output:"):
        assert word in result.output


@pytest.mark.parametrize("bad", ["12", "[1,2]", "null"])
def test_jsonl_non_object_lines(write_jsonl, bad: str) -> None:
    result = invoke(str(write_jsonl(['{"text": "ok"}', bad])))
    assert result.exit_code == 1 and ":2: malformed JSONL line" in result.output


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_lone_surrogate_in_jsonl_is_a_bad_row(write_jsonl, tmp_path: Path, on_error: str) -> None:
    """A \\ud800 escape is valid JSON but no UTF-8: a malformed line, never a traceback."""
    src = write_jsonl(['{"text": "fine"}', r'{"text": "before \ud800 after"}', '{"text": "ok"}'])
    result = invoke(str(src), "--on-error", on_error)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    if on_error == "fail":
        assert result.exit_code == 1
        assert f"{src}:2: malformed JSONL line (lone surrogate \\ud800" in result.output
        return
    assert result.exit_code == 4, result.output
    texts = pq.read_table(tmp_path / "corpus.embeddings.parquet").column("text").to_pylist()
    assert texts == ["fine", "ok"]
    (listed,) = (tmp_path / "corpus.embeddings.skipped.jsonl").read_text().splitlines()
    assert json.loads(listed)["line"] == 2 and "lone surrogate" in json.loads(listed)["reason"]


def test_invalid_utf8_in_a_parquet_string_column_is_skipped(tmp_path: Path) -> None:
    """A string column written without UTF-8 validation (surrogate bytes): skipped, as binary."""
    import pyarrow as pa

    raw = [b"good text", b"before \xed\xa0\x80 after", b"more"]
    src = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": pa.array(raw, pa.binary()).view(pa.string())}), src)
    result = invoke(str(src))
    assert result.exit_code == 4, result.output
    texts = pq.read_table(tmp_path / "corpus.embeddings.parquet").column("text").to_pylist()
    assert texts == ["good text", "more"]
    skipped = (tmp_path / "corpus.embeddings.skipped.jsonl").read_text()
    assert "not valid UTF-8" in skipped and '"row": 2' in skipped


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_jsonl_with_a_utf8_bom(tmp_path: Path, name: str, on_error: str) -> None:
    """Windows editors start UTF-8 files with a BOM: the first document is read, not lost."""
    data = b"\xef\xbb\xbf" + "".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()
    src = tmp_path / name
    src.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    out = tmp_path / "out.parquet"
    result = invoke(str(src), "-o", str(out), "--on-error", on_error)
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("text").to_pylist() == TEXTS
    assert not (tmp_path / "out.skipped.jsonl").exists()


def test_queued_writes_keep_their_order_and_raise_a_failure() -> None:
    from embedgen.pipeline.write import QueuedWrites

    done: list[int] = []

    def write(i: int) -> None:
        if i == 5:
            raise OSError(28, "No space left on device")
        done.append(i)

    writes = QueuedWrites(write, max_pending=2)
    for i in range(5):
        writes.submit(i)
    writes.drain()
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(OSError, match="No space"):  # from the next submit, or the drain
        for i in range(5, 9):
            writes.submit(i)
        writes.drain()
    writes.drain(check=False)
    assert done[:5] == [0, 1, 2, 3, 4] and 5 not in done


def test_arrow_columns_built_from_buffers_equal_pa_array() -> None:
    import numpy as np
    import pyarrow as pa

    from embedgen.pipeline.write import arrow_array, id_arrow_type

    cases = [
        ([3, 1, 2], pa.int32()),
        ([2**40, -5], pa.int64()),
        (["a", "", "é – 中文", "x" * 300], pa.string()),
        ([], pa.string()),
        (np.array([0.5, -1.25], dtype=np.float32), pa.float32()),
        (np.array([0.5, 2.0], dtype=np.float16), pa.float16()),
        ([1, None], pa.int64()),  # nulls: pa.array's own path
        (["a", None], pa.string()),
    ]
    for values, arrow_type in cases:
        built = arrow_array(values, arrow_type)
        assert built.equals(pa.array(values, type=arrow_type)), (values, arrow_type)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        arrow_array([1, "b"], pa.int64())  # mixed types: pa.array's error
    with pytest.raises(pa.ArrowTypeError):
        arrow_array([True, 2], pa.int64())  # a bool is not taken for an int on the way
    assert id_arrow_type([1, 2]) == pa.int64() and id_arrow_type(["a"]) == pa.string()
    assert id_arrow_type([1.5, 2.0]) == pa.float64() and id_arrow_type([True]) == pa.bool_()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_input_column_named_id_gives_the_ids_and_the_run_says_so(
    fmt: str, write_jsonl, write_parquet, tmp_path: Path
) -> None:
    ids = ["doc-a", "doc-b", "doc-c"]
    if fmt == "jsonl":
        src = write_jsonl([json.dumps({"id": i, "text": t}) for i, t in zip(ids, TEXTS)])
    else:
        src = write_parquet({"id": ids, "text": TEXTS[:3]})
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["run", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("id").to_pylist() == ids
    assert "ids from the input's 'id' column" in result.output
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    assert invoke(str(plain), "-o", str(out)).exit_code == 0
    assert pq.read_table(out).column("id").to_pylist() == [0, 1, 2, 3]  # row numbers


def test_skipped_rows_and_lines_count_from_one_and_exit_4_is_a_warning(
    write_jsonl, write_parquet, tmp_path: Path
) -> None:
    src = write_jsonl([json.dumps({"text": t}) for t in ["one", "", "three", "   "]])
    result = invoke(str(src))
    assert result.exit_code == 4, result.output
    assert "warning: 2 document(s) skipped" in result.output
    assert "error:" not in result.output
    listed = [
        json.loads(x)
        for x in (tmp_path / "corpus.embeddings.skipped.jsonl").read_text().splitlines()
    ]
    assert [(x["row"], x["line"]) for x in listed] == [(2, 2), (4, 4)]
    pq_src = write_parquet({"text": ["one", None, "three"]})
    assert invoke(str(pq_src)).exit_code == 4
    (rec,) = (tmp_path / "corpus.embeddings.skipped.jsonl").read_text().splitlines()
    assert json.loads(rec)["row"] == 2  # the second row


def test_an_empty_input_warns_that_it_has_no_documents(write_jsonl, tmp_path: Path) -> None:
    src = write_jsonl(["", "   "])
    out = tmp_path / "out.parquet"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "WARNING the input has no documents" in result.output
    assert pq.read_table(out).num_rows == 0


def test_the_summary_reports_wall_time_model_preparation_included(write_parquet) -> None:
    """``seconds`` left out preparing the model (1.1 s reported for an 11.6 s first run)."""
    import time

    src = write_parquet({"text": TEXTS})
    embedgen.embed_corpus(src, quiet=True, use_cache=False)  # imports done
    started = time.perf_counter()
    summary = embedgen.embed_corpus(src, quiet=True, use_cache=False)
    wall = time.perf_counter() - started
    assert 0.97 * wall <= summary.seconds <= wall
    assert 0 < summary.embed_seconds <= summary.seconds
    assert "reading, embedding and writing" in summary.lines()[4]


def test_a_too_long_chunk_window_from_the_config_is_named_as_such(
    write_parquet, tmp_path: Path
) -> None:
    """The warning named ``--max-tokens 512`` when the value came from the config (#24)."""
    cfg = tmp_path / "w.toml"
    cfg.write_text("[bge_m3_local]\nmax_sequence_length = 512\n")
    result = invoke(str(write_parquet({"text": TEXTS})), "-c", str(cfg))
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "max tokens 512 (--max-tokens, run.max_tokens or max_sequence_length)" in flat
    assert "--max-tokens 512" not in flat


def test_unknown_names_get_a_suggestion_and_download_only_where_it_can_fetch(
    write_parquet, tmp_path: Path
) -> None:
    src = str(write_parquet({"text": TEXTS}))
    typo = invoke(src, "--model", "all-minilm-l6-v3")
    flat = " ".join(typo.output.split())
    assert typo.exit_code == 1 and "did you mean 'all-minilm-l6-v2'?" in flat
    assert "embedgen download all-minilm-l6-v3" not in flat  # it would fail
    known = " ".join(invoke(src, "--model", "bge-m3").output.split())
    assert "fetch it with `embedgen download bge-m3`" in known
    cfg = tmp_path / "c.toml"
    cfg.write_text("[run]\nbatchsize = 4\n")
    bad = invoke(src, "-c", str(cfg))
    assert bad.exit_code == 2 and "run.batchsize: unknown key; did you mean 'batch_size'?" in (
        " ".join(bad.output.split())
    )


@pytest.mark.parametrize("use_cache", [False, True])
def test_cached_duplicate_and_computed_chunks_add_up_to_the_total(
    write_parquet, tmp_path: Path, use_cache: bool
) -> None:
    """``--no-cache`` reported its duplicates as "cached" (#24)."""
    texts = [TEXTS[i % 3] for i in range(12)] + [TEXTS[3]]  # 4 distinct, 9 repeats
    src = write_parquet({"text": texts})
    first = embedgen.embed_corpus(src, tmp_path / "a.parquet", quiet=True, use_cache=use_cache)
    assert (first.cached, first.computed, first.duplicate, first.chunks) == (0, 4, 9, 13)
    assert "(0 cached, 4 computed, 9 duplicate)" in first.lines()[1]
    again = embedgen.embed_corpus(src, tmp_path / "b.parquet", quiet=True, use_cache=use_cache)
    want = (13, 0, 0) if use_cache else (0, 4, 9)
    assert (again.cached, again.computed, again.duplicate) == want


def test_cost_estimate_counts_repeats_as_duplicates_not_cached(write_parquet) -> None:
    src = write_parquet({"text": [TEXTS[i % 2] for i in range(10)]})
    result = runner.invoke(app, ["cost-estimate", str(src), "-p", "openai:text-embedding-3-small",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["providers"]
    assert (row["cached_pct"], row["cached_chunks"], row["duplicate_chunks"]) == (0.0, 0, 8)


def test_the_reader_thread_is_stopped_and_joined_when_the_run_ends_early() -> None:
    """A run that stops (Ctrl-C, an error) waits for its reader: one left inside Arrow or
    the tokenizer while the interpreter exits aborted the process (SIGABRT, exit -6, on
    Ctrl-C in CI), and one still reading the document index would outlive the cache."""
    import threading
    import time

    from embedgen.pipeline.run import read_ahead

    def slow_windows():  # type: ignore[no-untyped-def]
        for i in range(100):
            time.sleep(0.3)  # a window that takes a while to read and chunk
            yield i

    stop = threading.Event()
    reader = read_ahead(slow_windows(), stop, lambda w: None)
    assert next(reader) == 0
    reader.close()  # what the run does when it stops early
    assert stop.is_set()
    assert not [t for t in threading.enumerate() if t.name == "embedgen-reader"]

    def failing():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("bad row")

    reader = read_ahead(failing(), threading.Event(), lambda w: None)
    assert next(reader) == 1
    with pytest.raises(ValueError, match="bad row"):
        next(reader)
    assert not [t for t in threading.enumerate() if t.name == "embedgen-reader"]


def test_one_name_per_model_that_model_takes_back(write_parquet, tmp_path: Path) -> None:
    """The default had three names (all-MiniLM-L6-v2-qint8 in the output, -int8 for the
    packaged file, all-minilm-l6-v2 in the catalog). Now one scheme: the catalog's name and
    the variant; the name in the output and in `models` is one --model takes, and the cache
    keys made under the old names still hit (nothing is re-embedded after upgrading)."""
    import json as _json

    from embedgen.models.local import KEY_NAMES, ORIGINAL_NAME, default_model, resolve_model
    from embedgen.providers.onnx import model_fingerprint

    src = write_parquet({"doc": ["a", "b"], "text": TEXTS[:2]})
    first = invoke(str(src), "--id-column", "doc")
    assert first.exit_code == 0, first.output
    out = tmp_path / "corpus.embeddings.parquet"
    meta = pq.read_table(out).schema.metadata
    name = meta[b"embedgen.model"].decode()
    listed = _json.loads(runner.invoke(app, ["models", "--json"]).output)
    assert listed[0]["name"] == "default" and listed[0]["model"] == name
    assert name.startswith("all-minilm-l6-v2")
    assert "all-minilm-l6-v2" in {r["name"] for r in listed}
    again = runner.invoke(app, ["run", str(src), "--id-column", "doc", "--model", name,
                                "-o", str(tmp_path / "b.parquet")])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "(2 cached, 0 computed" in again.output  # the same model: all from the cache
    assert resolve_model(ORIGINAL_NAME).name == ORIGINAL_NAME
    settings = dict(pooling="mean", normalize=True, dimensions=None, prefix="", max_tokens=256,
                    dtype="float32")  # fmt: skip
    fp = model_fingerprint(default_model(), **settings)
    assert f"model={KEY_NAMES[name]}|" in fp  # the key made before the rename


def test_one_large_row_group_is_read_a_buffer_at_a_time(tmp_path: Path) -> None:
    """A file written as one row group (pq.write_table's default holds 1M rows) is streamed
    through a small buffer: reading each column chunk whole held 43 MB more at 500k rows."""
    import random

    import pyarrow as pa

    from embedgen.pipeline.read import ReadOptions, read_documents

    path = tmp_path / "one-group.parquet"
    rng = random.Random(0)
    words = [f"w{rng.randrange(10**6)}" for _ in range(5000)]
    texts = [" ".join(rng.choices(words, k=30)) for _ in range(150_000)]
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), path)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 1
    chunk = meta.row_group(0).column(1).total_compressed_size
    before, most, rows = pa.total_allocated_bytes(), 0, 0
    for docs in read_documents([path], ReadOptions(id_column="id")):
        rows += docs.rows
        most = max(most, pa.total_allocated_bytes() - before)
    assert rows == len(texts)
    assert most < chunk / 3, (most, chunk)  # read whole: 1.5x the text column chunk


def test_reading_a_large_parquet_file_keeps_arrow_memory_bounded(tmp_path: Path) -> None:
    """Reading row group after row group holds one group's buffers at a time: iterating the
    whole file kept every pre-buffered group (Arrow memory grew with the input, #23)."""
    import pyarrow as pa

    from embedgen.pipeline.read import ReadOptions, read_documents

    path = tmp_path / "big.parquet"
    text = "a sentence of about one hundred characters, repeated to fill the row groups. " * 2
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as w:
        for g in range(24):
            ids = list(range(g * 4000, (g + 1) * 4000))
            w.write_table(pa.table({"id": ids, "text": [f"{i} {text}" for i in ids]}))
    group_bytes = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    before, most, rows = pa.total_allocated_bytes(), 0, 0
    for docs in read_documents([path], ReadOptions(id_column="id")):
        rows += docs.rows
        most = max(most, pa.total_allocated_bytes() - before)
    assert rows == 24 * 4000
    assert most < 4 * group_bytes, (most, group_bytes)  # iterating the file: ~24 groups
