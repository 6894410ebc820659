"""The API provider config models: defaults, validation, derived space and limits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from embedgen.config import ApiConfig
from embedgen.config.catalog import API_KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ADAPTER: TypeAdapter[Any] = TypeAdapter(Annotated[ApiConfig, Field(discriminator="kind")])
EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "api_with_fallback.toml"


def test_the_worked_example_validates() -> None:
    data = tomllib.loads(EXAMPLE.read_text("utf-8"))
    cfgs = {name: ADAPTER.validate_python(t) for name, t in data["providers"].items()}
    assert {c.kind for c in cfgs.values()} == set(API_KINDS)
    assert cfgs["openai"].space_id() == cfgs["azure"].space_id()
    assert cfgs["openai"].space_id() == "openai/text-embedding-3-small@512"
    assert cfgs["tei"].limits() == (8192, 32, 16384)
    assert cfgs["cohere"].limits()[1] == 96 and cfgs["voyage"].limits()[1] == 1000
    assert cfgs["openai"].limits() == (8191, 2048, 300_000)


def test_defaults_per_kind() -> None:
    o = ADAPTER.validate_python({"kind": "openai"})
    assert (o.api_key_env, o.model, o.expected_dim()) == (
        "OPENAI_API_KEY",
        "text-embedding-3-small",
        1536,
    )
    assert o.endpoint() == "https://api.openai.com/v1" and o.price() == 0.02
    c = ADAPTER.validate_python({"kind": "cohere"})
    assert c.endpoint() == "https://api.cohere.com" and c.input_type == "search_document"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"kind": "openai", "rpm": "fast"}, "rpm"),
        ({"kind": "openai", "api_key": "sk-x"}, "api_key"),
        ({"kind": "openai", "api_key_env": "sk-abc def"}, "api_key_env"),
        ({"kind": "azure", "base_url": "https://x.openai.azure.com"}, "deployment"),
        ({"kind": "azure", "deployment": "d"}, "base_url is required"),
        ({"kind": "openai_compatible", "base_url": "http://h/v1", "model": "m"}, "set dim"),
        ({"kind": "voyage", "input_type": "passage"}, "input_type"),
        ({"kind": "openai", "base_url": "ftp://x"}, "http"),
        ({"kind": "openai", "max_retries": -1}, "max_retries"),
    ],
)
def test_bad_values_are_rejected(data: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        ADAPTER.validate_python(data)
