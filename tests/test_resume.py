"""Resume after SIGKILL: re-running the same command finishes the job, redoing at most the
batches that were in flight, and gives the output of an uninterrupted run.

Each kill point runs ``embedgen run`` in a fresh process with its own cache directory and
kills it with SIGKILL once the cache holds a target number of vectors (or, once, right after
start, before the model has loaded). The killed process runs the real CLI behind a probe
that appends the size of every batch the model returned to a file, so the test knows how
many chunks the killed run computed, not only how many reached the cache.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedgen.cache import CacheAdmin
from embedgen.cli import app
from embedgen.errors import CacheError
from tests.cache_corpus import assert_same_output, sentences, write_corpus
from tests.test_report import load_report

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
    pytest.mark.slow,
]

runner = CliRunner()

BATCH = 8
MAX_CONCURRENCY = 1
"""ProviderInfo.max_concurrency of the local ONNX provider: one model call at a time."""
IN_FLIGHT_BOUND = 2 * BATCH * MAX_CONCURRENCY
"""Chunks a kill may cost: the batch whose commit was queued or running when the process
died, plus one more queued behind it (the commit thread is one thread and a commit takes far
less time than computing a batch). The batch being computed at the kill is not counted by the
probe, as it never returned."""

SHORT_DOCS, LONG_DOCS, LONG_SENTENCES = 476, 4, 20
DOCS = SHORT_DOCS + LONG_DOCS
_SUMMARY = re.compile(
    r"chunks:\s+([\d,]+) \(([\d,]+) cached, ([\d,]+) computed, [\d,]+ duplicate\)"
)

_PROBE = """
import faulthandler, os, signal, sys
faulthandler.enable()  # an abort or a crash leaves every thread's stack in the log
# as from a terminal: Ctrl-C interrupts (a shell that started the tests in the background
# leaves SIGINT ignored, and a child would inherit that)
signal.signal(signal.SIGINT, signal.default_int_handler)
from embedgen.providers import onnx
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
embed_batch = onnx.OnnxProvider.embed_batch
def counted(self, batch):
    result = embed_batch(self, batch)
    os.write(fd, b"%d\\n" % len(batch.texts))
    return result
onnx.OnnxProvider.embed_batch = counted
from embedgen.cli import main
main(sys.argv[2:])
"""


class Corpus:
    """The corpus, the run's arguments and the uninterrupted reference output."""

    def __init__(self, root: Path) -> None:
        short = sentences(SHORT_DOCS, seed=1)
        n = LONG_SENTENCES
        extra = sentences(LONG_DOCS * n, seed=2, avoid=set(short))
        long = [" ".join(extra[i * n : (i + 1) * n]) for i in range(LONG_DOCS)]
        texts = short[:200] + long + short[200:]  # long documents amid short ones
        self.path = write_corpus(root / "corpus.parquet", [f"d{i:04d}" for i in range(DOCS)],
                                 texts)  # fmt: skip
        self.config = root / "run.toml"
        # the default (int8, each text alone): its vectors do not depend on their batch, so
        # a resumed run equals an uninterrupted one to the last digit
        self.config.write_text("[run]\nsort_window = 64\n", encoding="utf-8")
        self.root = root

    def args(self, cache_dir: Path, output: Path) -> list[str]:
        return ["run", str(self.path), "--config", str(self.config), "--id-column", "doc",
                "--batch-size", str(BATCH), "--cache-dir", str(cache_dir),
                "-o", str(output)]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Corpus, Path, int]:
    """The corpus and its reference output from an uninterrupted run; also its chunk count."""
    root = tmp_path_factory.mktemp("resume")
    c = Corpus(root)
    ref = root / "reference.parquet"
    env = _clean_env(root / "home-cache")
    done = subprocess.run([sys.executable, "-m", "embedgen", *c.args(root / "ref-cache", ref)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    total, cached, computed = _summary(done.stderr)
    assert (cached, computed) == (0, total)
    import pyarrow.parquet as pq

    texts = pq.read_table(ref, columns=["text"]).column("text").to_pylist()
    assert len(set(texts)) == total > DOCS, "every chunk text must be distinct"
    assert _committed(root / "ref-cache") == total
    return c, ref, total


def _clean_env(cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDGEN_", "HF_"))}
    env["EMBEDGEN_CACHE_DIR"] = str(cache_dir)
    env["NO_COLOR"] = "1"
    return env


def _summary(text: str) -> tuple[int, int, int]:
    found = _SUMMARY.search(text)
    assert found, text
    total, cached, computed = (int(g.replace(",", "")) for g in found.groups())
    return total, cached, computed


def _committed(cache_dir: Path) -> int:
    """Vectors committed in the cache at ``cache_dir`` (0 while it is not created yet)."""
    if not (cache_dir / "data.mdb").is_file():
        return 0
    try:
        with CacheAdmin.open(cache_dir, readonly=True) as cache:
            return sum(s.entries for s in cache.stats())
    except CacheError:  # created but its databases not yet: nothing committed
        return 0


def _kill_when(
    proc: subprocess.Popen[bytes], cache_dir: Path, target: int | None, delay: float
) -> None:
    """SIGKILL ``proc`` ``delay`` s after ``target`` vectors are committed (None: at start)."""
    if target is None:
        time.sleep(0.15)
    else:
        deadline = time.monotonic() + 90
        while _committed(cache_dir) < target:
            assert proc.poll() is None, "the run ended before the kill point"
            assert time.monotonic() < deadline, "the run did not reach the kill point"
            time.sleep(0.005)
        time.sleep(delay)
    assert proc.poll() is None, "the run ended before the kill point"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


# Kill points: (vectors committed, then a delay so the kill lands at varied moments of the
# batch after: mid-compute or mid-commit). None: 0.15 s after start, before the model loaded.
KILL_POINTS = {
    "start": (None, 0.0),
    "two-batches": (2 * BATCH, 0.0),
    "half": (0.5, 0.013),
    "three-quarters": (0.75, 0.029),
    "almost-all": (0.9, 0.007),
}


def _start(
    c: Corpus, tmp_path: Path, cache_dir: Path, output: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``embedgen run`` in a new process behind the batch-counting probe."""
    with (tmp_path / "killed.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(tmp_path / "batches.txt"),
             *c.args(cache_dir, output), *extra],
            env=dict(os.environ), stdout=log, stderr=log,
        )  # fmt: skip


def _computed_by_probe(tmp_path: Path) -> int:
    probe = tmp_path / "batches.txt"
    return sum(int(n) for n in probe.read_text().split()) if probe.exists() else 0


def _rerun(c: Corpus, cache_dir: Path, output: Path, *, stale_lock: bool) -> tuple[int, int]:
    """Run the same command to completion in process; returns (cached, computed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, c.args(cache_dir, output))
    assert result.exit_code == 0, result.output
    assert stale_lock == ("taking over the stale lock" in result.output)
    assert not [w for w in caught if "stale lock" in str(w.message)]
    chunks, cached, computed = _summary(result.output)
    assert chunks == cached + computed
    assert not output.with_name(f"{output.name}.lock").exists()
    return cached, computed


def _verify(cache_dir: Path) -> None:
    result = runner.invoke(app, ["cache", "verify", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_then_rerun_equals_an_uninterrupted_run(
    corpus: tuple[Corpus, Path, int], tmp_path: Path, point: str
) -> None:
    c, reference, total = corpus
    where, delay = KILL_POINTS[point]
    target = None if where is None else int(where * total) if where < 1 else int(where)
    cache_dir, out_dir = tmp_path / "cache", tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "embeddings.parquet"
    proc = _start(c, tmp_path, cache_dir, output)
    _kill_when(proc, cache_dir, target, delay)

    # (d) the finished name never appears: only the writer's tmp file and the lock remain
    tmp, lock = f".{output.name}.tmp-{proc.pid}", f"{output.name}.lock"
    left = {p.name for p in out_dir.iterdir()}
    assert left <= {tmp, lock}, left
    committed = _committed(cache_dir)
    computed_before = _computed_by_probe(tmp_path)
    if target is None:
        assert committed == computed_before == 0
    else:
        assert committed >= target
        assert left == {tmp, lock}
        import pyarrow.parquet as pq

        with pytest.raises(Exception, match="(?i)parquet|footer|magic|size"):
            pq.read_table(out_dir / tmp)  # no footer: it cannot pass for an output
    # only the batches in flight at the kill were lost; (c) the cache has nothing wrong
    assert committed <= computed_before <= committed + IN_FLIGHT_BOUND, (
        f"the killed run computed {computed_before} chunks and committed {committed}"
    )
    if committed:
        _verify(cache_dir)

    # re-run the same command over the stale lock and tmp file
    cached, computed = _rerun(c, cache_dir, output, stale_lock=lock in left)
    # (b) every committed vector is reused, only the rest is computed
    assert cached == committed
    assert computed == total - committed
    assert computed + computed_before <= total + IN_FLIGHT_BOUND
    # (a) identical to the uninterrupted run
    assert_same_output(output, reference, atol=0.0)
    _verify(cache_dir)
    assert _committed(cache_dir) == total


def test_ctrl_c_keeps_a_partial_file_loses_nothing_and_a_rerun_finishes(
    corpus: tuple[Corpus, Path, int], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    c, reference, total = corpus
    cache_dir, out_dir = tmp_path / "cache", tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "embeddings.parquet"
    report = tmp_path / "report.json"
    proc = _start(c, tmp_path, cache_dir, output, "--report", str(report))
    deadline = time.monotonic() + 90
    # a quarter in: the rest takes long enough that a loaded machine still interrupts mid-run
    while _committed(cache_dir) < total // 4:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (tmp_path / "killed.log").read_text()[-4000:]
    partial = out_dir / "embeddings.partial.parquet"
    said = " ".join((tmp_path / "killed.log").read_text().split())
    assert "interrupted" in said and f"rows written so far are in {partial}" in said
    assert {p.name for p in out_dir.iterdir()} == {partial.name}  # lock released, no tmp
    committed = _committed(cache_dir)
    assert committed == _computed_by_probe(tmp_path)  # pending commits finish on the way out
    kept = pq.read_table(partial)
    assert 0 < kept.num_rows < total
    data = load_report(report)  # the run report, validated against its schema
    assert (data["status"], data["exit_code"], data["output"]) == ("interrupted", 130, None)
    assert f"rows written so far are in {partial}" in data["message"]
    assert data["kept"] == {"partial": str(partial), "partial_rows": kept.num_rows,
                            "skipped_list": None}  # fmt: skip
    ref = pq.read_table(reference).slice(0, kept.num_rows)
    assert kept.column("id").to_pylist() == ref.column("id").to_pylist()
    _verify(cache_dir)

    cached, computed = _rerun(c, cache_dir, output, stale_lock=False)
    assert (cached, computed) == (committed, total - committed)
    assert_same_output(output, reference, atol=0.0)
    assert not partial.exists()
