"""``embedgen config init | show``: write a starting config, print the effective one."""

from __future__ import annotations

from pathlib import Path

import typer

from embedgen.errors import UsageError

config_app = typer.Typer(
    help="Write a starting config file or show the effective config.", no_args_is_help=True
)

TEMPLATE = Path(__file__).resolve().parent.parent / "data" / "default.toml"


@config_app.command("init")
def init(
    path: Path = typer.Argument(Path("embedgen.toml"), help="Where to write the file."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented config file with every key at its default."""
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.read_text("utf-8"), "utf-8")
    typer.echo(f"wrote {path}")


@config_app.command("show")
def show(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
) -> None:
    """Print the effective config (file plus defaults) as TOML, and keys with no effect."""
    import tomli_w

    from embedgen.config import load

    cfg = load(config)
    data = cfg.model_dump(exclude_none=True, exclude={"bge_m3_local", "directml", "performance"})
    typer.echo(f"# effective config{' from ' + str(config) if config else ' (defaults)'}")
    typer.echo(tomli_w.dumps(data).rstrip())
    for note in cfg.no_effect():
        typer.echo(f"# no effect: {note}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
