"""The LMDB environment under a cache: opening it once per process, and mapping its errors.

LMDB allows one open environment per directory and process, so handles share a
:class:`SharedEnv`. Its read/write lock lets transactions run together (shared) while a
map resize runs alone (exclusive). :func:`map_error` is the one place where lmdb and OS
errors become a one-line :class:`~embedgen.errors.CacheError`. ``lmdb`` is imported lazily.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedgen.errors import CacheError

_MiB = 1024**2
# Windows (LMDB 0.9) preallocates the data file to the map size: start small there.
INITIAL_MAP_SIZE = 32 * _MiB if sys.platform == "win32" else 256 * _MiB
MAX_GROW_STEP = 1024 * _MiB if sys.platform == "win32" else 16 * 1024 * _MiB
MAX_RETRIES = 64
_LOW_SPACE = 64 * _MiB


def map_error(exc: BaseException, path: Path) -> CacheError:
    """The one place where lmdb and OS errors become a one-line CacheError."""
    import lmdb

    code = getattr(exc, "errno", None) or getattr(exc, "code", None)
    # LMDB reports a short write (the disk filled up mid-write) as EIO.
    if (
        isinstance(exc, lmdb.DiskError)
        or code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        or (code == errno.EIO and free_bytes(path) < _LOW_SPACE)
    ):
        return CacheError(
            f"disk full while writing the cache at {path}; free space or move the cache "
            "with --cache-dir"
        )
    if code in (errno.EIO, errno.EFBIG):
        return CacheError(
            f"could not write the cache at {path} ({exc}: disk full, over quota or failing); "
            "free space or move the cache with --cache-dir"
        )
    if isinstance(exc, (NotADirectoryError, FileExistsError)) or code == errno.ENOTDIR:
        return CacheError(
            f"cache directory {path} cannot be created (a file is in the way); "
            "set --cache-dir / EMBEDGEN_CACHE_DIR or use --no-cache"
        )
    if isinstance(exc, (lmdb.ReadonlyError, PermissionError)) or code in (
        errno.EACCES, errno.EPERM, errno.EROFS,
    ):  # fmt: skip
        return CacheError(
            f"cache directory {path} is not writable; set --cache-dir / EMBEDGEN_CACHE_DIR "
            "or use --no-cache"
        )
    damaged = (lmdb.CorruptedError, lmdb.InvalidError, lmdb.PanicError, lmdb.PageNotFoundError,
               lmdb.VersionMismatchError, lmdb.IncompatibleError, lmdb.BadDbiError)  # fmt: skip
    if isinstance(exc, damaged):
        return damaged_error(path, str(exc))
    if isinstance(exc, lmdb.ReadersFullError):
        return CacheError(f"too many processes are reading the cache at {path}; retry later")
    return CacheError(f"cache at {path} failed ({exc}); use --cache-dir or --no-cache")


def damaged_error(path: Path, why: str) -> CacheError:
    """The one message for a cache whose files are damaged."""
    return CacheError(
        f"cache at {path} is damaged ({why}); delete that directory to start a new cache, "
        "or use --cache-dir / --no-cache"
    )


_META = struct.Struct("=QHHHHIIQQIHH40x48xQQ")
"""An LMDB meta page's start (64-bit): page header (pgno, pad, flags, lower, upper), magic,
version, address, map size, the free DB (its md_pad holds the page size) and the main DB,
the last used page number and the transaction id."""
_MAGIC = 0xBEEFC0DE


def used_bytes(data: Path) -> int | None:
    """The bytes of ``data`` (an LMDB ``data.mdb``) that its newest meta page says are used:
    (last used page + 1) * page size; None without two valid meta pages (at offset 0 and one
    page in). OSError when the file cannot be read."""
    with data.open("rb") as fh:
        first = fh.read(_META.size)
        metas = [_META.unpack(first)] if len(first) == _META.size else []
        if metas and metas[0][5] == _MAGIC:
            fh.seek(metas[0][9])  # the page size, from the free DB's md_pad
            second = fh.read(_META.size)
            if len(second) == _META.size:
                metas.append(_META.unpack(second))
    valid = [m for m in metas if m[5] == _MAGIC and m[9] >= 512]
    if len(valid) < 2:
        return None
    newest = max(valid, key=lambda m: m[13])
    return int((newest[12] + 1) * newest[9])


def check_data_file(path: Path) -> None:
    """CacheError unless ``data.mdb`` holds every page its newest meta page says is used.

    LMDB maps the file and would read past a truncated end, which kills the process with
    SIGBUS: the meta pages are read and checked first.
    """
    data = path / "data.mdb"
    try:
        size = data.stat().st_size
        if size == 0:  # a new environment: LMDB initialises it
            return
        used = used_bytes(data)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise map_error(exc, path) from exc
    if used is None:
        raise damaged_error(path, f"{data.name} has no valid LMDB header")
    if size < used:
        raise damaged_error(
            path, f"{data.name} is {size:,} bytes, shorter than the {used:,} bytes its "
            "header records (truncated)"
        )  # fmt: skip


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (a large number when unknown)."""
    import shutil

    for where in (path, *path.parents):
        try:
            return shutil.disk_usage(where).free
        except OSError:
            continue
    return 1 << 62


class SharedEnv:
    """One open LMDB environment per directory and process (LMDB allows no second one).

    Transactions hold the lock shared; changing the map size holds it exclusively, because
    ``set_mapsize`` needs no open transaction in this process. Writers queue on ``write_lock``.
    """

    def __init__(self, env: Any, path: Path, readonly: bool, dbs: tuple[Any, Any, Any]) -> None:
        self.env, self.path, self.readonly = env, path, readonly
        self.vectors, self.models, self.meta = dbs
        self.refs = 0
        self.write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive_wanted = 0
        self._exclusive = False
        self.grown = 0
        self.adopted = 0
        self._covered = 0

    def cover(self) -> None:
        """Extend ``data.mdb`` (sparse) to the map size; call inside a write transaction.

        A read that damaged pages send past the file's end kills the process with SIGBUS;
        within the file it reads zeros, which LMDB reports as damage. LMDB's writer lock,
        held by the transaction, keeps other processes from growing the file meanwhile, so
        this never shrinks it. Windows preallocates the file to the map size already.
        """
        size = int(self.env.info()["map_size"])
        if sys.platform == "win32" or self._covered >= size:
            return
        data = self.path / "data.mdb"
        try:
            if data.stat().st_size < size:
                os.truncate(data, size)
            self._covered = size
        except OSError:  # no room or no sparse files: only this guard is lost
            self._covered = size

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._exclusive_wanted:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive_wanted += 1
            while self._exclusive or self._active:
                self._cond.wait()
            self._exclusive_wanted -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


ENVS: dict[tuple[int, str], SharedEnv] = {}
"""Open environments by (process id, real path); changed only under :data:`ENVS_LOCK`."""
ENVS_LOCK = threading.Lock()


def open_env(path: Path, readonly: bool, map_size: int) -> SharedEnv:
    """Open (creating unless ``readonly``) the environment and its three databases."""
    import lmdb

    if readonly and not (path / "data.mdb").is_file():
        raise CacheError(f"no cache at {path}; nothing has been cached there yet")
    try:
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        data = path / "data.mdb"
        check_data_file(path)
        if data.is_file():  # reopen at the size already reached, not the initial one
            map_size = max(map_size, data.stat().st_size)
        env = lmdb.open(str(path), map_size=map_size, readonly=readonly, max_dbs=4,
                        max_readers=512, lock=True, create=not readonly)  # fmt: skip
    except (lmdb.Error, OSError) as exc:
        raise map_error(exc, path) from exc
    try:
        if not readonly:
            env.reader_check()  # free reader slots of killed processes
        for _ in range(MAX_RETRIES):
            try:
                dbs = tuple(
                    env.open_db(n, create=not readonly) for n in (b"vectors", b"models", b"meta")
                )
                break
            except lmdb.MapResizedError:
                env.set_mapsize(0)
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
        else:
            raise CacheError(f"cache at {path} could not be opened; use --cache-dir or --no-cache")
    except lmdb.NotFoundError as exc:
        env.close()
        raise CacheError(f"{path} is not an embedgen cache; use another --cache-dir") from exc
    except (lmdb.Error, OSError) as exc:
        env.close()
        raise map_error(exc, path) from exc
    return SharedEnv(env, path, readonly, dbs)  # type: ignore[arg-type]
