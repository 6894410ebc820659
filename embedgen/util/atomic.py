"""Durable temp-then-rename writes: a file with the final name is always complete.

Every write that must survive a crash goes through here: write a temporary file in the
same folder, flush and fsync it, ``os.replace`` it over the target, then fsync the folder
so the rename itself is on disk. The folder fsync is skipped where the OS cannot do it
(Windows, some network file systems).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
from pathlib import Path

_WINDOWS = sys.platform == "win32"
_counter = itertools.count()
_counter_lock = threading.Lock()


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A temporary name beside ``path``, unique to this process and call (hidden, ``.tmp``)."""
    target = Path(path)
    with _counter_lock:
        n = next(_counter)
    return target.with_name(f".{target.name}.{os.getpid()}.{n}.tmp")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to disk (it was written through another handle)."""
    flags = os.O_RDWR if _WINDOWS else os.O_RDONLY  # Windows flushes only writable handles
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make renames and creations in ``folder`` durable; a no-op where the OS cannot."""
    if _WINDOWS:
        return  # directories cannot be opened for fsync; NTFS journals the rename
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # EINVAL on file systems without directory fsync
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename a finished file (or folder) over ``dst`` durably: fsync, replace, fsync folder.

    For files written in streaming fashion (the Parquet writer) and closed before this.
    """
    if not os.path.isdir(tmp):
        fsync_file(tmp)
    os.replace(tmp, dst)
    fsync_dir(Path(dst).parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably; the temporary file never remains."""
    target = Path(path)
    tmp = temp_path(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded (no newline translation)."""
    atomic_write_bytes(path, text.encode(encoding))
