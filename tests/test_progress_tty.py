"""The progress bar on a real terminal (a pseudo-terminal): Ctrl-C leaves the bar once, its
counters adding up, and one error line below it."""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DETAIL = re.compile(r"([\d,]+) chunks \(([\d,]+) cached, ([\d,]+) computed, ([\d,]+) duplicate\)")


def _screen(raw: bytes) -> list[str]:
    """The lines a terminal keeps: each line as its last carriage return left it."""
    text = _ANSI.sub("", raw.decode("utf-8", "replace"))
    return [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]


def test_ctrl_c_on_a_terminal_leaves_one_bar_and_one_error_line(
    write_parquet, tmp_path: Path
) -> None:
    import pty

    texts = [f"document {i} " + "about the weather and the sea " * 6 for i in range(4000)]
    corpus = write_parquet({"id": list(range(4000)), "text": texts})
    args = [sys.executable, "-m", "embedgen", "run", str(corpus), "--id-column", "id",
            "--model", "default-original", "-o", str(tmp_path / "out.parquet")]  # fmt: skip
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal's Ctrl-C, whatever the test runner ignores
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(sys.executable, args, {**os.environ, "COLUMNS": "240"})
    raw, sent, deadline = b"", False, time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            raw += data
        if not sent:
            shown = _DETAIL.findall(_ANSI.sub("", raw[-2000:].decode("utf-8", "replace")))
            if shown and int(shown[-1][2].replace(",", "")) > 0:  # embedding under way
                os.kill(pid, signal.SIGINT)
                sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert sent, raw[-2000:]
    assert os.waitstatus_to_exitcode(status) == 130, raw[-2000:]
    lines = [line for line in _screen(raw) if line.strip()]
    bars = [line for line in lines if line.startswith("embedding")]
    assert len(bars) == 1, lines
    assert lines[-1].startswith("error: interrupted"), lines
    assert lines.index(bars[0]) == len(lines) - 2, lines  # the error below the bar
    found = _DETAIL.search(bars[0])
    assert found, bars[0]
    chunks, cached, computed, duplicate = (int(g.replace(",", "")) for g in found.groups())
    assert chunks == cached + computed + duplicate > 0
    assert "re-run the same command to go on" in lines[-1]
