"""Device selection rules, with the provider list faked at the selection function."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedgen.errors import DeviceUnavailableError
from embedgen.providers.onnx_device import select_device

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
DML = ["DmlExecutionProvider", "CPUExecutionProvider"]
BOTH = ["CUDAExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("available", "expected"),
    [(CPU, "cpu"), (CUDA, "cuda"), (DML, "directml"), (BOTH, "cuda")],
)
def test_auto_prefers_cuda_then_directml_then_cpu(available: list[str], expected: str) -> None:
    assert select_device("auto", available).device == expected


def test_explicit_cpu_is_cpu_even_with_gpus() -> None:
    choice = select_device("cpu", BOTH)
    assert choice.device == "cpu" and choice.providers == ["CPUExecutionProvider"]


def test_cuda_options_carry_device_id_and_memory_limit() -> None:
    choice = select_device("cuda", CUDA, device_id=1, memory_limit=2 * 1024**3)
    name, opts = choice.providers[0]
    assert name == "CUDAExecutionProvider"
    assert opts["device_id"] == 1 and opts["gpu_mem_limit"] == 2 * 1024**3
    assert choice.providers[-1] == "CPUExecutionProvider"


def test_directml_is_sequential_with_adapter() -> None:
    choice = select_device("directml", DML, adapter_id=2)
    assert choice.sequential
    assert choice.providers[0] == ("DmlExecutionProvider", {"device_id": 2})


@pytest.mark.parametrize("device", ["cuda", "directml"])
def test_unavailable_device_is_an_error_naming_the_package(device: str) -> None:
    with pytest.raises(DeviceUnavailableError) as info:
        select_device(device, CPU, packages=["onnxruntime 1.20.0"])
    msg = str(info.value)
    assert "onnxruntime 1.20.0" in msg and "CPUExecutionProvider" in msg
    assert "force_cpu_fallback" in msg
    assert info.value.exit_code == 2


def test_unavailable_device_falls_back_with_a_warning_when_forced() -> None:
    choice = select_device("directml", CPU, force_cpu_fallback=True, packages=["onnxruntime 1"])
    assert choice.device == "cpu"
    assert choice.warning and "directml" in choice.warning and "running on CPU" in choice.warning


def test_forced_fallback_in_a_real_run_warns_and_embeds(write_parquet, tmp_path) -> None:
    from typer.testing import CliRunner

    from embedgen.cli import app

    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\ndevice = "cuda"\nforce_cpu_fallback = true\n')
    src = write_parquet({"text": ["hello"]})
    result = CliRunner().invoke(app, ["run", str(src), "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "not available" in result.output and "running on CPU" in result.output


def test_gpu_builds_are_told_from_their_provider_libraries(tmp_path: Path) -> None:
    from embedgen.providers.onnx_device import available_providers, gpu_libraries_in

    cpu, cuda, dml = (tmp_path / n for n in ("cpu", "cuda", "dml"))
    for folder, lib in ((cpu, "libonnxruntime.so.1"), (cuda, "libonnxruntime_providers_cuda.so"),
                        (dml, "DirectML.dll")):  # fmt: skip
        folder.mkdir()
        (folder / lib).write_bytes(b"")
    assert not gpu_libraries_in(cpu)
    assert gpu_libraries_in(cuda) and gpu_libraries_in(dml)
    assert gpu_libraries_in(tmp_path / "missing")  # unknown layout: onnxruntime answers
    assert available_providers("cpu") == ["CPUExecutionProvider"]
