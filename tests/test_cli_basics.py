"""The command shell: version, help, and fast start-up without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from embedgen import __version__
from embedgen.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"embedgen {__version__}"


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "config"):
        assert command in result.output


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys, json\n"
        "from embedgen.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['onnxruntime', 'pyarrow', 'httpx', 'lmdb', 'huggingface_hub', 'tokenizers',"
        " 'numpy', 'onnx']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "embedgen", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert __version__ in out.stdout
