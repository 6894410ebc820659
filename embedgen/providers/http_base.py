"""One HTTP request per call: the shared part of every hosted API provider.

:class:`HttpProvider` sends one batch as one request through its
:class:`~embedgen.providers.transport.Transport`, which maps every status in one place for
the providers and the batch client alike. A good response becomes an :class:`EmbedResult`
(after checking count, dim and finiteness); a malformed body is a
:class:`TransientProviderError`. Retries, limits and the breaker are the router's
(:mod:`embedgen.router`).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from embedgen.errors import DimensionMismatch, ProviderError, TransientProviderError
from embedgen.providers.base import Batch, EmbedResult, Provider, ProviderInfo, TextTokenizer
from embedgen.providers.http_headers import RateLimitHeaders
from embedgen.providers.transport import Transport
from embedgen.redact import Secret, redact

if TYPE_CHECKING:
    import numpy as np

    from embedgen.config import ApiConfigBase


def _transient(message: str, **kw: Any) -> TransientProviderError:
    return TransientProviderError(redact(message), **kw)


def native_rows(rows: Any, dtype: str | None) -> Any:
    """An API's own binary/ubinary answer (packed bits) as +-1 floats per dimension.

    int8/uint8 codes pass as they are; the writer stores them unchanged. Rows that are not
    a list of integer lists pass too, and :func:`check_vectors` says what is wrong.
    """
    import numpy as np

    from embedgen.util.quantize import PACKED, decode

    if dtype not in PACKED or not isinstance(rows, list) or not rows:
        return rows
    try:
        packed = np.asarray(rows, dtype=np.int16)
    except (TypeError, ValueError):
        return rows
    if packed.ndim != 2:
        return rows
    return decode(packed, str(dtype)).tolist()


def check_vectors(rows: Any, n: int, dim: int) -> np.ndarray:
    """``rows`` as a float32 (n, dim) matrix, or TransientProviderError saying what is wrong.

    Every vector of one other size is :class:`DimensionMismatch`: the server makes vectors of
    that size, a setting that no retry changes.
    """
    import numpy as np

    if not isinstance(rows, list):
        raise _transient("malformed response: embeddings are not a list")
    if len(rows) != n:
        raise _transient(f"bad response: {len(rows)} vectors for {n} inputs")
    sizes = {len(row) if isinstance(row, list) else -1 for row in rows}
    if len(sizes) == 1 and -1 not in sizes and dim not in sizes:
        size = sizes.pop()
        msg = f"the server returns {size}-d vectors, {dim} were expected"
        raise DimensionMismatch(msg, got=size, expected=dim)
    for row in rows:
        if not isinstance(row, list) or len(row) != dim:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise _transient(f"bad response: a vector has dimension {got}, expected {dim}")
    try:
        mat = np.asarray(rows, dtype=np.float32).reshape(n, dim)
    except (TypeError, ValueError):
        raise _transient("malformed response: non-numeric vector values") from None
    if not np.isfinite(mat).all():
        raise _transient("bad response: vectors contain NaN or infinite values")
    return mat


class HttpProvider(Provider, abc.ABC):
    """A hosted embedding API: subclasses say where to post what, and how to read replies."""

    native_dtypes: tuple[str, ...] = ()
    """Output types (``--vector-dtype``) the API can answer in itself, asked for when chosen."""

    def __init__(
        self, name: str, cfg: ApiConfigBase, key: Secret | None, *, output_dtype: str | None = None
    ) -> None:
        self.name = name
        self.cfg = cfg
        self._key = key
        self.native = output_dtype if output_dtype in self.native_dtypes else None
        """The API's own int8/uint8/binary/ubinary answer, read back to float (cached so:
        the fingerprint says which), or None for float vectors."""
        self._http = Transport(
            name,
            timeout=cfg.timeout,
            key_env=cfg.api_key_env,
            check="base_url, model and deployment",
            connections=cfg.max_concurrency,
        )
        self._lock = threading.Lock()
        self._tokenizer: TextTokenizer | None = None
        dim = cfg.expected_dim()
        if dim is None:  # the config validator guarantees it; keep mypy and -O honest
            raise ProviderError(f"{name}: vector size unknown; set dim")
        self.dim = dim
        max_tokens, max_inputs, max_batch_tokens = cfg.limits()
        self.info = ProviderInfo(
            name=name,
            kind=cfg.kind,
            model=cfg.model,
            space=cfg.space_id(),
            dim=dim,
            max_tokens=max_tokens,
            max_batch_inputs=max_inputs,
            max_batch_tokens=max_batch_tokens,
            price_per_mtok=cfg.price(),
            max_concurrency=cfg.max_concurrency,
            fingerprint=self.fingerprint(),
            details=self.details(),
        )

    # What subclasses define ------------------------------------------------------------
    @abc.abstractmethod
    def url(self) -> str: ...

    @abc.abstractmethod
    def payload(self, texts: Sequence[str]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def read(self, data: Any, n: int) -> tuple[Any, int | None]:
        """(list of vectors in input order, billed tokens or None) from a parsed body."""

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.reveal()}"} if self._key else {}

    def fingerprint(self) -> str:
        """What changes a vector; never the key or the URL."""
        c = self.cfg
        extra = getattr(c, "input_type", None)
        head = f"api|{c.space_id()}|{c.kind}|{c.model}"
        native = f"|output_dtype={self.native}" if self.native else ""
        return f"{head}|dimensions={c.dimensions}|input_type={extra}{native}"

    def details(self) -> dict[str, str]:
        d = {"provider": self.cfg.kind, "model": self.cfg.model}
        if self.cfg.dimensions:
            d["dimensions"] = str(self.cfg.dimensions)
        it = getattr(self.cfg, "input_type", None)
        if it:
            d["input_type"] = str(it)
        if self.native:
            d["native_dtype"] = self.native
        return d

    # The contract ----------------------------------------------------------------------
    def tokenizer(self) -> TextTokenizer:
        with self._lock:
            if self._tokenizer is None:
                from embedgen.providers.api_tokenizers import api_tokenizer

                self._tokenizer = api_tokenizer(self.cfg.kind, self.cfg.tokenizer)
            return self._tokenizer

    def embed_batch(self, batch: Batch) -> EmbedResult:
        n = len(batch)
        if n == 0:
            import numpy as np

            return EmbedResult(np.zeros((0, self.dim), dtype=np.float32), 0)
        body = self.payload(list(batch.texts))
        resp = self._http.send("POST", self.url(), json=body, headers=self.auth_headers())
        rl = RateLimitHeaders.parse(resp.headers)
        data = self._http.json(resp)
        try:
            rows, usage = self.read(data, n)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _transient(
                f"{self.name}: malformed response ({type(exc).__name__}: {exc})"
            ) from None
        try:
            vectors = check_vectors(rows, n, self.dim)
        except TransientProviderError as exc:
            raise _transient(f"{self.name}: {exc}", rate_limits=rl) from None
        except DimensionMismatch as exc:
            msg = self._dim_message(exc.got)
            raise DimensionMismatch(msg, got=exc.got, expected=self.dim) from None
        return EmbedResult(vectors, usage, rate_limits=rl)

    def _dim_message(self, got: int) -> str:
        """What to set when the server makes ``got``-d vectors and ``self.dim`` were expected."""
        where = f"[providers.{self.name}]"
        if self.cfg.dimensions is not None:
            return (
                f"{self.name}: the server returns {got}-d vectors, not the {self.dim} asked for "
                f"with `dimensions`: set `dimensions = {got}` (or remove it and set "
                f"`dim = {got}`) in {where}"
            )
        return (
            f"{self.name}: the server returns {got}-d vectors, {self.dim} were expected: "
            f"set `dim = {got}` in {where}"
        )

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.cfg.model!r})"


def usage_tokens(data: dict[str, Any], *path: str) -> int | None:
    """An integer nested at ``path`` in a response, or None."""
    cur: Any = data
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return int(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None
