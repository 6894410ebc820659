"""``embedgen eval``: reproducible, equal to a brute force written here, honest about sizes.

The brute force shares nothing with :mod:`embedgen.optimize.retention` but the sample and
its vectors: its own quantization, Hamming distances on packed bits, its own recall.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import embedgen
from embedgen.cli import app

SAMPLE = 200
runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = Path(embedgen.__file__).parent / "data" / "sample" / "sentences.txt"
    texts = [t for t in data.read_text("utf-8").splitlines() if t.strip()]
    path = tmp_path_factory.mktemp("eval") / "corpus.parquet"
    pq.write_table(pa.table({"text": texts}), path)
    return path


@pytest.fixture(scope="module")
def report(corpus: Path) -> list[dict]:
    result = runner.invoke(app, ["eval", str(corpus), "--sample", str(SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _brute_force(vectors: np.ndarray) -> dict[tuple[str, int, bool], float]:
    """Recall@10 per (dtype, dims, rescore), written from the definition with plain numpy."""
    n = len(vectors)
    q = [i for i in range(n) if i % 10 == 0]
    d = [i for i in range(n) if i % 10 != 0]
    exact = vectors[q].astype(np.float64) @ vectors[d].T.astype(np.float64)

    def best(scores: np.ndarray, k: int) -> np.ndarray:
        return np.array([sorted(range(len(r)), key=lambda j: (-r[j], j))[:k] for r in scores])

    truth = best(exact, 10)
    out = {}
    for dims in (384, 256, 128, 64):
        v = vectors[:, :dims].astype(np.float64)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        v32 = v.astype(np.float32)
        lo, hi = v32[d].min(axis=0), v32[d].max(axis=0)
        lo, hi = lo - (hi - lo) / 2, hi + (hi - lo) / 2  # the documented widening
        step = (hi - lo) / np.float32(255)
        code = np.clip(np.rint((v32 - lo) / np.where(step > 0, step, 1)), 0, 255)
        deq = (lo + code.astype(np.float32) * step).astype(np.float64)
        bits = np.packbits(v32 > 0, axis=1)
        ham = np.array([[np.unpackbits(bits[a] ^ bits[b]).sum() for b in d] for a in q])
        for dtype, scores in (
            ("float32", v32.astype(np.float64)[q] @ v32.astype(np.float64)[d].T),
            ("int8", deq[q] @ deq[d].T),
            ("binary", -ham.astype(np.float64)),
        ):
            found = best(scores, 10)
            top40 = best(scores, 40)
            rescored = np.array(
                [row[sorted(range(40), key=lambda j: (-exact[i, row[j]], j))[:10]]
                 for i, row in enumerate(top40)]
            )  # fmt: skip
            for rescore, got in ((False, found), (True, rescored)):
                hits = sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), truth.tolist()))
                out[(dtype, dims, rescore)] = hits / truth.size
    return out


def test_report_matches_an_independent_brute_force(corpus: Path, report: list[dict]) -> None:
    from embedgen.config import RunConfig
    from embedgen.models.local import resolve_model
    from embedgen.optimize.measure import SampleRunner
    from embedgen.optimize.retention import corpus_chunks, sample_chunks
    from embedgen.pipeline.windows import make_chunker

    spec = resolve_model(None)
    probe = SampleRunner(spec, [])
    chunker = make_chunker(probe.provider.tokenizer(), probe.provider.info, RunConfig())
    texts = sample_chunks(corpus_chunks([corpus], chunker, RunConfig()), SAMPLE)
    probe.close()
    sampler = SampleRunner(spec, texts)
    expected = _brute_force(sampler.vectors())
    sampler.close()
    rows = {(r["dtype"], r["dimensions"], r["rescore"]): r for r in report
            if r["reference"] == "float32 at full dimension"}  # fmt: skip
    for key, value in expected.items():
        assert abs(rows[key]["recall_at_10"] - value) < 5e-4, (key, rows[key], value)


def test_report_shape_sizes_and_retention(report: list[dict]) -> None:
    grid = [r for r in report if r["reference"] == "float32 at full dimension"]
    assert {r["dimensions"] for r in grid} == {384, 256, 128, 64}
    assert len(grid) == 4 * 6 * 2
    by = {(r["dtype"], r["dimensions"], r["rescore"]): r for r in grid}
    assert by[("float32", 384, False)]["recall_at_10"] == 1.0
    for dims in (384, 256, 128, 64):
        assert (
            by[("binary", dims, False)]["recall_at_10"] < by[("binary", dims, True)]["recall_at_10"]
        )
        assert by[("binary", dims, False)]["bytes_per_vector"] == dims // 8
        assert by[("int8", dims, True)]["bytes_per_vector"] == dims
    variant, original = (r for r in report if r["reference"].startswith("the packaged original"))
    assert "int8 model variant" in variant["model"] and "packaged original" in original["model"]
    assert 0.5 < variant["recall_at_10"] <= 1.0 and original["recall_at_10"] == 1.0
    assert variant["chunks_per_second"] > 0


def test_same_sample_same_numbers_and_a_plot(corpus: Path, report: list[dict], tmp_path) -> None:
    png = tmp_path / "r.png"
    args = ["eval", str(corpus), "--sample", str(SAMPLE), "--json", "--plot", str(png)]
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    strip = [{k: v for k, v in r.items() if k != "chunks_per_second"} for r in report]
    assert [{k: v for k, v in r.items() if k != "chunks_per_second"}
            for r in json.loads(again.stdout)] == strip  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_puts_rescored_recall_beside(report: list[dict]) -> None:
    from embedgen.cli.eval_cmd import format_table
    from embedgen.optimize.retention import Row

    lines = format_table([Row(**r) for r in report]).splitlines()
    assert lines[0].split()[:6] == ["model", "dtype", "dims", "bytes/vec", "recall@10", "+rescore"]
    first = lines[1].split()
    assert first[1:6] == ["float32", "384", "1,536", "1.000", "1.000"]
    assert len(lines) == 1 + 4 * 6 + 2


def test_bad_input_exits_2(corpus: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.parquet"
    pq.write_table(pa.table({"text": ["one", "two", "three"]}), small)
    result = runner.invoke(app, ["eval", str(small), "--sample", "50"])
    assert result.exit_code == 2 and "distinct chunks" in result.output
    result = runner.invoke(app, ["eval", str(corpus), "--plot", str(tmp_path / "x.txt")])
    assert result.exit_code == 2 and ".png" in result.output
