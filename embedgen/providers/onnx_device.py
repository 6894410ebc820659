"""Choosing onnxruntime execution providers for a requested device.

Pure functions over the list of available providers, so the rules are testable
without a GPU: tests pass a fake ``available`` list here, not to a session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.errors import DeviceUnavailableError

if TYPE_CHECKING:
    from embedgen.config import OnnxConfig

EP = {
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")
GPU_LIBRARY_MARKS = ("providers_cuda", "providers_tensorrt", "providers_rocm", "directml")
"""Parts of the file names that onnxruntime builds with a GPU provider ship in ``capi/``."""


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    """What will run: ``cpu``, ``cuda`` or ``directml``."""
    providers: list[Any]
    """The ``providers=`` argument for ``InferenceSession`` (names or (name, options))."""
    warning: str | None = None
    """Set when the asked-for device was unavailable and CPU was chosen instead."""
    sequential: bool = False
    """DirectML needs sequential execution and no memory pattern."""
    notes: list[str] = field(default_factory=list)


def installed_ort_packages() -> list[str]:
    """Distributions that provide the ``onnxruntime`` module (several means a conflict)."""
    from importlib import metadata

    found = []
    for name in ORT_PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def may_offer_gpu() -> bool:
    """Whether the installed onnxruntime could offer a GPU provider, told without importing it.

    GPU builds ship their provider libraries (``libonnxruntime_providers_cuda.so``,
    ``DirectML.dll`` ...) in ``onnxruntime/capi``; the CPU package has none. Importing
    onnxruntime to ask costs a fully cached run 0.1-0.2 s it never needs otherwise.
    """
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    if spec is None:
        return False
    return any(gpu_libraries_in(Path(p) / "capi") for p in spec.submodule_search_locations or ())


def available_providers(requested: str) -> list[str]:
    """The execution providers :func:`select_device` chooses from for ``requested``.

    For ``cpu``, and for ``auto`` without a GPU build installed, that is the CPU alone,
    known without importing onnxruntime.
    """
    if requested == "cpu" or (requested == "auto" and not may_offer_gpu()):
        return [EP["cpu"]]
    import onnxruntime as ort

    return list(ort.get_available_providers())


def gpu_libraries_in(capi: Path) -> bool:
    """Whether ``capi`` holds a GPU provider library (True when it cannot be listed)."""
    try:
        names = [n.lower() for n in os.listdir(capi)]
    except OSError:
        return True  # an unknown layout: let onnxruntime itself answer
    return any(mark in n for n in names for mark in GPU_LIBRARY_MARKS)


def _describe_install(available: list[str], packages: list[str] | None) -> str:
    pkgs = ", ".join(packages if packages is not None else installed_ort_packages()) or "none"
    return f"installed onnxruntime package(s): {pkgs}; available providers: {', '.join(available)}"


def select_device(
    requested: str,
    available: list[str],
    *,
    force_cpu_fallback: bool = False,
    device_id: int = 0,
    adapter_id: int = 0,
    memory_limit: int | None = None,
    packages: list[str] | None = None,
) -> DeviceChoice:
    """Pick execution providers for ``requested`` (auto, cpu, cuda, directml).

    ``auto`` picks CUDA, then DirectML, then CPU. An explicit device that is not
    available falls back to CPU with a warning only when ``force_cpu_fallback``;
    otherwise it is a :class:`DeviceUnavailableError` naming the installed package.
    """
    cpu = DeviceChoice("cpu", ["CPUExecutionProvider"])
    if requested == "auto":
        if EP["cuda"] in available:
            requested = "cuda"
        elif EP["directml"] in available:
            requested = "directml"
        else:
            return cpu
    if requested == "cpu":
        return cpu
    if requested not in ("cuda", "directml"):
        raise DeviceUnavailableError(
            f"unknown device {requested!r}: expected auto, cpu, cuda or directml"
        )
    if EP[requested] not in available:
        hint = "onnxruntime-gpu" if requested == "cuda" else "onnxruntime-directml"
        msg = (
            f"device {requested!r} is not available ({_describe_install(available, packages)}); "
            f"install {hint} in place of other onnxruntime packages"
        )
        if force_cpu_fallback:
            return DeviceChoice("cpu", ["CPUExecutionProvider"], warning=msg + "; running on CPU")
        raise DeviceUnavailableError(msg + ", or set force_cpu_fallback = true to run on CPU")
    if requested == "cuda":
        opts: dict[str, Any] = {"device_id": device_id}
        if memory_limit:
            opts["gpu_mem_limit"] = memory_limit
            opts["arena_extend_strategy"] = "kSameAsRequested"
        return DeviceChoice("cuda", [(EP["cuda"], opts), "CPUExecutionProvider"])
    return DeviceChoice(
        "directml",
        [(EP["directml"], {"device_id": adapter_id}), "CPUExecutionProvider"],
        sequential=True,
    )


def device_choice(cfg: OnnxConfig, available: list[str] | None = None) -> DeviceChoice:
    """:func:`select_device` for a ``[model]`` table (``available``: what to choose from,
    by default what this onnxruntime offers)."""
    return select_device(
        cfg.device,
        available if available is not None else available_providers(cfg.device),
        force_cpu_fallback=cfg.force_cpu_fallback,
        device_id=cfg.device_id,
        adapter_id=cfg.adapter_id,
        memory_limit=cfg.memory_limit,
    )
