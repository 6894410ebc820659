"""An encoder of query strings for a target, built from the target's own metadata.

``embedgen.encoder_for("corpus.embeddings.parquet")`` (or ``lancedb:PATH``, a
``postgresql://`` DSN) reads the model, dimensions, dtype, prefix and chunk length the
rows were embedded with, rebuilds that model and checks its fingerprint against the
target's, so a query vector always lives in the corpus's space. A local model with a
query prefix (E5's ``"query: "``) gets it, as queries should.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embedgen.config import Config
from embedgen.errors import ModelError, UsageError
from embedgen.pipeline.search import target_metadata
from embedgen.pipeline.spec import resolve_config
from embedgen.sinks import Target


class Encoder:
    """Embeds query strings with a target's model; use as a context manager, or ``close()``."""

    def __init__(self, cfg: Config, meta: dict[str, str]) -> None:
        from embedgen.pipeline.embed import Embedder
        from embedgen.pipeline.windows import make_chunker
        from embedgen.router.build import build_router

        self.metadata = meta
        self.router = build_router(cfg)
        try:
            self.info = self.router.info
            self.chunker = make_chunker(self.router.tokenizer(), self.info, cfg.run)
            self.embedder = Embedder(self.router, ())
        except BaseException:
            self.close()
            raise

    def encode(self, texts: list[str]) -> np.ndarray:
        """One float32 vector per text (a text longer than a chunk: its first chunk)."""
        chunks = []
        for text, pieces in zip(texts, self.chunker.chunk(list(texts))):
            if not pieces:
                raise UsageError(f"query {text!r} has no tokens")
            chunks.append(pieces[0])
        out = np.empty((len(chunks), self.info.dim), dtype=np.float32)
        for done in self.embedder.embed(chunks, list(range(len(chunks)))):
            out[done.rows] = done.vectors
        return out

    def close(self) -> None:
        self.router.close()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encoder_for(
    target: str | Path,
    *,
    table: str | None = None,
    config: Config | str | Path | None = None,
    model: str | None = None,
) -> Encoder:
    """An :class:`Encoder` for the rows at ``target`` (as ``-o`` names it).

    The model comes from ``model``/``config`` when given (an API provider's table, say),
    else from the target's metadata; either way it must have the target's fingerprint.
    """
    where = Target.parse(str(target), table)
    meta = target_metadata(where)
    # the embedded default, else a downloaded model of the recorded name
    models = [model] if model is not None or config is not None else [None, meta.get("model")]
    for candidate in models:
        cfg = _config(config, candidate, meta)
        try:
            encoder = Encoder(cfg, meta)
        except ModelError:
            if candidate is model:
                raise
            continue  # no downloaded model of that name
        if encoder.info.fingerprint == meta["fingerprint"]:
            break
        encoder.close()
    else:
        raise UsageError(
            f"{where} was embedded with {meta.get('model')} ({meta.get('dim')}-d) under other "
            "settings than this model gives; pass --model or --config as for the run"
        )
    query_prefix = _query_prefix(cfg)
    if query_prefix and query_prefix != meta.get("prefix", ""):
        encoder.close()
        cfg.model.prefix = query_prefix
        encoder = Encoder(cfg, meta)
    return encoder


def _config(config: Any, model: str | None, meta: dict[str, str]) -> Config:
    """The run's settings as the metadata records them, over ``config``/``model``."""
    options: dict[str, Any] = {"dtype": meta.get("dtype", "float32")}
    if meta.get("max_tokens", "").isdigit():
        options["max_tokens"] = int(meta["max_tokens"])
    if meta.get("kind") == "onnx" and meta.get("prefix"):
        options["prefix"] = meta["prefix"]
    cfg = resolve_config(config, model, options)
    if "dimensions=None" not in meta.get("fingerprint", "") and meta.get("dim", "").isdigit():
        cfg.run.dimensions = int(meta["dim"])
        cfg.run.force_dimensions = True  # the run chose this cut; queries must match it
    return cfg


def _query_prefix(cfg: Config) -> str:
    """The local model's query prefix (its manifest's), when the chain is that model."""
    if cfg.run.providers and cfg.run.providers != ["local"]:
        return ""
    from embedgen.models.local import resolve_model

    return getattr(resolve_model(cfg.model.model), "query_prefix", "") or ""
