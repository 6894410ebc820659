"""kill -9 during a run with several model slots, then the same command again: nothing that
was committed to the cache is recomputed, for any slot, and the output is complete."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embedgen.cache import CacheAdmin, fingerprint_id
from embedgen.cli import app
from embedgen.errors import CacheError
from tests.api_servers import ApiServer
from tests.cache_corpus import sentences, write_corpus

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")]

KEY = "sk-multi-resume-0123456789abcdef"
SLOT = re.compile(r"slot (\w+): .*?, ([\d,]+) cached, ([\d,]+) computed")


def committed(cache_dir: Path) -> dict[bytes, int]:
    """Vectors committed per fingerprint id (empty while the cache is not created yet)."""
    if not (cache_dir / "data.mdb").is_file():
        return {}
    try:
        with CacheAdmin.open(cache_dir, readonly=True) as cache:
            return {s.fingerprint_id: s.entries for s in cache.stats()}
    except CacheError:
        return {}


def test_kill_and_resume_recomputes_nothing_committed(tmp_path: Path) -> None:
    texts = sentences(600, seed=9)
    src = write_corpus(tmp_path / "c.parquet", [f"d{i}" for i in range(len(texts))], texts)
    cache_dir, out = tmp_path / "cache", tmp_path / "out.parquet"
    with ApiServer("openai", key=KEY, dim=8, model="m", slow_seconds=0.05) as server:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[run]\nsort_window = 32\n[providers.api]\nkind = "openai_compatible"\n'
            f'base_url = "{server.url}/v1"\nmodel = "m"\ndim = 8\napi_key_env = "EG_KEY"\n'
            "max_batch_inputs = 16\n"
        )
        args = ["run", str(src), "-c", str(cfg), "--model", "fast=default", "--model",
                "fp32=default-original", "--model", "api=api", "--batch-size", "16",
                "--cache-dir", str(cache_dir), "-o", str(out), "-q"]  # fmt: skip
        env = {**os.environ, "EG_KEY": KEY}
        proc = subprocess.Popen([sys.executable, "-m", "embedgen", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 120
        while sum(committed(cache_dir).values()) < 400 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
        before = committed(cache_dir)
        assert not out.exists()
        os.environ["EG_KEY"] = KEY
        try:
            result = CliRunner().invoke(app, [*args[:-1]])
        finally:
            del os.environ["EG_KEY"]
        assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == len(texts)
    counts = {m[0]: (int(m[1].replace(",", "")), int(m[2].replace(",", "")))
              for m in SLOT.findall(result.output)}  # fmt: skip
    for name in ("fast", "fp32", "api"):
        fp = table.schema.field(f"embedding_{name}").metadata[b"embedgen.fingerprint"].decode()
        done = before.get(fingerprint_id(fp), 0)
        assert counts[name] == (done, len(texts) - done), name
    assert sum(before.values()) >= 400
