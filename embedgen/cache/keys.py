"""Cache keys and where the cache lives: pure hashing, nothing opened.

A key is the model's fingerprint id (16 bytes) followed by ``blake2b(fingerprint id +
text)`` (16 bytes), so one model's entries form one contiguous key range.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

ID_BYTES = 16
KEY_BYTES = 2 * ID_BYTES


def fingerprint_id(description: str) -> bytes:
    """The 16-byte id of a model fingerprint description (everything that changes a vector)."""
    return hashlib.blake2b(description.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def cache_key(fingerprint: bytes, text: str) -> bytes:
    """The 32-byte key of ``text`` under a model: fingerprint id + blake2b(fingerprint + text)."""
    digest = hashlib.blake2b(fingerprint, digest_size=16)
    digest.update(text.encode("utf-8", "surrogatepass"))
    return fingerprint + digest.digest()


def cache_keys(fingerprint: bytes, texts: Sequence[str]) -> list[bytes]:
    """:func:`cache_key` for each text."""
    return [cache_key(fingerprint, text) for text in texts]


DOC_PREFIX = b"doc\0"
"""Document records live in the meta database under this prefix (see :func:`doc_keys`)."""


def doc_keys(fingerprint: bytes, params: str, texts: Sequence[str]) -> list[bytes]:
    """Keys of whole documents under a model and the chunking ``params`` that cut them.

    A document record maps such a key to its chunks' spans and token counts, so a re-run
    recognises an unchanged document without tokenizing it again.
    """
    seed = fingerprint + params.encode()
    out = []
    for text in texts:
        digest = hashlib.blake2b(seed, digest_size=16)
        digest.update(text.encode("utf-8", "surrogatepass"))
        out.append(DOC_PREFIX + fingerprint + digest.digest())
    return out


def default_cache_dir() -> Path:
    """``EMBEDGEN_CACHE_DIR``, else ``vectors`` in the user cache directory of embedgen."""
    env = os.environ.get("EMBEDGEN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("embedgen", appauthor=False)) / "vectors"


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: an explicit ``--cache-dir`` / config value, else the default."""
    return Path(explicit).expanduser() if explicit else default_cache_dir()


def check_id(fingerprint: bytes) -> None:
    """ValueError unless ``fingerprint`` is a 16-byte id."""
    if not isinstance(fingerprint, bytes) or len(fingerprint) != ID_BYTES:
        raise ValueError("a fingerprint id is 16 bytes: use fingerprint_id(description)")


def check_keys(fingerprint: bytes, keys: Sequence[bytes]) -> None:
    """ValueError unless every key was made by :func:`cache_key` under ``fingerprint``."""
    check_id(fingerprint)
    for key in keys:
        if len(key) != KEY_BYTES or key[:ID_BYTES] != fingerprint:
            raise ValueError("cache keys must come from cache_key() with the same fingerprint id")
