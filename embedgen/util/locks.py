"""File locks on top of ``filelock``: one writer per output, short sections on shared files.

The output lock has two parts. ``<output>.lock`` beside the output says who holds it
(``{"pid", "host", "started"}``), so a second run can name the holder; it is written
atomically and removed when the run ends. The OS lock that makes it exclusive is a
``filelock`` lock on a companion file in a per-user folder of the temp directory, keyed by
the output folder's device and inode and the output's name, so every path to the same
output meets the same lock and nothing but ``<output>.lock`` ever appears beside it. The
kernel drops that OS lock when its process dies, so:

- OS lock held: a live run on this host; :class:`~embedgen.errors.LockHeld` (exit 5).
- OS lock free, ``<output>.lock`` present: left by a run that ended (killed, even if its
  PID has since been reused); it is taken over with a warning through the ``embedgen``
  logger, the same line every other warning uses.
- A lock file written on another host or by another account cannot be checked from here
  and counts as held; so does an empty one younger than a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from embedgen.errors import LockHeld
from embedgen.util.atomic import atomic_write_text

log = logging.getLogger("embedgen")

_WINDOWS = sys.platform == "win32"
_YOUNG_SECONDS = 10.0
"""An empty lock file younger than this may be a run still starting, not a stale one."""


@dataclass(frozen=True)
class LockInfo:
    """What ``<output>.lock`` says about its holder."""

    pid: int
    host: str
    started: str

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "started": self.started})


@dataclass(frozen=True)
class OutputLock:
    """A held lock: ``path`` is the lock file, ``info`` what it says."""

    path: Path
    info: LockInfo


class FileMutex:
    """An exclusive OS lock on ``path`` (created if missing, left in place), via ``filelock``.

    :meth:`acquire` raises :class:`TimeoutError` when another process (or another mutex
    in this one) still holds it after ``timeout`` seconds, :class:`OSError` when the file
    cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import filelock

        self.path = Path(path)
        self._lock = filelock.FileLock(str(self.path), thread_local=False)

    def acquire(self, timeout: float) -> None:
        import filelock

        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise TimeoutError(f"{self.path} is locked by another process") from None

    def release(self) -> None:
        self._lock.release()

    @contextlib.contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        """Hold the lock for a ``with`` block."""
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()


def lock_path(output: Path) -> Path:
    """The lock file for an output file: ``<output>.lock`` beside it."""
    return output.with_name(output.name + ".lock")


def acquire_output_lock(output: Path) -> contextlib.AbstractContextManager[OutputLock]:
    """Hold the lock on ``output`` for a ``with`` block; released (file removed) on exit.

    Raises :class:`LockHeld` when another live run holds it. A stale lock (its run died)
    is taken over with a log warning.
    """
    return _hold(Path(output))


@contextlib.contextmanager
def _hold(output: Path) -> Iterator[OutputLock]:
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = LockInfo(
        pid=os.getpid(),
        host=socket.gethostname(),
        started=datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    mutex = FileMutex(_companion(output))
    try:
        mutex.acquire(timeout=0)
    except TimeoutError:
        raise _held(path, output, _read_info(path)) from None
    try:
        _take(path, output, info)
        try:
            yield OutputLock(path, info)
        finally:
            if _read_info(path) == info:
                with contextlib.suppress(OSError):
                    path.unlink()
    finally:
        mutex.release()


def _take(path: Path, output: Path, info: LockInfo) -> None:
    """With the OS lock held: judge a lock file left behind, then write ours."""
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    if st is not None:
        holder = _read_info(path)
        if holder is None:
            if time.time() - st.st_mtime < _YOUNG_SECONDS:
                raise LockHeld(
                    f"another embedgen run is starting to write {output}; "
                    f"wait for it, or delete {path} if no embedgen process is running"
                )
        elif holder.host != info.host or _foreign(st):
            raise _held(path, output, holder)
        who = (
            "an unreadable lock"
            if holder is None
            else f"PID {holder.pid}, started {holder.started}"
        )
        reused = holder is not None and holder.pid != info.pid and pid_alive(holder.pid)
        note = " (that PID now belongs to another process)" if reused else ""
        log.warning(f"taking over the stale lock {path} left by a run that ended ({who}){note}")
    for attempt in range(20):
        try:
            atomic_write_text(path, info.to_json())
            return
        except PermissionError:  # Windows: a reader has the old file open right now
            if not _WINDOWS or attempt == 19:
                raise
            time.sleep(0.05)


def _companion(output: Path) -> Path:
    """The file ``filelock`` locks for ``output``: one per output folder (by inode) and name."""
    st = output.parent.stat()
    folder_id = f"{st.st_dev}:{st.st_ino}" if st.st_ino else os.path.realpath(output.parent)
    key = f"{folder_id}:{os.path.normcase(output.name)}".encode("utf-8", "surrogatepass")
    return _lock_folder() / f"{hashlib.blake2b(key, digest_size=12).hexdigest()}.lock"


def _lock_folder() -> Path:
    """A folder of this account's lock files: in the temp dir, else the user cache dir."""
    user = "" if _WINDOWS else f"-{os.getuid()}"  # %TEMP% is per account on Windows already
    folder = Path(tempfile.gettempdir()) / f"embedgen-locks{user}"
    with contextlib.suppress(OSError):
        folder.mkdir(mode=0o700, exist_ok=True)
        if _WINDOWS or (folder.is_dir() and not folder.is_symlink()
                        and folder.stat().st_uid == os.getuid()):  # fmt: skip
            return folder
    import platformdirs  # the temp folder is taken by another account: use our own

    folder = Path(platformdirs.user_cache_dir("embedgen", appauthor=False)) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _foreign(st: os.stat_result) -> bool:
    """A lock file owned by another account: its run may be live (its OS lock is not ours)."""
    return not _WINDOWS and st.st_uid != os.getuid()


def _held(path: Path, output: Path, holder: LockInfo | None) -> LockHeld:
    if holder is None:
        return LockHeld(f"another embedgen run is writing {output} (lock file {path})")
    where = "" if holder.host == socket.gethostname() else f" on host {holder.host}"
    return LockHeld(
        f"another embedgen run (PID {holder.pid}{where}, started {holder.started}) is "
        f"writing {output}; wait for it to finish, or delete {path} if that process is gone"
    )


def _read_info(path: Path) -> LockInfo | None:
    try:
        data: Any = json.loads(path.read_bytes().decode("utf-8"))
        return LockInfo(pid=int(data["pid"]), host=str(data["host"]), started=str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    if pid <= 0:
        return False
    if _WINDOWS:
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
