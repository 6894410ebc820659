"""Config validation: errors name the key path; sizes; overrides; init and show."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.config import load, parse_size
from embedgen.errors import ConfigError

runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[run]\nbatch_size = "big"\n', "run.batch_size: expected an integer, got 'big'"),
        ("[run]\nbatchsize = 3\n", "run.batchsize: unknown key"),
        ("[nonsense]\nx = 1\n", "nonsense: unknown key"),
        ('[model]\ndevice = "tpu"\n', "model.device: expected one of"),
        ("[run]\noverlap = -1\n", "run.overlap"),
        ('[run]\nno_text = "yes"\n', "run.no_text: expected true or false"),
        ('[model]\nmemory_limit = "lots"\n', "model.memory_limit"),
        ('[bge_m3_local]\nmemory_pool_size = "2XB"\n', "bge_m3_local.memory_pool_size"),
        ('[run]\nproviders = ["nope"]\n', "run.providers: 'nope' has no [providers.nope]"),
        ("[run\n", "invalid TOML"),
    ],
)
def test_validation_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_config_error_through_run_exits_2(tmp_path: Path, write_parquet) -> None:
    cfg = write(tmp_path, '[run]\nbatch_size = "big"\n')
    result = runner.invoke(app, ["run", str(write_parquet({"text": ["a"]})), "-c", str(cfg)])
    assert result.exit_code == 2
    assert "run.batch_size: expected an integer" in result.output
    assert "Traceback" not in result.output


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2GB", 2 * 1024**3), ("512MB", 512 * 1024**2), ("1.5G", int(1.5 * 1024**3)),
     ("64KiB", 64 * 1024), (1000, 1000), ("100", 100)],
)
def test_sizes(value: object, expected: int) -> None:
    assert parse_size(value) == expected  # type: ignore[arg-type]


def test_options_override_file(tmp_path: Path, write_parquet) -> None:
    import pyarrow.parquet as pq

    cfg = write(tmp_path, "[run]\nmax_tokens = 16\nno_text = true\n")
    src = write_parquet({"text": ["one two three four five six seven eight nine ten " * 3]})
    result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "--max-tokens", "8", "-q"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "corpus.embeddings.parquet")
    assert "text" not in table.column_names
    assert max(table.column("tokens").to_pylist()) <= 6


def test_config_init_writes_a_loadable_file(tmp_path: Path) -> None:
    target = tmp_path / "embedgen.toml"
    result = runner.invoke(app, ["config", "init", str(target)])
    assert result.exit_code == 0 and target.exists()
    assert load(target).run.batch_size == 32
    again = runner.invoke(app, ["config", "init", str(target)])
    assert again.exit_code == 2 and "--force" in again.output


def test_config_show_prints_effective_values_and_no_effect_keys(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[bge_m3_local]\nmodel_path = "m"\ndevice = "directml"\nmax_sequence_length = 8192\n'
        "[directml]\ndebug_layer = true\n",
    )
    result = runner.invoke(app, ["config", "show", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert 'device = "directml"' in result.output
    assert "max_tokens = 8192" in result.output
    assert "no effect: directml.debug_layer" in result.output


def test_packaged_template_matches_configs_default() -> None:
    root = Path(__file__).resolve().parent.parent
    packaged = root / "embedgen" / "data" / "default.toml"
    assert packaged.read_text() == (root / "configs" / "default.toml").read_text()
