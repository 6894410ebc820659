"""embedgen.util: durable atomic writes and byte sizes, on real files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from embedgen.util.atomic import atomic_write_bytes, atomic_write_text, replace_durably
from embedgen.util.sizes import format_bytes, parse_size


@pytest.mark.parametrize(
    ("n", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
     (5 * 1024**2, "5.0 MiB"), (int(2.3 * 1024**3), "2.3 GiB"), (3 * 1024**4, "3.0 TiB"),
     (-2048, "-2.0 KiB")],
)  # fmt: skip
def test_format_bytes(n: int, shown: str) -> None:
    assert format_bytes(n) == shown


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2GB", 2 * 1024**3), ("512MiB", 512 * 1024**2), ("1.5G", int(1.5 * 1024**3)),
     ("64KiB", 64 * 1024), (" 10 kb ", 10 * 1024), ("100", 100), (1000, 1000), ("3T", 3 * 1024**4)],
)  # fmt: skip
def test_parse_size(value: int | str, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("bad", ["fast", "2 GBs", "-1", "", "1.2.3M"])
def test_parse_size_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="expected a size such as 2GB"):
        parse_size(bad)


def test_parse_size_rejects_negative_and_bool() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        parse_size(-5)
    with pytest.raises(ValueError):
        parse_size(True)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder (tmp_path also holds the test's home)."""
    (tmp_path / "w").mkdir()
    return tmp_path / "w"


def test_atomic_write_creates_and_replaces_leaving_no_temporary(folder: Path) -> None:
    target = folder / "state.json"
    atomic_write_text(target, '{"a": 1}\n')
    assert target.read_bytes() == b'{"a": 1}\n'  # no newline translation, on any OS
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in folder.iterdir()] == ["state.json"]


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(folder: Path) -> None:
    target = folder / "taken"
    target.mkdir()  # a folder in the way: the rename fails
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in folder.iterdir()) == ["taken"]


def test_concurrent_writers_never_share_a_temporary_name(folder: Path) -> None:
    import threading

    target = folder / "shared.txt"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(50):
                atomic_write_text(target, f"writer {i}\n" * 100)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1 and lines.pop().startswith("writer ")  # one writer's whole file
    assert [p.name for p in folder.iterdir()] == ["shared.txt"]


def _record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record fsync (by the path of the descriptor) and replace, in order (Linux /proc)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux_only
def test_atomic_write_syncs_the_file_then_renames_then_syncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _record_syncs(monkeypatch)
    atomic_write_text(tmp_path / "ledger.json", "{}")
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].startswith(str(tmp_path / ".ledger.json.")) and events[0][1].endswith(
        ".tmp"
    )
    assert events[1][1].endswith(f" -> {tmp_path / 'ledger.json'}")
    assert events[2][1] == str(tmp_path)


@linux_only
def test_replace_durably_syncs_a_streamed_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, dst = tmp_path / ".out.parquet.tmp-1", tmp_path / "out.parquet"
    tmp.write_bytes(b"rows")
    events = _record_syncs(monkeypatch)
    replace_durably(tmp, dst)
    assert events == [
        ("fsync", str(tmp)),
        ("replace", f"{tmp} -> {dst}"),
        ("fsync", str(tmp_path)),
    ]
    assert dst.read_bytes() == b"rows" and not tmp.exists()


@linux_only
def test_output_writer_finish_syncs_before_it_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finished Parquet file is on disk before it gets the output's name (#10)."""
    import numpy as np
    import pyarrow as pa

    from embedgen.pipeline.write import OutputWriter

    out = tmp_path / "out.parquet"
    writer = OutputWriter(
        out, dim=4, dtype="float32", with_text=False, id_type=pa.int64(), keep_schema=None,
        with_model=False, metadata={"model": "test"},
    )  # fmt: skip
    columns = {"id": [0, 1], "chunk": [0, 0], "char_start": [0, 0], "char_end": [3, 3],
               "tokens": [1, 1]}  # fmt: skip
    writer.write(columns, np.ones((2, 4), dtype=np.float32))
    events = _record_syncs(monkeypatch)
    assert writer.finish() == out
    renames = [i for i, (kind, _) in enumerate(events) if kind == "replace"]
    assert len(renames) == 1, events
    before, after = events[: renames[0]], events[renames[0] + 1 :]
    assert ("fsync", str(writer.tmp)) in before, events
    assert ("fsync", str(tmp_path)) in after, events
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 2
