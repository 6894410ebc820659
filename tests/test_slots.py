"""Model slots in the config and on the command line: parsing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedgen.config import load
from embedgen.config.slots import add_cli_slots, parse_model_args, slot_config
from embedgen.errors import ConfigError


def test_parse_model_args() -> None:
    assert parse_model_args([]) == (None, {})
    assert parse_model_args(["bge-m3"]) == ("bge-m3", {})
    assert parse_model_args(["./runs/a=b"]) == ("./runs/a=b", {})  # a path, not a slot
    assert parse_model_args(["fast=default", "big=bge-m3"]) == (
        None,
        {"fast": "default", "big": "bge-m3"},
    )
    with pytest.raises(ConfigError, match="slot 'fast' is given twice"):
        parse_model_args(["fast=default", "fast=bge-m3"])
    with pytest.raises(ConfigError, match="name every one"):
        parse_model_args(["default", "big=bge-m3"])
    with pytest.raises(ConfigError, match="name every one"):
        parse_model_args(["default", "bge-m3"])
    with pytest.raises(ConfigError, match="no model after"):
        parse_model_args(["fast="])


def _cfg(tmp_path: Path, text: str):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load(p)


def test_slot_tables(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        """
[providers.api]
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
model = "m"
dim = 8
[slots.fast]
model = "default"
[slots.hosted]
providers = ["api"]
max_cost_usd = 1.5
[slots.m3]
model = "bge-m3"
outputs = ["dense", "Sparse", "colbert"]
dimensions = 256
""",
    )
    assert list(cfg.slots) == ["fast", "hosted", "m3"]
    hosted = slot_config(cfg, "hosted")
    assert hosted.run.providers == ["api"] and not hosted.slots
    m3 = slot_config(cfg, "m3")
    assert (m3.model.model, m3.run.sparse, m3.run.colbert, m3.run.dimensions) == (
        "bge-m3", True, True, 256,
    )  # fmt: skip
    add_cli_slots(cfg, {"other": "api", "local2": "default-original"})
    assert cfg.slots["other"].providers == ["api"]
    assert cfg.slots["local2"].model == "default-original"
    with pytest.raises(ConfigError, match="also in the config file"):
        add_cli_slots(cfg, {"fast": "default"})
    with pytest.raises(ConfigError, match="a slot name is a letter"):
        add_cli_slots(cfg, {"9x": "default"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[slots.a]\n", "slots.a: give either model or providers"),
        ('[slots.a]\nmodel = "x"\nproviders = ["y"]\n', "give either model or providers"),
        ('[slots.a]\nproviders = ["nope"]\n', "'nope' has no [providers.nope] table"),
        ('[slots.a]\nmodel = "x"\noutputs = ["sparse"]\n', 'outputs must include "dense"'),
        ('[slots.a]\nmodel = "x"\noutputs = ["dense", "late"]\n', "slots.a.outputs.1"),
        ('[slots."a-b"]\nmodel = "x"\n', "a slot name is a letter"),
        ('[run]\nproviders = ["local"]\n[slots.a]\nmodel = "x"\n', "each slot its own chain"),
    ],
)
def test_bad_slot_tables(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        _cfg(tmp_path, text)
