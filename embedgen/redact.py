"""Keeping API keys out of everything embedgen prints, raises or writes.

Keys are read once from the environment into a :class:`Secret`, whose ``repr`` and
``str`` never show the value, and registered here, so :func:`redact` can scrub
them (and anything that looks like a bearer token) from any text: error messages,
API error bodies echoed back, log records (:class:`RedactingFilter`).

A server may echo a key in another form than it was sent: JSON- or URL-encoded,
HTML-escaped, as a Python repr, in another case, or with its whitespace turned
into a space or dropped on the way to a one-line message. Every registered key is
matched in all of these forms. Keys shorter than :data:`SHORT` characters are
matched only where they stand as a whole token, so a three-letter key does not
mask every word that contains those letters.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
SHORT = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
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


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None when it can.

    Says what kind of character is wrong, never which one (it is part of a key).
    """
    for ch in value:
        if ord(ch) > 126:
            return "it contains a non-ASCII character"
        if ch != "\t" and (ord(ch) < 32 or ord(ch) == 127):
            return "it contains a control character (a line break or similar)"
    return None


def register_secret(value: str) -> None:
    """Remember a value that :func:`redact` must remove, in every form it may take."""
    global _pattern
    if not value or not value.strip():
        return
    with _lock:
        if value not in _secrets:
            _secrets.add(value)
            _pattern = None


def _forms(value: str) -> set[str]:
    """The ways ``value`` may come back from a server or a library."""
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        html.escape(value),
        repr(value)[1:-1],
        repr(value.encode("utf-8", "backslashreplace"))[2:-1],
    }


def _form_pattern(form: str) -> str:
    """``form`` as a regex where each whitespace run matches any whitespace, or none."""
    parts = [re.escape(p) for p in re.split(r"\s+", form.strip()) if p]
    return r"\s*".join(parts)


def _compiled() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _secrets:
            alternatives = []
            for secret in _secrets:
                for form in _forms(secret):
                    body = _form_pattern(form)
                    if not body:
                        continue
                    if len(secret.strip()) < SHORT:
                        body = rf"(?<![0-9A-Za-z]){body}(?![0-9A-Za-z])"
                    alternatives.append(body)
            alternatives.sort(key=len, reverse=True)
            _pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        return _pattern


def redact(text: object) -> str:
    """``str(text)`` with every registered key (in any form) and bearer token masked."""
    out = str(text)
    pattern = _compiled()
    if pattern is not None:
        out = pattern.sub(MASK, out)
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
