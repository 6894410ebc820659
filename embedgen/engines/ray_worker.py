"""The Ray engine's embedding actor: look up, embed the misses, store, hand rows back.

Each actor of the pool builds its stages once from the picklable run description: its
own router (onnxruntime with ``threads`` intra-op threads, on CUDA when it holds a GPU),
the node's LMDB cache (every worker on a node shares it, so a re-run after a crash finds
what any of them embedded), and, for hosted APIs, the run's global limits actor. For
every block of window rows it runs the same lookup, embed and store stages as the local
engine; a block's vectors are committed to the cache before its rows leave the actor.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

from embedgen.engines.ray_units import KEEP_PREFIX


class EmbedWorker:
    """Ray ``map_batches`` callable class: window rows in, the same rows with vectors out."""

    def __init__(
        self,
        *,
        spec: Any,
        threads: int,
        device: str | None,
        limits: str | None,
        keys: dict[str, str],
    ) -> None:
        from embedgen.config import apply_overrides
        from embedgen.pipeline.core import Stages
        from embedgen.pipeline.run import open_cache
        from embedgen.router import Router
        from embedgen.router.build import build_members

        # The API keys come from the driver in memory (never in a Ray runtime environment,
        # which Ray logs); this process is the actor's alone.
        os.environ.update(keys)
        cfg = spec.cfg.model_copy(deep=True)
        model_opts: dict[str, Any] = {"num_threads": threads}
        if device is not None:
            model_opts["device"] = device
        apply_overrides(cfg, "model", model_opts)
        run = cfg.run
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.actor: Any = None
        buckets = None
        if limits is not None:
            from embedgen.engines import ray_limits

            self.actor = ray_limits.lookup(limits)
            buckets = ray_limits.SharedBuckets(self.actor)
        self.members = build_members(cfg, buckets=buckets)
        spend = None
        if self.actor is not None and any(m.info.price_per_mtok > 0 for m in self.members):
            from embedgen.engines.ray_limits import RemoteSpend

            spend = RemoteSpend(self.actor)
        self.router = Router(members=self.members, allow_mixed_models=run.allow_mixed_models,
                             spend=spend)  # fmt: skip
        self.dim = self.router.info.dim
        self.cache = open_cache(run)
        self.stages = Stages.build(run, self.router, self.cache)

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        from embedgen.engines.ray_units import table_chunks
        from embedgen.pipeline.progress import Counters

        n = table.num_rows
        rows, chunks = table_chunks(table)
        held = self.stages.lookup(chunks, Counters())
        filled = self.stages.fill([held], Counters())  # in the cache before rows leave
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        vectors[rows] = filled.out
        how = np.full(n, -1, dtype=np.int8)  # per row: 0 computed, 1 cached, 2 duplicate
        how[rows] = 1
        how[rows[[i for i, _ in held.copies]]] = 2
        how[rows[filled.todo]] = 0
        out = table.drop_columns(["_input_ids"]) if "_input_ids" in table.column_names else table
        flat = pa.array(vectors.reshape(-1))
        out = out.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, self.dim))
        out = out.append_column("_how", pa.array(how))
        for name, values in filled.extras.items():
            full: list[Any] = [None] * n
            for k, row in enumerate(rows.tolist()):
                full[row] = values[k]
            out = out.append_column("_x:" + name, _extra_array(name, full))
        if self.actor is not None:
            from embedgen.engines.ray_limits import stats_dict

            self.actor.report.remote(self.name, stats_dict(self.router.stats()))
        return out

    def __del__(self) -> None:
        try:
            self.stages.close()
            if self.cache is not None:
                self.cache.close()
            self.router.close()
        except Exception:
            pass


def _extra_array(name: str, values: list[Any]) -> Any:
    import pyarrow as pa

    if name == "sparse":
        return pa.array(
            [sorted(d.items()) if d is not None else None for d in values],
            type=pa.map_(pa.int32(), pa.float32()),
        )
    return pa.array(values, type=pa.string())


def keep_names(table: Any) -> list[str]:
    """The passthrough column names a window table carries."""
    return [c[len(KEEP_PREFIX) :] for c in table.column_names if c.startswith(KEEP_PREFIX)]
