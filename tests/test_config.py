"""Config validation: errors name the key path; sizes; overrides; init and show."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.config import apply_overrides, load, validate
from embedgen.errors import ConfigError
from embedgen.util.sizes import parse_size

DATA = Path(__file__).resolve().parent / "data"

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
    [
        ("2GB", 2 * 1024**3),
        ("512MB", 512 * 1024**2),
        ("1.5G", int(1.5 * 1024**3)),
        ("64KiB", 64 * 1024),
        (1000, 1000),
        ("100", 100),
    ],
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


def test_deployment_guide_windows_config_loads() -> None:
    """The guide writes ``device = "DirectML"``: choices are case-insensitive."""
    cfg = load(DATA / "windows_config.toml")
    assert cfg.model.device == "directml"
    assert cfg.model.force_cpu_fallback is True
    assert cfg.model.memory_limit == 2 * 1024**3
    assert (cfg.run.batch_size, cfg.run.max_tokens, cfg.model.warmup_batches) == (16, 256, 2)
    assert cfg.bge_m3_local is not None and cfg.bge_m3_local.device == "directml"


def test_deployment_guide_windows_config_drives_a_run(tmp_path: Path, write_parquet) -> None:
    import pyarrow.parquet as pq

    src = write_parquet({"text": ["a nightly run on the guide's own config", "second row"]})
    result = runner.invoke(app, ["run", str(src), "-c", str(DATA / "windows_config.toml")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "corpus.embeddings.parquet").num_rows == 2


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ('[model]\ndevice = "DirectML"\n', ("model", "device"), "directml"),
        ('[model]\ndevice = "CUDA"\n', ("model", "device"), "cuda"),
        ('[model]\nkind = "ONNX"\npooling = "CLS"\n', ("model", "pooling"), "cls"),
        ('[model]\ngraph_optimization = "Basic"\n', ("model", "graph_optimization"), "basic"),
        ('[run]\ndtype = "Float16"\n', ("run", "dtype"), "float16"),
        ('[run]\non_error = "SKIP"\n', ("run", "on_error"), "skip"),
        ('[engine]\nkind = "Ray"\n', ("engine", "kind"), "ray"),
        ('[bge_m3_local]\ndevice = "Cpu"\n', ("model", "device"), "cpu"),
    ],
)
def test_choices_in_files_are_case_insensitive(
    tmp_path: Path, text: str, where: tuple[str, str], expected: str
) -> None:
    cfg = load(write(tmp_path, text))
    assert getattr(getattr(cfg, where[0]), where[1]) == expected


def test_choices_of_providers_are_case_insensitive(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path,
            '[providers.o]\nkind = "OpenAI"\nmode = "Batch"\n'
            '[providers.v]\nkind = "Voyage"\ninput_type = "Query"\n'
            '[providers.c]\nkind = "COHERE"\ninput_type = "Search_Query"\n'
            '[providers.l]\nkind = "Onnx"\ndevice = "DirectML"\n',
        )
    )
    o, v, c, local = (cfg.providers[n] for n in "ovcl")
    assert (o.kind, o.mode) == ("openai", "batch")  # type: ignore[union-attr]
    assert (v.kind, v.input_type) == ("voyage", "query")  # type: ignore[union-attr]
    assert (c.kind, c.input_type) == ("cohere", "search_query")  # type: ignore[union-attr]
    assert (local.kind, local.device) == ("onnx", "directml")  # type: ignore[union-attr]


def test_choices_on_the_command_line_are_case_insensitive() -> None:
    cfg = validate({})
    apply_overrides(cfg, "model", {"device": "DirectML"})
    apply_overrides(cfg, "run", {"dtype": "FLOAT16", "on_error": "Skip"})
    assert (cfg.model.device, cfg.run.dtype, cfg.run.on_error) == ("directml", "float16", "skip")
    with pytest.raises(ConfigError, match="--device: expected one of .*got 'tpu'"):
        apply_overrides(cfg, "model", {"device": "TPU"})


def test_run_options_are_case_insensitive(tmp_path: Path, write_parquet) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = write_parquet({"text": ["case does not matter"]})
    args = ["run", str(src), "--device", "CPU", "--dtype", "Float16", "--on-error", "Skip", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "corpus.embeddings.parquet")
    assert table.schema.field("embedding").type.value_type == pa.float16()


def test_engine_table() -> None:
    cfg = validate(
        {
            "engine": {
                "kind": "ray",
                "address": "ray://head:10001",
                "workers": 2,
                "cpus_per_worker": 1.5,
                "gpus_per_worker": 0.5,
            }
        }
    )
    e = cfg.engine
    assert (e.kind, e.address, e.workers, e.cpus_per_worker, e.gpus_per_worker) == (
        "ray",
        "ray://head:10001",
        2,
        1.5,
        0.5,
    )
    assert validate({}).engine.kind == "local" and validate({}).engine.workers is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "spark"}, "engine.kind: expected one of 'local' or 'ray', got 'spark'"),
        ({"workers": 0}, "engine.workers"),
        ({"workers": "two"}, "engine.workers: expected an integer"),
        ({"cpus_per_worker": 0}, "engine.cpus_per_worker"),
        ({"gpus_per_worker": -1}, "engine.gpus_per_worker"),
        ({"nodes": 3}, "engine.nodes: unknown key"),
    ],
)
def test_engine_table_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"engine": table})
    assert message in str(info.value)


def test_default_config_documents_the_engine_table() -> None:
    from embedgen.config import EngineConfig

    text = (Path(__file__).resolve().parent.parent / "configs" / "default.toml").read_text()
    engine = text.split("[engine]", 1)[1]
    for key in EngineConfig.model_fields:
        assert f"\n# {key} = " in engine, key


def test_config_imports_nothing_above_it() -> None:
    """config sits below cache, models, budget, providers and the rest."""
    import subprocess
    import sys

    code = (
        "import sys, embedgen.config, embedgen.config.catalog; "
        "print(' '.join(m for m in sys.modules if m.startswith('embedgen.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".")[1] for m in out.stdout.split()}
    assert loaded <= {"config", "errors", "redact", "util"}, loaded


def test_download_pooling_is_case_insensitive() -> None:
    from embedgen.errors import UsageError
    from embedgen.models.plan import plan_for

    assert plan_for("bge-m3", pooling="CLS").pooling == "cls"
    with pytest.raises(UsageError, match="--pooling must be one of"):
        plan_for("bge-m3", pooling="max")
