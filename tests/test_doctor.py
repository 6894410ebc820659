"""``embedgen doctor``: each check against a real environment, and the command's exit code."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedgen import doctor
from embedgen.config import load
from embedgen.models.manifest import FileEntry, Manifest, write_manifest

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _fake_dist(site: Path, name: str, version: str) -> None:
    """Installed-package metadata as pip writes it, without the package's files."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _by_name(checks: list[doctor.Check], name: str) -> doctor.Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, checks
    return found[0]


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def _app():  # type: ignore[no-untyped-def]
    from embedgen.cli import app

    return app


# --- onnxruntime packages -------------------------------------------------------------


def test_single_onnxruntime_install_passes() -> None:
    checks = doctor.check_onnxruntime()
    assert _by_name(checks, "onnxruntime packages").status == "pass"
    providers = _by_name(checks, "onnxruntime providers")
    assert providers.status == "pass"
    assert "CPUExecutionProvider" in providers.detail


def test_conflicting_onnxruntime_installs_fail(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _fake_dist(site, "onnxruntime-directml", "1.20.1")
    checks = doctor.check_onnxruntime([str(site), *sys.path])
    pkgs = _by_name(checks, "onnxruntime packages")
    assert pkgs.status == "fail"
    assert "onnxruntime-directml 1.20.1" in pkgs.detail
    assert "pip uninstall -y onnxruntime onnxruntime-directml" in pkgs.detail
    # The flavour claims DirectML, but the module that imports has no such provider.
    providers = _by_name(checks, "onnxruntime providers")
    assert providers.status == "warn"
    assert "DmlExecutionProvider is missing" in providers.detail


def test_doctor_command_fails_on_conflicting_installs(tmp_path: Path) -> None:
    """End to end: a second distribution on the path makes `embedgen doctor` exit 1."""
    site = tmp_path / "site"
    _fake_dist(site, "onnxruntime-gpu", "1.20.0")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from embedgen.cli import main; main()",
            "doctor",
            "--json",
            "--output-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "fail"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["onnxruntime packages"]["status"] == "fail"
    assert "onnxruntime-gpu 1.20.0" in checks["onnxruntime packages"]["detail"]


# --- device ---------------------------------------------------------------------------


def test_cpu_device_runs_a_tiny_session() -> None:
    check = doctor.check_device(load(None))
    assert check.status == "pass"
    assert "CPUExecutionProvider" in check.detail


@pytest.mark.parametrize("device", ["cuda", "directml"])
def test_unavailable_device_fails_naming_the_installed_package(tmp_path: Path, device: str) -> None:
    import onnxruntime

    if ("CUDA" if device == "cuda" else "Dml") + "ExecutionProvider" in (
        onnxruntime.get_available_providers()
    ):
        pytest.skip(f"{device} is available here")
    cfg = load(_write_config(tmp_path, f'[model]\ndevice = "{device}"\n'))
    check = doctor.check_device(cfg)
    assert check.status == "fail"
    assert f"device {device!r} is not available" in check.detail
    assert f"onnxruntime {onnxruntime.__version__}" in check.detail


def test_unavailable_device_with_cpu_fallback_warns(tmp_path: Path) -> None:
    cfg = load(
        _write_config(
            tmp_path, '[bge_m3_local]\ndevice = "directml"\n[directml]\nforce_cpu_fallback = true\n'
        )
    )
    check = doctor.check_device(cfg, available=["CPUExecutionProvider"])
    assert check.status == "warn"
    assert "running on CPU" in check.detail


def test_listed_provider_that_does_not_load_fails(tmp_path: Path) -> None:
    """onnxruntime-gpu lists CUDA even when its libraries are missing; the session then
    quietly runs on CPU. The provider list is faked at selection; the session is real."""
    cfg = load(_write_config(tmp_path, '[model]\ndevice = "cuda"\n'))
    check = doctor.check_device(cfg, available=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert check.status == "fail"
    assert "the session ran on CPUExecutionProvider" in check.detail


def test_tiny_model_is_valid_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(doctor.tiny_model_bytes())
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Add"]


# --- models ---------------------------------------------------------------------------


def _model_folder(root: Path, name: str, payload: bytes) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    files = {"model.onnx": payload, "tokenizer.json": b"{}"}
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    entries = [
        FileEntry(path=rel, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        for rel, data in files.items()
    ]
    write_manifest(folder, Manifest(name=name, onnx_file="model.onnx", files=entries))
    return folder


def test_model_folders_are_verified(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _model_folder(root, "good", b"onnx bytes")
    short = _model_folder(root, "short", b"onnx bytes")
    (short / "model.onnx").write_bytes(b"onnx")
    flipped = _model_folder(root, "flipped", b"onnx bytes")
    (flipped / "model.onnx").write_bytes(b"ONNX BYTES")  # same size, other content
    gone = _model_folder(root, "gone", b"onnx bytes")
    (gone / "tokenizer.json").unlink()

    by_size = {c.name: c for c in doctor.check_models(root)}
    assert by_size["model good"].status == "pass"
    assert by_size["model flipped"].status == "pass"  # sizes only by default
    assert by_size["model short"].status == "fail"
    assert "model.onnx has 4 bytes, expected 10" in by_size["model short"].detail
    assert by_size["model gone"].status == "fail"
    assert "tokenizer.json is missing" in by_size["model gone"].detail

    hashed = {c.name: c for c in doctor.check_models(root, verify_hashes=True)}
    assert hashed["model good"].status == "pass"
    assert hashed["model flipped"].status == "fail"
    assert "wrong sha256" in hashed["model flipped"].detail


def test_no_models_dir_passes(tmp_path: Path) -> None:
    (check,) = doctor.check_models(tmp_path / "none")
    assert check.status == "pass"


def test_default_model_sha256_is_checked() -> None:
    check = doctor.check_default_model()
    assert check.status == "pass"
    assert "sha256 verified" in check.detail


def test_configured_model_that_is_missing_fails(tmp_path: Path) -> None:
    cfg = load(_write_config(tmp_path, '[model]\nmodel = "not-downloaded"\n'))
    check = doctor.check_configured_model(cfg)
    assert check.status == "fail"
    assert "`embedgen models` lists the names it knows" in check.detail
    assert "embedgen download" not in check.detail  # download cannot fetch an unknown name
    cfg = load(_write_config(tmp_path, '[model]\nmodel = "bge-m3"\n'))
    check = doctor.check_configured_model(cfg)
    assert check.status == "fail" and "embedgen download bge-m3" in check.detail


# --- folders --------------------------------------------------------------------------


def test_writable_dir_passes_and_missing_dir_will_be_created(tmp_path: Path) -> None:
    assert doctor.check_dir("cache dir", tmp_path).status == "pass"
    check = doctor.check_dir("cache dir", tmp_path / "a" / "b")
    assert check.status == "pass"
    assert "will be created" in check.detail
    assert not (tmp_path / "a").exists()  # the check leaves nothing behind


def test_dir_under_a_regular_file_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    check = doctor.check_dir("cache dir", blocker / "cache")
    assert check.status == "fail"
    assert "is not a folder" in check.detail
    assert doctor.check_dir("output dir", blocker).status == "fail"


def test_low_free_space_warns(tmp_path: Path) -> None:
    check = doctor.check_dir("output dir", tmp_path, min_free=1 << 62)
    assert check.status == "warn"
    assert "free" in check.detail


# --- config and keys ------------------------------------------------------------------


def test_windows_config_keys_without_effect_are_warnings() -> None:
    checks, cfg = doctor.check_config(REPO / "configs" / "windows_config.toml")
    assert cfg is not None
    assert checks[0].status == "pass"
    warned = [c.detail for c in checks if c.status == "warn"]
    assert any("directml.memory_budget_mb" in d for d in warned)
    assert any("bge_m3_local.memory_pool_size" in d for d in warned)
    assert all(d.startswith("has no effect: ") for d in warned)


def test_invalid_config_fails(tmp_path: Path) -> None:
    checks, cfg = doctor.check_config(_write_config(tmp_path, "[model]\ndevise = 'cpu'\n"))
    assert cfg is None
    assert checks[0].status == "fail"
    assert "model.devise: unknown key" in checks[0].detail


def test_env_vars_are_checked_by_name_never_by_value() -> None:
    environ = {"GOOD_KEY": "sk-secret-value", "BLANK_KEY": "  "}
    checks = doctor.check_env_vars(
        {"a": ("GOOD_KEY", True), "b": ("BLANK_KEY", True), "c": ("MISSING_KEY", False)}, environ
    )
    status = {c.name: c.status for c in checks}
    assert status == {"api key a": "pass", "api key b": "fail", "api key c": "warn"}
    text = " ".join(c.detail for c in checks)
    assert "GOOD_KEY is set" in text and "BLANK_KEY is not set" in text
    assert "sk-secret-value" not in text


def test_missing_api_key_variable_in_config_fails(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path,
        '[run]\nproviders = ["openai"]\n[providers.openai]\nkind = "openai"\n'
        'model = "text-embedding-3-small"\napi_key_env = "EMBEDGEN_TEST_MISSING_KEY"\n',
    )
    checks, cfg = doctor.check_config(path)
    assert cfg is not None, checks[0].detail
    (check,) = doctor.check_api_keys(cfg, {})
    assert check.status == "fail"
    assert "EMBEDGEN_TEST_MISSING_KEY is not set" in check.detail
    (check,) = doctor.check_api_keys(cfg, {"EMBEDGEN_TEST_MISSING_KEY": "x"})
    assert check.status == "pass"


# --- the command ----------------------------------------------------------------------


def test_doctor_passes_here_and_prints_one_line_per_check(tmp_path: Path) -> None:
    result = runner.invoke(_app(), ["doctor", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert all(ln.split(" ", 1)[0] in ("PASS", "WARN", "FAIL") for ln in lines[:-1])
    assert any(ln.startswith("PASS device: ") for ln in lines)
    assert lines[-1].endswith("0 failed")


def test_doctor_json_and_exit_code_on_unwritable_cache_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = runner.invoke(
        _app(),
        ["doctor", "--json", "--cache-dir", str(blocker / "cache"), "--output-dir", str(tmp_path)],
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["status"] == "fail"
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["cache dir"]
    assert set(failed[0]) == {"name", "status", "detail"}


def test_doctor_with_windows_config_fails_here_without_directml(tmp_path: Path) -> None:
    result = runner.invoke(
        _app(),
        [
            "doctor",
            "--config",
            str(REPO / "configs" / "windows_config.toml"),
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "FAIL device: device 'directml' is not available" in result.output
    assert "WARN config: has no effect: directml.memory_budget_mb" in result.output


def test_log_dir_from_the_config_is_checked(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    log_file = (blocker / "embedgen-{date}.log").as_posix()
    cfg = _write_config(tmp_path, f'[run]\nlog_file = "{log_file}"\n')
    checks = doctor.run_checks(doctor.DoctorOptions(config=cfg, output_dir=tmp_path))
    check = _by_name(checks, "log dir")
    assert check.status == "fail"
    assert str(blocker) in check.detail
