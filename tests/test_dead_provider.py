"""A provider that dies mid-run: the run says so at once and stops within one recovery.

Whole-process runs of ``python -m embedgen run`` against a loopback API server that is
shut down while the run is going (its port then refuses connections).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

KEY = "sk-dead-test-0123456789abcdef"
RECOVERY = 3.0
TIMEOUT = 1.0


SERVE = """
import sys, time
from tests.api_servers import ApiServer
with ApiServer("openai", key=sys.argv[1]) as server:
    print(server.url, flush=True)
    while True:
        time.sleep(1)
"""


def _config(path: Path, url: str) -> Path:
    path.write_text(
        '[run]\nproviders = ["openai"]\n'
        f'[providers.openai]\nkind = "openai"\nbase_url = "{url}/v1"\n'
        f"dimensions = 8\nrpm = 900\nmax_batch_inputs = 10\ntimeout = {TIMEOUT}\n"
        f"recovery_timeout = {RECOVERY}\n",
        "utf-8",
    )
    return path


def test_killed_server_stops_the_run_within_one_recovery(tmp_path: Path) -> None:
    src = tmp_path / "corpus.parquet"
    n = 2000
    texts = [f"row {i} of the corpus" for i in range(n)]
    pq.write_table(pa.table({"id": list(range(n)), "text": texts}), src)
    out = tmp_path / "out.parquet"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "EMBEDGEN_CACHE_DIR": str(tmp_path / "cache")}
    lines: list[tuple[float, str]] = []
    root = Path(__file__).resolve().parent.parent
    # the server in its own process, so that kill -9 really drops every connection
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, KEY], stdout=subprocess.PIPE, text=True, cwd=root, env=env
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        cfg = _config(tmp_path / "c.toml", url)
        cmd = [sys.executable, "-m", "embedgen", "run", str(src), "-c", str(cfg), "-o", str(out),
               "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append((time.monotonic(), line.rstrip()))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(4)  # the run takes about 13 s at 900 requests/min
        assert proc.poll() is None, "\n".join(x for _, x in lines)
    finally:
        server.kill()
        server.wait()
    killed = time.monotonic()
    try:
        proc.wait(timeout=RECOVERY + TIMEOUT + 30)
    finally:
        proc.kill()
    ended = time.monotonic()
    reader.join(5)
    text = "\n".join(line for _, line in lines)
    assert proc.returncode == 1, text
    assert ended - killed <= RECOVERY + TIMEOUT + 10, (ended - killed, text)
    warned = [t for t, line in lines if "every provider is failing" in line]
    assert warned, text
    assert warned[0] - killed <= RECOVERY, (warned[0] - killed, text)
    assert "openai" in text and "circuit breaker" in text
    # what was done is kept: rows written so far, and the cache for a re-run
    assert not out.exists()
    assert "embedded chunks are in the cache" in text, text
    assert "re-run the same command" in text or "rows written so far" in text, text
