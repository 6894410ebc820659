"""Loading a config: TOML to :class:`Config`, command-line overrides, and error messages.

Unknown keys and wrong types are :class:`ConfigError` naming the key path
(``providers.openai.rpm: expected an integer, got 'fast'``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from embedgen.config.catalog import KINDS
from embedgen.config.schema import Config
from embedgen.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a table",
    "model": "a table",
}

_KINDS = {"onnx", *KINDS}


def describe(err: Any) -> str:
    """One pydantic error as ``key.path: what was expected, got what``."""
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    # a discriminated union puts the tag in the path: providers.x.openai.rpm -> providers.x.rpm
    if len(parts) > 2 and parts[0] == "providers" and parts[2] in _KINDS:
        del parts[2]
    loc = ".".join(parts)
    typ: str = err["type"]
    got = err.get("input")
    if typ == "extra_forbidden":
        return f"{loc}: unknown key" + did_you_mean(parts[-1], _keys_at(parts[:-1]))
    if typ == "missing":
        return f"{loc}: required key is missing"
    if typ == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{loc}: expected one of {expected}, got {got!r}"
    if typ == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        return f"{loc}.kind: expected one of {expected}, got {err.get('ctx', {}).get('tag')!r}"
    if typ == "union_tag_not_found":
        return f"{loc}: missing key 'kind'"
    if typ == "config_rule":
        return f"{loc}: {err['msg']}"
    for prefix, words in _TYPE_WORDS.items():
        if typ.startswith(prefix + "_") or typ == prefix + "_type":
            return f"{loc}: expected {words}, got {got!r}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{loc}: {msg}" if isinstance(got, dict) else f"{loc}: {msg}, got {got!r}"


def did_you_mean(word: str, choices: Any) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices`` to ``word``, or ""."""
    import difflib

    options = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(word.lower(), list(options), n=1, cutoff=0.6)
    return f"; did you mean {options[close[0]]!r}?" if close else ""


def _keys_at(parts: list[str]) -> list[str]:
    """The keys the config table at ``parts`` accepts (empty where it is not one model)."""
    from pydantic import BaseModel

    model: type[BaseModel] = Config
    for part in parts:
        field = model.model_fields.get(part)
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def validate(data: dict[str, Any], source: str | None = None) -> Config:
    """A :class:`Config` from parsed TOML, or ConfigError naming the first bad key."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        where = f"{source}: " if source else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{where}{describe(errors[0])}{more}") from None
    cfg.source = source
    cfg.fold_windows_layout()
    for name in cfg.run.providers:
        if name not in cfg.providers and name != "local":
            raise ConfigError(
                f"{source + ': ' if source else ''}run.providers: {name!r} has no "
                f"[providers.{name}] table (have: {', '.join(cfg.providers) or 'none'})"
            )
    from embedgen.config.slots import check_slots

    check_slots(cfg, f"{source}: " if source else "")
    return cfg


def load(path: str | Path | None) -> Config:
    """Load and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return validate({})
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return validate(data, str(p))


def apply_overrides(cfg: Config, section: str, values: dict[str, Any]) -> None:
    """Set command-line values (None means 'not given') with the same validation."""
    assign(getattr(cfg, section), values)


def assign(target: Any, values: dict[str, Any]) -> None:
    """Set command-line values on one config table, validated as if loaded; an error names
    the option (``--workers: expected ...``)."""
    for key, value in values.items():
        if value is None:
            continue
        try:
            setattr(target, key, value)
        except ValidationError as exc:
            err = exc.errors()[0]
            err["loc"] = ("--" + key.replace("_", "-"),)
            raise ConfigError(describe(err)) from None
