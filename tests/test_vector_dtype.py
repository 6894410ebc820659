"""``run --vector-dtype``: every output type written, described, read back as float.

The default model on the built-in sample sentences; the float32 output of the same run is
the reference each type must come back close to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import embedgen
from embedgen.cli import app
from embedgen.pipeline.vectors import column_format, read_float, to_float
from embedgen.util.quantize import (
    NOISE_FLOOR,
    VECTOR_DTYPES,
    Ranges,
    bytes_per_vector,
    decode,
    encode,
)

SAMPLE = Path(embedgen.__file__).parent / "data" / "sample" / "sentences.txt"
runner = CliRunner()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [t for t in SAMPLE.read_text("utf-8").splitlines() if t.strip()][:200]


def _run(src: Path, out: Path, **options: object) -> Any:
    return embedgen.embed_corpus(src, out, quiet=True, **options)


def test_every_type_reads_back_within_its_precision_and_never_re_embeds(
    write_parquet, tmp_path: Path, texts: list[str]
) -> None:
    src = write_parquet({"text": texts})
    first = _run(src, tmp_path / "float32.parquet")
    assert first.computed > 0
    ref = read_float(tmp_path / "float32.parquet")
    sizes = {}
    for dtype in VECTOR_DTYPES[1:]:
        out = tmp_path / f"{dtype}.parquet"
        s = _run(src, out, vector_dtype=dtype)
        assert s.computed == 0, f"{dtype}: switching the output type re-embedded"
        back = read_float(out)
        assert back.shape == ref.shape
        meta = pq.read_schema(out).metadata
        described = json.loads(meta[b"embedgen.vectors"])["embedding"]
        assert described["dtype"] == dtype and described["dim"] == 384
        assert json.loads(meta[b"embedgen"])["dtype"] == dtype
        if dtype == "float16":
            assert np.abs(back - ref).max() < 1e-3
        elif dtype in ("int8", "uint8"):
            step = np.asarray(described["ranges"]["step"], dtype=np.float32)
            rng = ref.max(axis=0) - ref.min(axis=0)
            # widened by half, noise dimensions (all-MiniLM's 127, 223, 319) to the floor
            pad = np.maximum(rng / 2, NOISE_FLOOR * rng.max())
            assert np.allclose(step * 255, rng + 2 * pad, rtol=1e-5, atol=1e-7)
            assert (rng / 2 < NOISE_FLOOR * rng.max()).sum() <= 3
            err = np.abs(back - ref).max(axis=0)
            bound = np.maximum(rng / 255, step / 2)  # half a step where the range is noise
            assert (err <= bound + 1e-6).all(), "int8 error above range/255"
            assert "first 200 chunks" in described["ranges"]["source"]
        else:
            assert np.array_equal(back, np.where(ref > 0, 1.0, -1.0))
            width = pq.read_schema(out).field("embedding").type.byte_width
            assert width == 384 // 8
        sizes[dtype] = out.stat().st_size
    assert sizes["binary"] < sizes["int8"] < sizes["float16"]


def test_binary_composes_with_dimensions(write_parquet, tmp_path: Path, texts: list[str]) -> None:
    src = write_parquet({"text": texts[:20]})
    out = tmp_path / "b.parquet"
    _run(src, out, vector_dtype="binary", dimensions=128, force_dimensions=True)
    cut = read_float(out)
    _run(src, tmp_path / "f.parquet", dimensions=128, force_dimensions=True)
    assert cut.shape == (20, 128)
    assert np.array_equal(cut, np.where(read_float(tmp_path / "f.parquet") > 0, 1.0, -1.0))
    assert column_format(pq.read_schema(out).metadata).dim == 128


def test_calibration_file_is_reused(write_parquet, tmp_path: Path, texts: list[str]) -> None:
    _run(write_parquet({"text": texts}), tmp_path / "a.parquet", vector_dtype="uint8")
    other = write_parquet({"text": texts[:7]}, name="other.parquet")
    _run(
        other, tmp_path / "b.parquet", vector_dtype="uint8", calibration=str(tmp_path / "a.parquet")
    )
    a, b = (
        column_format(pq.read_schema(tmp_path / n).metadata) for n in ("a.parquet", "b.parquet")
    )
    assert a.ranges is not None and b.ranges is not None
    assert np.array_equal(a.ranges.start, b.ranges.start)
    assert np.array_equal(a.ranges.step, b.ranges.step)
    table = pq.read_table(tmp_path / "a.parquet")  # a slice (an offset into the buffer) reads right
    part = to_float(table.column("embedding").slice(3, 5), table.schema.metadata)
    assert np.array_equal(part, read_float(tmp_path / "a.parquet")[3:8])


def test_rows_held_for_calibration_keep_their_order(write_parquet, tmp_path: Path) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(150)]
    src = write_parquet({"text": texts})
    _run(src, tmp_path / "q.parquet", vector_dtype="int8", sort_window=20)
    _run(src, tmp_path / "f.parquet", sort_window=20)
    table = pq.read_table(tmp_path / "q.parquet")
    assert table.column("text").to_pylist() == texts
    assert (
        np.abs(read_float(tmp_path / "q.parquet") - read_float(tmp_path / "f.parquet")).max() < 0.01
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--vector-dtype", "int4"], ["--vector-dtype", "int4", "binary"]),
        (["--vector-dtype", "binary", "--dimensions", "100", "--force"], ["divisible by 8"]),
        (["--dimensions", "1000"], ["1000", "384"]),
        (["--dimensions", "128"], ["not trained", "--force"]),
    ],
)
def test_bad_input_exits_2(
    write_parquet, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    src = write_parquet({"text": ["one text"]})
    result = runner.invoke(app, ["run", str(src), "-o", str(tmp_path / "o.parquet"), "-q", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    for word in words:
        assert word in result.output


def test_codes_round_trip() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 16)).astype(np.float32)
    ranges = Ranges.fit(v, "test")
    for dtype in ("int8", "uint8"):
        back = decode(encode(v, dtype, ranges), dtype, ranges)
        assert (np.abs(back - v) <= ranges.step / 2 + 1e-6).all()
    assert np.array_equal(encode(v * 100, "int8", ranges).min(axis=0), np.full(16, -128))
    bits = np.packbits(v > 0, axis=-1)
    assert np.array_equal(encode(v, "ubinary"), bits)
    assert np.array_equal(encode(v, "binary").astype(np.int16) + 128, bits)
    for dtype in ("binary", "ubinary"):
        assert np.array_equal(decode(encode(v, dtype), dtype), np.where(v > 0, 1.0, -1.0))
    assert [bytes_per_vector(d, 384) for d in VECTOR_DTYPES] == [1536, 768, 384, 384, 48, 48]


def test_a_noise_dimension_is_not_clipped_by_later_chunks() -> None:
    """A dimension that is float noise (all-MiniLM-L6-v2's 319: |x| < 1e-7) in the calibration
    sample and a little wider later keeps its values within half a step, as the others do."""
    rng = np.random.default_rng(1)
    v = rng.normal(scale=0.1, size=(2048, 8)).astype(np.float32)
    v[:, 3] = rng.uniform(-6.4e-8, -1.2e-8, size=2048)
    ranges = Ranges.fit(v, "test")
    later = rng.normal(scale=0.1, size=(4, 8)).astype(np.float32)
    later[:, 3] = -9.5e-8
    back = decode(encode(later, "int8", ranges), "int8", ranges)
    assert (np.abs(back - later)[:, 3] <= ranges.step[3] / 2 * (1 + 1e-3)).all()
    assert ranges.step[3] < 1e-5  # widened a little, not to a real dimension's range
    assert np.allclose(ranges.step[[0, 1, 2]], (np.ptp(v, axis=0) * 2 / 255)[[0, 1, 2]])


def test_ray_shards_need_one_calibration(tmp_path: Path) -> None:
    """A directory of shards fitting its own ranges per shard would not compare: refused."""
    from embedgen.config import RunConfig
    from embedgen.engines.ray_output import DirSink, Rows
    from embedgen.errors import UsageError
    from embedgen.providers.base import ProviderInfo

    info = ProviderInfo(name="local", kind="onnx", model="m", space="s", dim=16, max_tokens=8,
                        max_batch_inputs=4, max_batch_tokens=64, fingerprint="f")  # fmt: skip
    run = RunConfig(vector_dtype="int8")
    with pytest.raises(UsageError, match="--calibration"):
        DirSink(tmp_path / "a", Rows(run, 16, ()), info, 8)
    calibrated = tmp_path / "cal.parquet"  # any float file of dim 16 will do
    flat = pa.array(np.eye(16, dtype=np.float32).reshape(-1))
    pq.write_table(pa.table({"embedding": pa.FixedSizeListArray.from_arrays(flat, 16)}), calibrated)
    run = RunConfig(vector_dtype="int8", calibration=str(calibrated))
    sink = DirSink(tmp_path / "b", Rows(run, 16, ()), info, 8)
    assert sink.vectors.ranges is not None and "cal.parquet" in sink.vectors.ranges.source
