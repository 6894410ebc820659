"""``embedgen schedule print``: how to run the configured job nightly on this platform.

Windows: the ``Register-EmbedgenTask.ps1`` invocation. Linux (and other POSIX):
a crontab line and a systemd user service + timer pair. Paths are made absolute,
because scheduled jobs do not start in the current folder.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path, PureWindowsPath

import typer

schedule_app = typer.Typer(
    name="schedule",
    help="Run embedgen on a schedule (Windows Task Scheduler, cron, systemd).",
    no_args_is_help=True,
)

_SCRIPT = "Register-EmbedgenTask.ps1"
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def embedgen_executable() -> str:
    """Absolute path of the running ``embedgen`` command (or the one on PATH)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name.lower() in ("embedgen", "embedgen.exe"):
        found = argv0 if argv0.is_file() else shutil.which(str(argv0))
        if found:
            return str(Path(found).resolve())
    which = shutil.which("embedgen")
    return str(Path(which).resolve()) if which else "embedgen"


def parse_days(days: str | None) -> list[str]:
    """``mon,fri`` → ``["Monday", "Friday"]``; empty for every day."""
    if not days:
        return []
    out = []
    for word in days.split(","):
        w = word.strip().lower()
        match = [d for d in _DAYS if w and d.lower().startswith(w)]
        if len(match) != 1:
            raise typer.BadParameter(f"unknown day {word.strip()!r}; use e.g. Mon,Wed,Fri")
        if match[0] not in out:
            out.append(match[0])
    return out


def _ps_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def windows_text(
    *,
    script: str,
    config: str | None,
    input_: str,
    output: str | None,
    at: str,
    days: list[str],
    venv: str | None,
) -> str:
    call = f'& "{script}"' if script.startswith("$env:") else f"& {_ps_quote(script)}"
    args = [call, f"-Input {_ps_quote(input_)}"]
    if output:
        args.append(f"-Output {_ps_quote(output)}")
    if config:
        args.append(f"-Config {_ps_quote(config)}")
    args.append(f"-At {_ps_quote(at)}")
    if days:
        args.append("-Weekly -DaysOfWeek " + ",".join(_ps_quote(d) for d in days))
    else:
        args.append("-Daily")
    if venv:
        args.append(f"-VenvPath {_ps_quote(venv)}")
    args.append("-LogonType S4U")
    lines = [
        "# In an elevated PowerShell. -LogonType S4U runs without a stored password but has",
        "# no network credentials (UNC inputs fail); use -LogonType Password for network",
        "# shares. See Get-Help Register-EmbedgenTask.ps1 -Full and docs/windows.md.",
        " `\n    ".join(args),
    ]
    return "\n".join(lines) + "\n"


def register_script_path(here: bool) -> str:
    """Where Register-EmbedgenTask.ps1 is: beside the venv (installer copy) or in the repo."""
    if here:
        for c in (
            Path(sys.prefix).parent / "windows" / _SCRIPT,
            Path(__file__).resolve().parents[2] / "windows" / _SCRIPT,
        ):
            if c.is_file():
                return str(c)
    return str(PureWindowsPath("$env:LOCALAPPDATA", "embedgen", "windows", _SCRIPT))


def _sh_quote(value: str) -> str:
    return (
        value
        if re.fullmatch(r"[\w@%+=:,./{}-]+", value)
        else "'" + value.replace("'", "'\\''") + "'"
    )


def _systemd_quote(value: str) -> str:
    value = value.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[\w@+=:,./{}-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


KEEP_REPORTS = 30
"""Run reports a scheduled job keeps beside its logs (``--keep-reports``)."""


def linux_text(
    *,
    exe: str,
    config: str | None,
    input_: str,
    output: str | None,
    at: str,
    days: list[str],
    log: str,
) -> str:
    args = ["run", input_]
    if output:
        args += ["--output", output]
    if config:
        args += ["--config", config]
    report = log.removesuffix(".log") + ".report.json"
    args += ["--log-file", log, "--report", report, "--keep-reports", str(KEEP_REPORTS), "--quiet"]
    hour, minute = (int(p) for p in at.split(":"))
    dow = ",".join(str((_DAYS.index(d) + 1) % 7) for d in days) or "*"
    cal_days = ",".join(d[:3] for d in days)
    calendar = f"{cal_days + ' ' if cal_days else ''}*-*-* {hour:02d}:{minute:02d}:00"
    cron_cmd = " ".join(_sh_quote(a) for a in [exe, *args]).replace("%", "\\%")
    exec_start = " ".join(_systemd_quote(a) for a in [exe, *args])
    return f"""\
# --- crontab (crontab -e) ---
{minute} {hour} * * {dow} {cron_cmd}

# --- or systemd: ~/.config/systemd/user/embedgen-nightly.service ---
[Unit]
Description=embedgen nightly run

[Service]
Type=oneshot
ExecStart={exec_start}

# --- ~/.config/systemd/user/embedgen-nightly.timer ---
[Unit]
Description=Run embedgen nightly

[Timer]
OnCalendar={calendar}
Persistent=true

[Install]
WantedBy=timers.target

# then: systemctl --user daemon-reload && systemctl --user enable --now embedgen-nightly.timer
# and, to run while logged out: loginctl enable-linger "$USER"
# exit codes: 0 done, 1 failed, 2 usage/config, 3 budget, 4 skipped documents, 5 locked,
#   6 batch jobs submitted (mode = "batch" with --no-wait): the next run collects them,
#   130 interrupted; each run's JSON report (docs/report.md) lies beside its log, the
#   newest {KEEP_REPORTS} kept
"""


@schedule_app.command("print")
def print_schedule(
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file for the job."),
    input_: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="Corpus to embed (file, folder or glob) [default: INPUT placeholder].",
    ),
    output: str | None = typer.Option(None, "--output", "-o", help="Output Parquet file."),
    at: str = typer.Option("02:00", "--at", help="Time of day, HH:MM (24-hour)."),
    days: str | None = typer.Option(
        None, "--days", help="Run weekly on these days (e.g. Mon,Thu) instead of daily."
    ),
    target: str | None = typer.Option(
        None, "--platform", help="windows or linux [default: this machine's]."
    ),
) -> None:
    """Print how to run the job on a schedule: a Task Scheduler command or cron/systemd units."""
    plat = (target or ("windows" if sys.platform == "win32" else "linux")).lower()
    if plat not in ("windows", "linux"):
        raise typer.BadParameter("expected windows or linux", param_hint="--platform")
    if not _TIME.match(at):
        raise typer.BadParameter(f"expected HH:MM, got {at!r}", param_hint="--at")
    day_list = parse_days(days)
    here = plat == ("windows" if sys.platform == "win32" else "linux")

    def absolute(p: str | Path | None) -> str | None:
        if p is None:
            return None
        return str(Path(p).expanduser().absolute()) if here else str(p)

    inp = (absolute(input_) if input_ else None) or "INPUT"
    if plat == "windows":
        venv = sys.prefix if here and sys.prefix != sys.base_prefix else None
        text = windows_text(
            script=register_script_path(here),
            config=absolute(config),
            input_=inp,
            output=absolute(output),
            at=at,
            days=day_list,
            venv=venv,
        )
    else:
        import platformdirs

        log_dir = Path(platformdirs.user_log_dir("embedgen", appauthor=False))
        text = linux_text(
            exe=embedgen_executable() if here else "embedgen",
            config=absolute(config),
            input_=inp,
            output=absolute(output),
            at=at,
            days=day_list,
            log=str(log_dir / "embedgen-{date}.log"),
        )
    if inp == "INPUT":
        text = "# replace INPUT with the corpus to embed (or pass --input)\n" + text
    typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
