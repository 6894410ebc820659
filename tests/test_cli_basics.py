"""The command shell: version, help, and fast start-up without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
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


@pytest.mark.parametrize("args", [["--help"], ["models"], ["run", "--help"]])
def test_help_and_models_do_not_import_heavy_modules(args: list[str]) -> None:
    code = (
        "import sys, json\n"
        "from embedgen.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
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


def _leaves(command, path=()):  # type: ignore[no-untyped-def]
    subs = getattr(command, "commands", None)
    if subs is None:
        yield path, command
        return
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def test_help_shows_the_defaults_that_option_texts_state() -> None:
    """``[default: ...]`` in an option's help reaches the rich help (markup swallowed it)."""
    import re

    import typer.main

    checked = 0
    for path, command in _leaves(typer.main.get_command(app)):
        stated = [
            m for p in command.params for m in re.findall(r"\[default: [^\]]*\]", p.help or "")
        ]
        if not stated:
            continue
        result = runner.invoke(app, [*path, "--help"], env={"TERMINAL_WIDTH": "2000"})
        assert result.exit_code == 0, result.output
        flat = " ".join(result.output.replace("│", " ").split())
        for text in stated:
            assert " ".join(text.split()) in flat, (path, text)
        checked += 1
    assert checked >= 4  # run, doctor, cost-estimate, schedule print at least


def _pool_after_main(preset: str | None) -> str:
    import os

    code = (
        "from embedgen.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import pyarrow as pa\n"
        "print(pa.default_memory_pool().backend_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if preset:
        env["ARROW_DEFAULT_MEMORY_POOL"] = preset
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert "warning" not in out.stderr.lower(), out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_the_command_gives_arrow_jemalloc_where_pyarrow_has_it() -> None:
    """mimalloc, pyarrow's default, keeps freed memory and glibc's allocator fragments over a
    long run: a cached 1,000,000-row run peaked at 193 and 125-130 MB with them, 107 MB
    with jemalloc (#23). Without jemalloc in the build, the system allocator."""
    import pyarrow as pa

    try:
        pa.jemalloc_memory_pool()
        expected = "jemalloc"
    except NotImplementedError:
        expected = "system"
    assert _pool_after_main(None) == expected
    from embedgen.cli import arrow_pool

    assert arrow_pool() == expected


def test_the_users_arrow_pool_wins() -> None:
    assert _pool_after_main("mimalloc") == "mimalloc"


def test_options_not_given_are_not_coerced() -> None:
    """typer builds a pydantic adapter per parameter of the invoked command, ~2 ms each,
    before looking at the value: only the given ones get one (#22); a given value is
    still checked by typer."""
    code = (
        "import typer._coercion as c, typer.core as core\n"
        "built = []\n"
        "real = c.build_runtime_param\n"
        "c.build_runtime_param = core.build_runtime_param = lambda d: built.append(d) or real(d)\n"
        "from embedgen.cli import main\n"
        "try:\n"
        "    main(['run', 'no-such-file.parquet', '--limit', '3'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(len(built))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import inspect

    from embedgen.cli.run_cmd import run

    assert len(inspect.signature(run).parameters) > 30
    # the given ones and those whose default is not None (33 before)
    assert int(out.stdout.strip().splitlines()[-1]) <= 8
    result = runner.invoke(app, ["run", "no-such-file.parquet", "--limit", "three"])
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.output
