"""Starting or joining the Ray cluster of a run, and importing Ray only when it is chosen.

``ray.init`` runs on a background thread while the driver prepares (imports Ray Data,
builds its chain, runs a batch pre-pass): on a small machine Ray's start-up is seconds of
mostly waiting for the processes it spawns.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings
from typing import Any

from embedgen.errors import EngineUnavailableError

INSTALL_HINT = "pip install 'embedgen[ray]'"


def import_ray() -> Any:
    """The ``ray`` module (Ray Data comes later: :func:`import_ray_data`), or a usage error
    (exit 2) naming the extra."""
    try:
        import ray
    except ImportError as exc:
        raise _missing(exc) from None
    return ray


def import_ray_data() -> None:
    """Import Ray Data (a second or more of imports: done while Ray starts)."""
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise _missing(exc) from None


def _missing(exc: ImportError) -> EngineUnavailableError:
    return EngineUnavailableError(
        f"--engine ray needs Ray Data, which is not installed ({exc}); "
        f"install it with: {INSTALL_HINT}"
    )


BLOCK_BYTES = 512 * 1024
"""Ray Data block size: a window is cut into blocks of about this many bytes of chunk rows,
so the embedding actors share even a single window (Ray's default is 128 MiB)."""
_CONTEXT: dict[str, Any] = {
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    "target_max_block_size": BLOCK_BYTES,
    # a worker's BudgetExceeded (exit 3), ProviderError... reach the driver as themselves
    "raise_original_map_exception": True,
}


class RayCluster:
    """Connect to ``address`` (or start a local instance) and quiet Ray's own logging;
    a cluster this process started is shut down on exit, one it joined is left running.

    ``ray.init`` runs on a background thread from ``__enter__`` on: it mostly waits for the
    processes it spawns, so the driver imports Ray Data, builds its chain and runs a batch
    pre-pass meanwhile, and calls :meth:`wait` where it first needs the cluster.
    """

    def __init__(self, ray: Any, address: str | None) -> None:
        self.ray = ray
        self.address = address
        self.started = False
        self._thread: threading.Thread | None = None
        self._up = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._saved: dict[str, Any] | None = None

    def __enter__(self) -> RayCluster:
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        warnings.filterwarnings("ignore", message="SIGTERM handler is not set")
        _quiet()
        if not self.ray.is_initialized():
            self._thread = threading.Thread(target=self._init, name="embedgen-ray-init",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        else:
            self._up.set()
        return self

    def _init(self) -> None:
        try:
            self.ray.init(
                address=self.address or None,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=True,
            )
            self.started = True
        except BaseException as exc:  # raised by wait(), on the driver's thread
            self._error = exc
            return
        finally:
            self._up.set()
        # The processes ray.init spawned die with the thread that spawned them (they are
        # started with a parent-death signal): this thread lives until they are shut down.
        self._done.wait()

    def wait(self) -> Any:
        """The ``ray`` module once the cluster is up (an error, exit 2, if it cannot be)."""
        self._up.wait()
        first = self._saved is None
        if first and self.started and threading.current_thread() is threading.main_thread():
            # what ray.init sets only when called on the main thread
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        exc = self._error
        if exc is not None:
            if not isinstance(exc, (ConnectionError, RuntimeError, ValueError)):
                raise exc
            where = self.address or "a local instance"
            raise EngineUnavailableError(f"cannot start or reach Ray ({where}): {exc}") from None
        if first:
            _quiet()  # again: importing Ray Data configures its loggers
            ctx = self.ray.data.DataContext.get_current()
            self._saved = {k: getattr(ctx, k) for k in _CONTEXT}
            for k, v in _CONTEXT.items():
                setattr(ctx, k, v)
        return self.ray

    def __exit__(self, *exc: object) -> None:
        self._up.wait()  # the driver may have failed before it needed the cluster
        if self._saved is not None:
            ctx = self.ray.data.DataContext.get_current()
            for k, v in self._saved.items():
                setattr(ctx, k, v)
        try:
            if self.started:
                self.ray.shutdown()
        finally:
            self._done.set()
            if self._thread is not None:
                self._thread.join()


def _quiet() -> None:
    """Ray's own loggers at ERROR; Ray Data's at CRITICAL: it logs a failed block's traceback
    before raising it, and the run reports the error it raises as one line (worker_error)."""
    for name in ("ray", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
