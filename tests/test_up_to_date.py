"""A re-run whose output already holds its rows says "up to date" and writes nothing (#22).

The finished file's footer carries a stamp of what decided its rows; anything that could
change a row (a setting, the model, an input's size or modification time, the file itself)
runs again, and ``rerun_unchanged`` always does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedgen import embed_corpus
from embedgen.cache import CacheAdmin
from embedgen.pipeline.up_to_date import COUNTS, STAMP
from tests.cache_corpus import sentences, write_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path, dict[str, object]]:
    path = write_corpus(
        tmp_path / "in.parquet", [f"d{i}" for i in range(12)], sentences(12, seed=5)
    )
    opts: dict[str, object] = {"cache_dir": str(tmp_path / "cache"), "quiet": True}
    return path, tmp_path / "out.parquet", opts


def _footprint(path: Path) -> tuple[int, bytes]:
    return path.stat().st_mtime_ns, path.read_bytes()


def test_a_second_identical_run_writes_nothing(corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, out, opts = corpus
    first = embed_corpus(src, out, **opts)
    assert not first.up_to_date and first.computed == first.chunks > 0
    meta = pq.read_metadata(out).metadata
    assert STAMP.encode() in meta and COUNTS.encode() in meta
    before = _footprint(out)
    again = embed_corpus(src, out, log_file=str(tmp_path / "other.log"), **opts)
    assert again.up_to_date
    assert _footprint(out) == before
    assert (again.documents, again.chunks, again.tokens) == (
        first.documents,
        first.chunks,
        first.tokens,
    )
    assert (again.cached, again.computed) == (first.chunks, 0)
    assert any("up to date" in line for line in again.lines())
    with CacheAdmin.open(Path(str(opts["cache_dir"])), readonly=True) as cache:
        last = cache.last_run()
    assert last is not None and last["hits"] == first.chunks and last["misses"] == 0


@pytest.mark.parametrize(
    "change",
    [
        "touch the input",
        "another setting",
        "rerun_unchanged",
        "no cache",
        "a damaged output",
        "a foreign file",
    ],  # fmt: skip
)
def test_what_could_change_a_row_runs_again(corpus, change: str) -> None:  # type: ignore[no-untyped-def]
    src, out, opts = corpus
    first = embed_corpus(src, out, **opts)
    extra: dict[str, object] = {}
    if change == "touch the input":
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "another setting":
        extra["no_text"] = True  # another column set, the same vectors
    elif change == "rerun_unchanged":
        extra["rerun_unchanged"] = True
    elif change == "no cache":
        extra["use_cache"] = False
    elif change == "a damaged output":
        out.write_bytes(out.read_bytes()[:-100])
    else:
        pq.write_table(pq.read_table(out).replace_schema_metadata(None), out)
    again = embed_corpus(src, out, **opts, **extra)
    assert not again.up_to_date
    assert again.chunks == first.chunks
    # from the cache, and rewritten (without it, computed again)
    assert again.computed == (first.chunks if change == "no cache" else 0)
    stamped = STAMP.encode() in pq.read_metadata(out).metadata
    assert stamped == (change not in ("rerun_unchanged", "no cache"))  # these always run


def test_a_run_with_skips_needs_its_skip_list(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"id": 1, "text": "one"}\nnot json\n{"id": 2, "text": "two"}\n', encoding="utf-8"
    )
    out = tmp_path / "out.parquet"
    opts: dict[str, object] = {
        "cache_dir": str(tmp_path / "cache"),
        "quiet": True,
        "on_error": "skip",
    }
    first = embed_corpus(src, out, **opts)
    assert first.skipped == 1 and first.skipped_path is not None
    assert embed_corpus(src, out, **opts).up_to_date
    first.skipped_path.unlink()
    again = embed_corpus(src, out, **opts)
    assert not again.up_to_date and again.skipped == 1 and first.skipped_path.is_file()
