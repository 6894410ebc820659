"""Opening an onnxruntime session, and opening it before the provider asks.

Loading a model is a tenth of a second that onnxruntime spends with the GIL released. A
run that embeds every chunk (``--no-cache``) knows its model as soon as its config is
resolved, while the pipeline's modules are still being imported and the tokenizer read.
:func:`early_session` opens the session then, on a thread of its own; the provider takes
it (:func:`take_early`) when it asks for a session with the same :class:`SessionPlan`,
and opens its own otherwise. An early session that fails, or that nobody takes, is
dropped: the provider's own load says what is wrong.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embedgen.errors import EmbedgenError, ModelError

if TYPE_CHECKING:
    from embedgen.config import Config, OnnxConfig
    from embedgen.models.local import ModelSpec
    from embedgen.providers.onnx_device import DeviceChoice

OPT_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}


@dataclass(frozen=True)
class SessionPlan:
    """Everything an ``InferenceSession`` is opened with: equal plans, equal sessions."""

    path: str
    providers: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    """Each execution provider with its options (sorted), in order."""
    intra_op_threads: int
    inter_op_threads: int
    optimization: str
    sequential: bool


def session_plan(
    spec: ModelSpec, cfg: OnnxConfig, choice: DeviceChoice, per_text: bool
) -> SessionPlan:
    """The session a provider of ``spec`` with ``cfg`` on ``choice`` runs on."""
    if per_text:  # the parallelism is across texts, each call on one thread
        intra, inter = 1, 1
    else:
        intra, inter = cfg.num_threads, cfg.inter_op_threads
    level: str = cfg.graph_optimization
    if level == "auto":
        level = spec.graph_optimization
    providers = tuple(
        (p, ()) if isinstance(p, str) else (p[0], tuple(sorted(p[1].items())))
        for p in choice.providers
    )
    return SessionPlan(str(spec.onnx_path), providers, intra, inter, level, choice.sequential)


def open_session(ort: Any, plan: SessionPlan) -> Any:
    """The session ``plan`` describes; a file onnxruntime cannot load is a ModelError."""
    so = ort.SessionOptions()
    if plan.intra_op_threads:
        so.intra_op_num_threads = plan.intra_op_threads
    if plan.inter_op_threads:
        so.inter_op_num_threads = plan.inter_op_threads
    so.graph_optimization_level = ort.GraphOptimizationLevel(OPT_LEVELS[plan.optimization])
    so.log_severity_level = 3
    if plan.sequential:
        so.enable_mem_pattern = False
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = [name if not opts else (name, dict(opts)) for name, opts in plan.providers]
    try:
        return ort.InferenceSession(plan.path, sess_options=so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{plan.path}: cannot load ONNX model ({first})") from None


class _Early:
    """The one early session of this process: its thread, then its plan and session."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.plan: SessionPlan | None = None
        self.session: Any = None

    def start(self, plan: SessionPlan) -> None:
        with self.lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(
                target=self._open, args=(plan,), daemon=True, name="embedgen-early-load"
            )
        self.thread.start()

    def _open(self, plan: SessionPlan) -> None:
        with contextlib.suppress(Exception):  # the provider opens it again and says why
            import onnxruntime as ort

            session = open_session(ort, plan)
            with self.lock:
                self.plan, self.session = plan, session

    def take(self, plan: SessionPlan) -> Any:
        """The early session if it was opened with ``plan`` (waiting for it), else None."""
        thread = self.thread
        if thread is None:
            return None
        thread.join()
        with self.lock:
            session = self.session if self.plan == plan else None
            self.plan = self.session = None
        return session

    def drop(self) -> None:
        """Wait for the thread (no session is half-built while the interpreter exits)."""
        thread = self.thread
        if thread is not None:
            thread.join()
        with self.lock:
            self.thread = None
            self.plan = self.session = None


_EARLY = _Early()


def embeds_everything(cfg: Config) -> bool:
    """Whether a run of ``cfg`` embeds every chunk: without the cache, or with a cache that
    holds nothing yet (a first run). Otherwise the cache may hold every vector, and a fully
    cached run never loads the model."""
    if not cfg.run.use_cache:
        return True
    from embedgen.cache.keys import resolve_cache_dir

    return not (resolve_cache_dir(cfg.run.cache_dir) / "data.mdb").exists()


def early_plan(cfg: Config) -> SessionPlan | None:
    """The session a run of ``cfg`` opens first, when it embeds every chunk with its
    ``[model]`` table and that model needs nothing built; else None."""
    chain = cfg.run.providers or ["local"]
    if chain[0] != "local" or "local" in cfg.providers or not embeds_everything(cfg):
        return None  # the chain starts elsewhere; or the cache may hold every vector
    from embedgen.providers.factory import built_model_spec
    from embedgen.providers.onnx_device import device_choice
    from embedgen.providers.per_text import runs_per_text

    try:
        spec = built_model_spec(cfg.model)
        if spec is None:  # the default's variant is still to be built: the run builds it
            return None
        choice = device_choice(cfg.model)
        per_text = runs_per_text(cfg.model.one_text_per_call, choice.device, spec.onnx_path)
    except EmbedgenError:
        return None  # the provider raises it again, where the run reports its errors
    return session_plan(spec, cfg.model, choice, per_text)


@contextlib.contextmanager
def early_session(cfg: Config | None) -> Iterator[None]:
    """Within: the session of a local run of ``cfg`` opens on a thread from here, when
    :func:`early_plan` says which (None: no run on this process); the provider takes it
    with :func:`take_early`."""
    plan = early_plan(cfg) if cfg is not None else None
    if plan is None:
        yield
        return
    _EARLY.start(plan)
    try:
        yield
    finally:
        _EARLY.drop()


def take_early(plan: SessionPlan) -> Any:
    """The early session opened with ``plan``, or None (none was started, or another)."""
    return _EARLY.take(plan)
