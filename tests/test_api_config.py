"""The API provider config models: defaults, validation, derived space and limits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field, TypeAdapter, ValidationError

from embedgen.config import ApiConfig, validate
from embedgen.config.catalog import (
    API_KINDS,
    BATCH_KINDS,
    HOSTED,
    KINDS,
    batch_price,
    default_tokenizer,
    list_price,
    lookup,
    model_facts,
)
from embedgen.errors import ConfigError

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


def test_the_catalog_is_one_record_per_model() -> None:
    assert len({(m.family, m.model) for m in HOSTED}) == len(HOSTED)
    assert {m.family for m in HOSTED} >= {KINDS[k].family for k in ("openai", "voyage", "cohere")}
    for m in HOSTED:
        assert m.usd_per_mtok > 0 and m.priced
        if m.dim is not None:
            limits = m.limits()
            assert limits is not None and limits[0] <= limits[2], m.model
    assert set(API_KINDS) == {c.model_fields["kind"].default for c in ApiConfig.__args__}


def test_catalog_facts_and_prices() -> None:
    small = model_facts("text-embedding-3-small")
    assert small is not None
    assert (small.dim, small.limits(), small.tokenizer) == (
        1536,
        (8191, 2048, 300_000),
        "cl100k_base",
    )
    assert (small.usd_per_mtok, small.batch_usd_per_mtok) == (0.02, 0.01)
    # Azure sells OpenAI's models at OpenAI's list price; a self-hosted server costs nothing.
    assert lookup("azure", "text-embedding-3-small") is small
    assert list_price("azure", "text-embedding-3-large") == 0.13
    assert list_price("openai_compatible", "text-embedding-3-small") == 0.0
    assert list_price("cohere", "not-a-model") == 0.0
    assert batch_price("openai", "text-embedding-3-large") == 0.065
    assert batch_price("cohere", "embed-v4.0") is None
    cohere = model_facts("embed-english-v3.0")
    assert cohere is not None and cohere.limits() == (512, 96, 96 * 512)
    # Only models a provider kind can serve are listed (gemini was, with no kind for it).
    assert lookup("gemini", "gemini-embedding-001") is None


@pytest.mark.parametrize(
    ("kind", "model", "tokenizer"),
    [
        ("openai", None, "cl100k_base"),
        ("azure", "text-embedding-3-small", "cl100k_base"),
        ("voyage", "voyage-3.5", "voyage3_base"),
        ("voyage", None, "voyage3_base"),
        ("cohere", "embed-v4.0", "estimate"),
        ("mistral", None, "estimate"),
        ("openai_compatible", "text-embedding-3-small", "estimate"),
        ("onnx", None, "estimate"),
    ],
)
def test_offline_tokenizer_per_kind_and_model(kind: str, model: str | None, tokenizer: str) -> None:
    assert default_tokenizer(kind, model) == tokenizer


def test_unlisted_models_take_the_kinds_limits() -> None:
    o = ADAPTER.validate_python({"kind": "openai", "model": "text-embedding-4", "dim": 8})
    assert o.limits() == KINDS["openai"].limits == (8191, 2048, 300_000)
    m = ADAPTER.validate_python({"kind": "mistral", "model": "mistral-embed-2", "dim": 8})
    assert m.limits() == (8192, 512, 16_384) and m.price() == 0.0


def test_mode_defaults_to_sync_and_batch_needs_a_batch_api() -> None:
    assert {"openai", "azure"} <= BATCH_KINDS
    assert ADAPTER.validate_python({"kind": "openai"}).mode == "sync"
    assert ADAPTER.validate_python({"kind": "openai", "mode": "batch"}).mode == "batch"
    azure = {"kind": "azure", "deployment": "d", "base_url": "https://r.openai.azure.com"}
    assert ADAPTER.validate_python({**azure, "mode": "batch"}).mode == "batch"
    with pytest.raises(ValidationError, match="mode"):
        ADAPTER.validate_python({"kind": "openai", "mode": "async"})


@pytest.mark.parametrize("kind", ["cohere", "voyage", "mistral"])
def test_batch_mode_on_a_kind_without_batch_api_names_the_key(kind: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"providers": {kind: {"kind": kind, "mode": "batch"}}})
    assert str(info.value).startswith(
        f'providers.{kind}.mode: "batch" needs a provider with a batch API (openai, azure'
    )
