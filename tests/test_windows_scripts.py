"""The PowerShell scripts parse, document themselves, and call only what the CLI has.

Every ``embedgen`` call in ``windows/*.ps1`` goes through the ``$Embedgen`` variable
(``& $Embedgen doctor ...``) or the ``$EmbedgenArgs`` array (what the scheduled task
runs), with literal subcommand and option names, so this test can extract each call
and check it against the Typer/click command tree: the scripts cannot drift from the tool.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "windows").glob("*.ps1"))
SCRIPT_NAMES = [p.name for p in SCRIPTS]

ts = pytest.importorskip("tree_sitter")
ts_powershell = pytest.importorskip("tree_sitter_powershell")
_PARSER = ts.Parser(ts.Language(ts_powershell.language()))


def _parse(source: bytes) -> Any:
    return _PARSER.parse(source).root_node


def _walk(node: Any) -> Any:
    yield node
    for child in node.children:
        yield from _walk(child)


def _text(node: Any) -> str:
    return node.text.decode("utf-8")


def _problems(root: Any) -> list[str]:
    return [
        f"{'MISSING' if n.is_missing else n.type} at line {n.start_point[0] + 1}: {_text(n)[:60]!r}"
        for n in _walk(root)
        if n.type == "ERROR" or n.is_missing
    ]


# --- parsing and help -----------------------------------------------------------------


def test_the_scripts_are_there() -> None:
    assert SCRIPT_NAMES == [
        "Install-Embedgen.ps1",
        "Register-EmbedgenTask.ps1",
        "Unregister-EmbedgenTask.ps1",
    ]


def test_parse_check_catches_broken_powershell() -> None:
    assert _problems(_parse(b"if ($a) { Write-Host 'x'"))
    assert _problems(_parse(b"$x = @(1, 2"))
    assert not _problems(_parse(b"if ($a) { Write-Host 'x' }"))


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_parses_without_errors(name: str) -> None:
    root = _parse((REPO / "windows" / name).read_bytes())
    assert _problems(root) == []


_SCOPES = {"env", "global", "script", "local", "private", "using", "variable", "function"}


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_no_drive_qualified_variables_by_mistake(name: str) -> None:
    """``"$Config: x"`` is a PowerShell parse error that tree-sitter lets through."""
    root = _parse((REPO / "windows" / name).read_bytes())
    for node in _walk(root):
        if node.type == "expandable_string_literal":
            for m in re.finditer(r"(?<!`)\$(\w+):", _text(node)):
                assert m.group(1).lower() in _SCOPES, f"{name}: {_text(node)!r}"


def _help_and_params(path: Path) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """The comment-based help's sections, and each parameter's names (name + aliases)."""
    root = _parse(path.read_bytes())
    comment = next(n for n in root.children if n.type == "comment")
    help_text = _text(comment)
    assert help_text.startswith("<#") and help_text.endswith("#>")
    sections: dict[str, list[str]] = {}
    for m in re.finditer(r"^\.([A-Z]+)[ \t]*(\S*)", help_text, re.MULTILINE):
        sections.setdefault(m.group(1), []).append(m.group(2))
    params: dict[str, set[str]] = {}
    block = next(n for n in root.children if n.type == "param_block")
    for p in (n for n in _walk(block) if n.type == "script_parameter"):
        var = next(c for c in p.children if c.type == "variable")
        names = {_text(var).lstrip("$")}
        for attr in (n for n in _walk(p) if n.type == "attribute"):
            if _text(attr).lower().startswith("[alias("):
                names |= set(re.findall(r"'([^']+)'", _text(attr)))
        params[_text(var).lstrip("$")] = names
    return sections, params


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_comment_based_help_documents_every_parameter(name: str) -> None:
    sections, params = _help_and_params(REPO / "windows" / name)
    for section in ("SYNOPSIS", "DESCRIPTION", "EXAMPLE"):
        assert section in sections, f"{name}: no .{section}"
    documented = set(sections.get("PARAMETER", []))
    for param, names in params.items():
        assert names & documented, f"{name}: -{param} has no .PARAMETER help"
    all_names = set().union(*params.values())
    assert documented <= all_names, f"{name}: help for unknown parameters {documented - all_names}"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_scripts_support_whatif(name: str) -> None:
    source = (REPO / "windows" / name).read_text("utf-8")
    assert re.search(r"\[CmdletBinding\(SupportsShouldProcess = \$true\)\]", source)
    assert "$PSCmdlet.ShouldProcess(" in source


def test_register_script_sets_the_unattended_task_settings() -> None:
    source = (REPO / "windows" / "Register-EmbedgenTask.ps1").read_text("utf-8")
    for needle in (
        "-StartWhenAvailable",
        "-MultipleInstances IgnoreNew",
        "-ExecutionTimeLimit",
        "-RestartCount",
        "-RestartInterval",
        "Unregister-ScheduledTask",
        "-LogonType S4U",
        "-LogonType ServiceAccount",
        "embedgen-{date}.log",
    ):
        assert needle in source, needle


def test_the_scheduled_runs_keep_their_last_reports_beside_the_log(tmp_path: Path) -> None:
    """The task and the cron/systemd recipe write a dated JSON report and keep the newest N."""
    (run,) = [
        i for i in INVOCATIONS if i.script == "Register-EmbedgenTask.ps1" and i.tokens[0] == "run"
    ]
    assert "--report" in run.tokens and "--keep-reports" in run.tokens
    source = (REPO / "windows" / "Register-EmbedgenTask.ps1").read_text("utf-8")
    assert "Join-Path $LogDir 'embedgen-{date}.report.json'" in source
    assert "[int]$KeepReports = 30" in source
    out = _schedule("--platform", "linux", "--input", str(tmp_path / "c.jsonl"))
    cron = next(ln for ln in out.splitlines() if ln and not ln.startswith("#"))
    words = shlex.split(cron.split(" ", 5)[5])
    log = next(w for w in words if w.endswith("embedgen-{date}.log"))
    report = words[words.index("--report") + 1]
    assert report == log.removesuffix(".log") + ".report.json"
    assert words[words.index("--keep-reports") + 1] == "30"
    assert check_invocation(_command_tree(), words[1:]) == []


# --- embedgen invocations -------------------------------------------------------------


@dataclass
class Invocation:
    script: str
    line: int
    tokens: list[str | None]
    """Literal words and option names; None for a value computed at run time."""

    def __str__(self) -> str:
        words = " ".join(t if t is not None else "<value>" for t in self.tokens)
        return f"{self.script}:{self.line}: embedgen {words}"


def _literal(node: Any) -> str | None:
    """The value of a literal argument node, or None when it is computed."""
    if node.type in ("generic_token", "command_parameter"):
        return _text(node)
    strings = [n for n in _walk(node) if n.type == "string_literal"]
    dynamic = [n for n in _walk(node) if n.type in ("variable", "sub_expression")]
    if len(strings) == 1 and not dynamic and _text(node) == _text(strings[0]):
        raw = _text(strings[0])
        if raw.startswith("'"):
            return raw[1:-1].replace("''", "'")
        return raw[1:-1]
    return None


def _invocations(path: Path) -> list[Invocation]:
    root = _parse(path.read_bytes())
    found: list[Invocation] = []
    for node in _walk(root):
        if node.type == "command":
            name = next((c for c in node.children if c.type == "command_name_expr"), None)
            if name is None or _text(name) != "$Embedgen":
                continue
            elements = next((c for c in node.children if c.type == "command_elements"), None)
            args = [] if elements is None else elements.children
            tokens = [_literal(a) for a in args if a.type != "command_argument_sep"]
            found.append(Invocation(path.name, node.start_point[0] + 1, tokens))
        elif node.type == "assignment_expression":
            left, op, right = node.children[0], node.children[1], node.children[2]
            if _text(left) != "$EmbedgenArgs":
                continue
            array = next(n for n in _walk(right) if n.type == "array_expression")
            items = next(n for n in _walk(array) if n.type == "array_literal_expression")
            tokens = [_literal(n) for n in items.children if n.type == "unary_expression"]
            if _text(op) == "+=":
                assert found and found[-1].script == path.name, "+= before $EmbedgenArgs ="
                found[-1].tokens += tokens
            else:
                found.append(Invocation(path.name, node.start_point[0] + 1, tokens))
    return found


INVOCATIONS = [inv for p in SCRIPTS for inv in _invocations(p)]


def test_invocations_are_found() -> None:
    """The extraction sees the calls the scripts are known to make (so it cannot pass empty)."""
    commands = {(inv.script, inv.tokens[0]) for inv in INVOCATIONS}
    assert ("Install-Embedgen.ps1", "doctor") in commands
    assert ("Install-Embedgen.ps1", "download") in commands
    assert ("Register-EmbedgenTask.ps1", "doctor") in commands
    assert ("Register-EmbedgenTask.ps1", "run") in commands


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_embedgen_is_only_called_through_the_variable(name: str) -> None:
    root = _parse((REPO / "windows" / name).read_bytes())
    for node in _walk(root):
        if node.type == "command_name":
            assert not _text(node).lower().startswith("embedgen"), (
                f"{name}:{node.start_point[0] + 1}: call embedgen as & $Embedgen"
            )


def _command_tree() -> Any:
    from embedgen.cli import app

    return typer.main.get_command(app)


def check_invocation(root: Any, tokens: list[str | None]) -> list[str]:
    """Problems with ``embedgen <tokens>`` against the click tree (empty when fine).

    Duck-typed (groups have a ``commands`` dict): typer may bundle its own click.
    """
    cmd, i, path = root, 0, ["embedgen"]
    while isinstance(getattr(cmd, "commands", None), dict):
        word = tokens[i] if i < len(tokens) else None
        if word is None or word.startswith("-"):
            return [f"{' '.join(path)}: expected a literal subcommand, got {word!r}"]
        sub = cmd.commands.get(word)
        if sub is None:
            return [f"{' '.join(path)} has no subcommand {word!r}"]
        cmd, i, path = sub, i + 1, [*path, word]
    options = {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    problems = []
    rest = tokens[i:]
    for j, tok in enumerate(rest):
        if tok is None or not tok.startswith("-"):
            continue
        param = options.get(tok)
        if param is None:
            problems.append(f"{' '.join(path)} has no option {tok}")
        elif not getattr(param, "is_flag", False) and (j + 1 >= len(rest)):
            problems.append(f"{' '.join(path)} {tok} needs a value")
    return problems


@pytest.mark.parametrize("inv", INVOCATIONS, ids=str)
def test_script_invocation_exists_in_the_cli(inv: Invocation) -> None:
    assert check_invocation(_command_tree(), inv.tokens) == []


def test_invocation_check_catches_drift() -> None:
    root = _command_tree()
    assert check_invocation(root, ["doctor", "--json"]) == []
    assert check_invocation(root, ["doctr"]) == ["embedgen has no subcommand 'doctr'"]
    assert check_invocation(root, ["doctor", "--jsn"]) == ["embedgen doctor has no option --jsn"]
    assert check_invocation(root, ["doctor", "--config"]) == [
        "embedgen doctor --config needs a value"
    ]
    assert check_invocation(root, ["schedule"]) == [
        "embedgen schedule: expected a literal subcommand, got None"
    ]


# --- embedgen schedule print ----------------------------------------------------------

runner = CliRunner()


def _schedule(*args: str) -> str:
    from embedgen.cli import app

    result = runner.invoke(app, ["schedule", "print", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_schedule_print_windows_calls_the_register_script_with_its_parameters() -> None:
    out = _schedule(
        "--platform",
        "windows",
        "--input",
        r"D:\corpus\docs.parquet",
        "--config",
        r"C:\cfg.toml",
        "--days",
        "mon,thu",
        "--at",
        "23:30",
    )
    assert _problems(_parse(out.encode())) == []
    assert "Register-EmbedgenTask.ps1" in out
    _, params = _help_and_params(REPO / "windows" / "Register-EmbedgenTask.ps1")
    known = set().union(*params.values())
    code = "\n".join(ln for ln in out.splitlines() if not ln.startswith("#"))
    used = re.findall(r"(?<![\w-])-([A-Z]\w+)", code)
    assert {"Input", "Config", "At", "Weekly", "DaysOfWeek", "LogonType"} <= set(used)
    assert set(used) <= known, set(used) - known
    assert "-DaysOfWeek 'Monday','Thursday'" in out
    assert "'D:\\corpus\\docs.parquet'" in out


def test_schedule_print_linux_gives_cron_and_systemd_with_real_run_options(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "my corpus.jsonl"
    out = _schedule("--platform", "linux", "--input", str(corpus), "--at", "3:05")
    cron = next(ln for ln in out.splitlines() if ln and not ln.startswith("#"))
    fields = cron.split(" ", 5)
    assert fields[:5] == ["5", "3", "*", "*", "*"]
    words = shlex.split(fields[5])
    assert Path(words[0]).is_absolute()
    assert words[1:3] == ["run", str(corpus)]
    assert check_invocation(_command_tree(), words[1:]) == []
    assert any(w.endswith("embedgen-{date}.log") for w in words)
    assert "OnCalendar=*-*-* 03:05:00" in out
    assert "Persistent=true" in out
    exec_start = next(ln for ln in out.splitlines() if ln.startswith("ExecStart="))
    assert f'"{corpus}"' in exec_start


def test_schedule_print_rejects_a_bad_time_and_day() -> None:
    from embedgen.cli import app

    assert runner.invoke(app, ["schedule", "print", "--at", "25:00"]).exit_code == 2
    assert runner.invoke(app, ["schedule", "print", "--days", "t"]).exit_code == 2


# --- configs/windows_config.toml and configs/default.toml -----------------------------


def test_windows_config_loads_and_folds_into_model_and_run() -> None:
    from embedgen.config import load

    cfg = load(REPO / "configs" / "windows_config.toml")
    assert cfg.model.model == "bge-m3"
    assert cfg.model.device == "directml"
    assert cfg.model.adapter_id == 0 and cfg.model.device_id == 0
    assert cfg.model.num_threads == 0
    assert cfg.model.memory_limit == 2 * 1024**3
    assert cfg.model.force_cpu_fallback is False
    assert cfg.model.warmup_batches == 1
    assert cfg.run.max_tokens == 8192
    assert cfg.run.batch_size == 32
    assert cfg.run.use_cache is True
    notes = cfg.no_effect()
    assert [n.split(":")[0] for n in notes] == [
        "directml.memory_budget_mb",
        "bge_m3_local.memory_pool_size",
    ]


def test_windows_config_documents_every_key_it_sets() -> None:
    text = (REPO / "configs" / "windows_config.toml").read_text("utf-8")
    blocks = re.split(r"\n\s*\n", text)
    for block in blocks:
        lines = [ln for ln in block.strip().splitlines() if not ln.startswith("[")]
        keys = [ln for ln in lines if re.match(r"^\w+ = ", ln)]
        for key in keys:
            assert lines[0].startswith("#"), f"no comment above {key!r}"
    no_effect = {"debug_layer", "memory_budget_mb", "memory_pool_size", "preload_model"}
    for key in no_effect:
        block = next(b for b in blocks if re.search(rf"^{key} = ", b, re.MULTILINE))
        assert "NO EFFECT" in block, key


def _commented_keys(text: str) -> dict[str, dict[str, str]]:
    """``# key = value`` lines under each ``[table]`` header."""
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"^\[(\w+)\]$", line):
            current = tables.setdefault(m.group(1), {})
        elif re.match(r"^# \[[\w.]+\]", line):
            current = None  # a commented-out table (the [slots.NAME] examples) ends the last one
        elif (m := re.match(r"^# (\w+) = (.+)$", line)) and current is not None:
            current[m.group(1)] = m.group(2)
    return tables


def test_default_config_gives_the_defaults_and_lists_every_key(tmp_path: Path) -> None:
    from embedgen.config import Config, OnnxConfig, RunConfig, load

    path = REPO / "configs" / "default.toml"
    assert load(path).model_dump() == Config().model_dump()
    tables = _commented_keys(path.read_text("utf-8"))
    assert set(tables["run"]) == set(RunConfig.model_fields)
    assert set(tables["model"]) == set(OnnxConfig.model_fields) - {"kind"}
    # Every commented example is valid when uncommented.
    body = "\n".join(
        f"[{table}]\n" + "\n".join(f"{k} = {v}" for k, v in keys.items())
        for table, keys in tables.items()
    )
    uncommented = tmp_path / "all.toml"
    uncommented.write_text(body)
    cfg = load(uncommented)
    assert cfg.model.model == "bge-m3" and cfg.run.log_file == "logs/embedgen-{date}.log"


def test_documented_exit_codes_match_the_errors() -> None:
    """docs/windows.md and the Register script's help list the codes errors.py defines."""
    from embedgen import errors

    codes = {
        errors.EXIT_OK: "done",
        errors.EXIT_FAILED: "failed",
        errors.EXIT_USAGE: "bad usage or config",
        errors.EXIT_BUDGET: "stopped on budget",
        errors.EXIT_SKIPPED: "some documents",
        errors.EXIT_LOCKED: "another run holds the output lock",
    }
    assert errors.LockHeld.exit_code == errors.EXIT_LOCKED == 5
    doc = (REPO / "docs" / "windows.md").read_text("utf-8")
    table = dict(re.findall(r"^\| (\d) \| ([^|]+) \|", doc, re.MULTILINE))
    script = (REPO / "windows" / "Register-EmbedgenTask.ps1").read_text("utf-8")
    for code, words in codes.items():
        assert words in table[str(code)], (code, table.get(str(code)))
        assert re.search(rf"{code} \(0x{code:X}\) [^\n]*{words}", script), code
