"""Reading corpora: Parquet and JSONL (optionally gzipped), streamed in batches.

An input is a file, a directory (every supported file in it, sorted) or a glob.
Documents come out as :class:`DocBatch` objects of at most ``batch_rows`` rows;
nothing reads a whole file into memory.
"""

from __future__ import annotations

import glob as globlib
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedgen.errors import DataError, InputError
from embedgen.util import storage

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
_BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark Windows editors put at the start of a file: skipped."""
PARQUET_SUFFIXES = (".parquet", ".pq")


def input_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise InputError(
        f"{path}: unknown input format; expected .parquet, .jsonl or .ndjson (optionally .gz)"
    )


def discover_inputs(spec: str | Path) -> list[Path]:
    """Files named by a path, a directory or a glob (local, or ``s3://``), in a stable order."""
    text = str(spec)
    if storage.is_remote(text):
        return storage.list_inputs(text, PARQUET_SUFFIXES + JSONL_SUFFIXES)
    path = Path(text).expanduser()
    if path.is_file():
        input_format(path)
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES + JSONL_SUFFIXES)
        )
        if not files:
            raise InputError(f"{path}: directory has no .parquet or .jsonl files")
        return files
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
        files = [p for p in files if p.name.lower().endswith(PARQUET_SUFFIXES + JSONL_SUFFIXES)]
        if not files:
            raise InputError(f"{text}: no .parquet or .jsonl files match")
        return files
    raise InputError(f"input not found: {text}")


@dataclass
class Skip:
    """A document that was not embedded, and why."""

    reason: str
    file: str
    row: int
    """0-based over all inputs (the row-number id); the sidecar file counts from 1."""
    id: Any = None
    line: int | None = None

    def to_json(self) -> str:
        # rows count from 1, as lines do: row 1 is the input's first row
        data = {"id": self.id, "file": self.file, "row": self.row + 1, "reason": self.reason}
        if self.line is not None:
            data["line"] = self.line
        return json.dumps(data, default=str, ensure_ascii=False)


@dataclass
class DocBatch:
    """Consecutive documents of one input file."""

    ids: list[Any]
    texts: list[str | None]
    keep: Any = None
    """A pyarrow Table of passthrough columns, one row per document, or None."""
    skips: list[Skip] = field(default_factory=list)
    """Rows dropped before reaching ``texts`` (malformed JSONL lines, bad values)."""
    rows: int = 0
    """Input rows this batch consumed (documents plus dropped rows)."""
    file: str = ""
    row_numbers: list[int] = field(default_factory=list)
    """Global row number of each document in ``texts``."""
    lines: list[int] | None = None
    """JSONL line number of each document in ``texts``."""

    def skip(self, i: int, reason: str) -> Skip:
        """A :class:`Skip` for document ``i`` of this batch."""
        line = self.lines[i] if self.lines is not None else None
        return Skip(reason, self.file, self.row_numbers[i], id=self.ids[i], line=line)


@dataclass(frozen=True)
class ReadOptions:
    text_column: str = "text"
    id_column: str | None = None
    keep: tuple[str, ...] = ()
    on_error: str = "fail"
    batch_rows: int = 2048


def count_rows(paths: list[Path]) -> int | None:
    """Total rows when every input is Parquet (cheap: footers only), else None."""

    total = 0
    for p in paths:
        if input_format(p) != "parquet":
            return None
        try:
            total += parquet_file(p).metadata.num_rows
        except Exception:
            return None
    return total


def has_column(paths: Sequence[Path], name: str) -> bool:
    """Whether every input has a column ``name`` (a JSONL file: its first record has it)."""
    import pyarrow as pa

    for path in paths:
        try:
            if input_format(path) == "parquet":
                if name not in parquet_file(path).schema_arrow.names:
                    return False
                continue
            with open_text(path) as fh:
                first = next((raw for raw in fh if raw.strip()), b"")
            rec = _parse_line(first.removeprefix(_BOM))[0]
        except (pa.ArrowException, OSError, EOFError, gzip.BadGzipFile, InputError):
            return False  # the reader reports it, with its own message
        if not isinstance(rec, dict) or name not in rec:
            return False
    return bool(paths)


def read_documents(paths: list[Path], opts: ReadOptions) -> Iterator[DocBatch]:
    """Every document of every input, in order, in batches; row ids are global."""
    row0 = 0
    for path in paths:
        for batch in read_file(path, opts, row0):
            row0 += batch.rows
            yield batch


def read_file(path: Path, opts: ReadOptions, row0: int = 0) -> Iterator[DocBatch]:
    """The documents of one input file, numbered from global row ``row0``."""
    reader = _read_parquet if input_format(path) == "parquet" else _read_jsonl
    yield from reader(path, opts, row0)


READ_BUFFER = 1 << 20
"""A local Parquet file is read through a buffer of this many bytes: by default Arrow reads
each column chunk of a row group whole, so memory grew with the file's row-group size (one
500,000-row group: 156 MB peak against 113 MB for the same rows in 10,000-row groups; read
through the buffer, 113 MB, at the same speed). Object storage keeps pre-buffering, which
coalesces its range requests."""


def parquet_file(path: Path) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` of a local or ``s3://`` input (read by ranges)."""
    import pyarrow.parquet as pq

    if storage.is_remote(path):
        return pq.ParquetFile(storage.open_input(path))
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER)


def _read_parquet(path: Path, opts: ReadOptions, row0: int) -> Iterator[DocBatch]:
    import pyarrow as pa

    try:
        pf = parquet_file(path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    names = schema.names
    wanted = [opts.text_column] + ([opts.id_column] if opts.id_column else []) + list(opts.keep)
    for col in wanted:
        if col not in names:
            raise InputError(f"{path}: no column {col!r}; columns are: {', '.join(names)}")
    ttype = schema.field(opts.text_column).type
    if not (
        pa.types.is_string(ttype)
        or pa.types.is_large_string(ttype)
        or pa.types.is_binary(ttype)
        or pa.types.is_large_binary(ttype)
    ):
        raise InputError(f"{path}: column {opts.text_column!r} is {ttype}, not text")
    columns = list(dict.fromkeys(wanted))
    row = row0
    try:
        for rb in _batches(pf, opts.batch_rows, columns):
            n = rb.num_rows
            skips: list[Skip] = []
            texts = _texts(rb.column(opts.text_column), path, row, skips)
            ids = (
                rb.column(opts.id_column).to_pylist()
                if opts.id_column
                else list(range(row, row + n))
            )
            keep = pa.Table.from_batches([rb.select(list(opts.keep))]) if opts.keep else None
            yield DocBatch(
                ids=ids,
                texts=texts,
                keep=keep,
                skips=skips,
                rows=n,
                file=storage.uri(path),
                row_numbers=list(range(row, row + n)),
            )
            row += n
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: corrupt Parquet data after row {row} ({_first_line(exc)})"
        ) from None


def _batches(pf: Any, size: int, columns: list[str]) -> Iterator[Any]:
    """The record batches of ``pf``, one row group at a time.

    ``iter_batches`` over the whole file pre-buffers each row group it reaches and keeps
    them all until the file is done: the run's own memory grew with the input (Arrow held
    92 MB after 1,000,000 short rows, #23). Per row group, each group's buffers go with it.
    """
    for group in range(pf.num_row_groups):
        yield from pf.iter_batches(batch_size=size, columns=columns, row_groups=[group])


def _texts(column: Any, path: Path, row: int, skips: list[Skip]) -> list[str | None]:
    """A batch's texts; a value that is not valid UTF-8 (binary, or a string column written
    without validation) is skipped with a reason."""
    import pyarrow as pa

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            return column.to_pylist()  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            large = pa.types.is_large_string(column.type)
            column = column.view(pa.large_binary() if large else pa.binary())
    return [_decode(t, path, row + i, skips) for i, t in enumerate(column.to_pylist())]


def _decode(value: bytes | None, path: Path, row: int, skips: list[Skip]) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        skips.append(Skip("text is not valid UTF-8", str(path), row))
        return None


def open_text(path: Path) -> io.BufferedReader | gzip.GzipFile:
    """A JSONL input's bytes, gunzipped when its name ends in ``.gz``."""
    if storage.is_remote(path):
        stream: io.BufferedReader = storage.open_stream(path)
        return stream
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror}") from None


def _read_jsonl(path: Path, opts: ReadOptions, row0: int) -> Iterator[DocBatch]:
    import pyarrow as pa

    ids: list[Any] = []
    texts: list[str | None] = []
    keep_rows: list[dict[str, Any]] = []
    skips: list[Skip] = []
    rows_of: list[int] = []
    lines_of: list[int] = []
    row = start = row0
    seen_text = False
    keys_seen: set[str] = set()

    def flush() -> DocBatch:
        nonlocal start
        keep = pa.Table.from_pylist(keep_rows) if opts.keep else None
        if keep is not None and keep.num_columns == 0:
            keep = None
        out = DocBatch(
            ids=list(ids),
            texts=list(texts),
            keep=keep,
            skips=list(skips),
            rows=row - start,
            file=storage.uri(path),
            row_numbers=list(rows_of),
            lines=list(lines_of),
        )
        start = row
        return out

    with open_text(path) as fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                if not raw.strip():
                    continue
                rec, problem = _parse_line(raw)
                if problem is not None or not isinstance(rec, dict):
                    problem = problem or f"expected a JSON object, got {type(rec).__name__}"
                    msg = f"{path}:{lineno}: malformed JSONL line ({problem})"
                    if opts.on_error != "skip":
                        raise DataError(msg + "; fix it or pass --on-error skip")
                    skips.append(
                        Skip(f"malformed JSONL line ({problem})", str(path), row, line=lineno)
                    )
                    row += 1
                    continue
                if len(keys_seen) < 256:
                    keys_seen.update(rec)
                text = rec.get(opts.text_column)
                seen_text = seen_text or opts.text_column in rec
                if text is not None and not isinstance(text, str):
                    skips.append(
                        Skip(
                            f"text is {type(text).__name__}, not a string",
                            str(path),
                            row,
                            id=rec.get(opts.id_column) if opts.id_column else row,
                            line=lineno,
                        )
                    )
                    row += 1
                    continue
                if opts.id_column and opts.id_column not in rec:
                    skips.append(Skip(f"no {opts.id_column!r} field", str(path), row, line=lineno))
                    row += 1
                    continue
                ids.append(rec[opts.id_column] if opts.id_column else row)
                texts.append(text)
                rows_of.append(row)
                lines_of.append(lineno)
                if opts.keep:
                    keep_rows.append({k: rec.get(k) for k in opts.keep})
                row += 1
                if len(texts) >= opts.batch_rows:
                    _check_text_column(path, opts, seen_text, keys_seen)
                    yield flush()
                    for buf in (ids, texts, keep_rows, skips, rows_of, lines_of):
                        buf.clear()
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from None
    if texts or skips:
        if texts:
            _check_text_column(path, opts, seen_text, keys_seen)
        yield flush()


def _check_text_column(path: Path, opts: ReadOptions, seen: bool, keys: set[str]) -> None:
    if not seen:
        raise InputError(
            f"{path}: no field {opts.text_column!r} in the records; fields are: "
            f"{', '.join(sorted(keys)) or 'none'}"
        )


def _parse_line(raw: bytes) -> tuple[Any, str | None]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 at byte {exc.start}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at column {exc.colno}"
    if "\\u" in line:  # only an escape can make a lone surrogate, which no encoder takes
        try:
            json.dumps(rec, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            return None, f"lone surrogate \\u{ord(exc.object[exc.start]):04x} in a string"
    return rec, None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
