"""Keeping API keys out of everything embedgen prints, raises or writes.

Keys are read once from the environment into a :class:`Secret`, whose ``repr`` and
``str`` never show the value, and registered here, so :func:`redact` can scrub
them (and anything that looks like a bearer token) from any text: error messages,
API error bodies echoed back, log records (:class:`RedactingFilter`).
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "[REDACTED]"

_lock = threading.Lock()
_secrets: set[str] = set()
_BEARER = re.compile(r"(?i)\b(bearer\s+|api-key[\"':=\s]+|x-api-key[\"':=\s]+)([\w.~+/=-]{6,})")


class Secret:
    """An API key: usable through :meth:`reveal`, invisible in reprs, logs and pickles."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an API key cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def register_secret(value: str) -> None:
    """Remember a value that :func:`redact` must remove (short values are ignored)."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: object) -> str:
    """``str(text)`` with every registered key and bearer-looking token masked."""
    out = str(text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in out:
            out = out.replace(s, MASK)
    return _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", out)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = redact(str(exc))
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.msg} ({type(exc).__name__}: {text})"
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to ``logger`` (default: the ``embedgen`` logger)."""
    target = logger or logging.getLogger("embedgen")
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
