"""One writer per output: a lock file beside the output, ``<output>.lock``.

The file is created exclusively and holds ``{"pid", "host", "started"}`` so a
second run can name the holder. While a run holds it, it also holds an OS lock on
the file (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), which the
kernel drops when the process dies. So a lock file whose OS lock is free was left
by a dead run (even if its PID has since been reused) and is taken over, with a
warning; one whose OS lock is held is a live run and :class:`LockHeld` (exit 5).

A lock written on another host cannot be checked from here and counts as held.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from embedgen.errors import LockHeld

log = logging.getLogger("embedgen")

_WINDOWS = sys.platform == "win32"
_LOCK_OFFSET = 1 << 20
"""Windows byte-range locks are mandatory: lock a byte past the JSON so it stays readable."""
_YOUNG_SECONDS = 10.0
"""An empty lock file younger than this is a run still writing it, not a stale one."""
_ATTEMPTS = 5


class StaleLockWarning(UserWarning):
    """A lock left by a run that no longer exists was taken over."""


@dataclass(frozen=True)
class LockInfo:
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


def lock_path(output: Path) -> Path:
    """The lock file for an output file: ``<output>.lock`` beside it."""
    return output.with_name(output.name + ".lock")


def acquire_output_lock(output: Path) -> contextlib.AbstractContextManager[OutputLock]:
    """Hold the lock on ``output`` for a ``with`` block; released (file removed) on exit.

    Raises :class:`LockHeld` when another live run holds it. A stale lock (its run
    died) is taken over with a :class:`StaleLockWarning` and a log warning.
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
    fd = _acquire(path, output, info)
    try:
        yield OutputLock(path, info)
    finally:
        _release(path, fd)


def _acquire(path: Path, output: Path, info: LockInfo) -> int:
    for _ in range(_ATTEMPTS):
        fd = _create_exclusive(path, info)
        if fd is not None:
            return fd
        fd = _take_over_if_stale(path, output, info)
        if fd is not None:
            return fd
    raise LockHeld(
        f"could not take the lock {path} after {_ATTEMPTS} attempts (other runs are "
        f"starting on {output}); try again"
    )


def _create_exclusive(path: Path, info: LockInfo) -> int | None:
    """Create the lock file; None when it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    except FileExistsError:
        return None
    # Another run may briefly hold the OS lock while it reads our still-empty file.
    for _ in range(100):
        if _os_lock(fd) is not False:
            break
        time.sleep(0.02)
    _write_info(fd, info)
    return fd


def _take_over_if_stale(path: Path, output: Path, info: LockInfo) -> int | None:
    """Replace a stale lock file; LockHeld if it is live; None to try again."""
    try:
        old_fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None  # released meanwhile
    except PermissionError:  # Windows: being replaced or removed right now
        time.sleep(0.05)
        return None
    try:
        locked = _os_lock(old_fd)
        holder = _read_info(old_fd)
        if locked is False:
            raise _held(path, output, holder)
        if not _same_file(path, old_fd):
            return None  # replaced or removed since we opened it
        host = socket.gethostname()
        if holder is None:
            age = time.time() - os.fstat(old_fd).st_mtime
            if age < _YOUNG_SECONDS:
                raise LockHeld(
                    f"another embedgen run is starting to write {output}; "
                    f"wait for it, or delete {path} if no embedgen process is running"
                )
        elif holder.host != host:
            raise _held(path, output, holder)
        elif locked is None and _pid_alive(holder.pid):
            # No OS locks on this filesystem: the PID is all we can go by.
            raise _held(path, output, holder)
        who = (
            "an unreadable lock"
            if holder is None
            else f"PID {holder.pid}, started {holder.started}"
        )
        reused = holder is not None and _pid_alive(holder.pid) and holder.pid != os.getpid()
        note = " (that PID now belongs to another process)" if reused else ""
        msg = f"taking over the stale lock {path} left by a run that ended ({who}){note}"
        log.warning(msg)
        warnings.warn(msg, StaleLockWarning, stacklevel=5)
        if _WINDOWS:
            # Open files cannot be renamed over on Windows: remove it and let the
            # exclusive create pick the one winner among runs starting now.
            _os_unlock(old_fd)
            os.close(old_fd)
            old_fd = -1
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return _replace(path, info)
    finally:
        if old_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(old_fd)


def _replace(path: Path, info: LockInfo) -> int | None:
    """Atomically rename a fresh lock file over the stale one, then check it is ours."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
    try:
        _os_lock(fd)
        _write_info(fd, info)
        os.replace(tmp, path)
    except OSError:
        _os_unlock(fd)
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return None
    if _same_file(path, fd):
        return fd
    _os_unlock(fd)
    os.close(fd)
    return None


def _release(path: Path, fd: int) -> None:
    try:
        if _WINDOWS:
            _os_unlock(fd)
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            return
        # Remove while still holding the OS lock, so no one can judge it stale meanwhile.
        if _same_file(path, fd):
            with contextlib.suppress(OSError):
                path.unlink()
        _os_unlock(fd)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _held(path: Path, output: Path, holder: LockInfo | None) -> LockHeld:
    if holder is None:
        return LockHeld(f"another embedgen run is writing {output} (lock file {path})")
    where = "" if holder.host == socket.gethostname() else f" on host {holder.host}"
    return LockHeld(
        f"another embedgen run (PID {holder.pid}{where}, started {holder.started}) is "
        f"writing {output}; wait for it to finish, or delete {path} if that process is gone"
    )


def _write_info(fd: int, info: LockInfo) -> None:
    data = info.to_json().encode("utf-8")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _read_info(fd: int) -> LockInfo | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        data = json.loads(raw.decode("utf-8"))
        return LockInfo(pid=int(data["pid"]), host=str(data["host"]), started=str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _os_lock(fd: int) -> bool | None:
    """Try to take the OS lock: True taken, False held by another, None unsupported."""
    try:
        if _WINDOWS:
            import msvcrt

            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:
        if _WINDOWS and exc.errno in (13, 36):  # EACCES / EDEADLK: locked by another
            return False
        return None


def _os_unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if _WINDOWS:
            import msvcrt

            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
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
