"""Collecting a finished batch: result lines into the vector cache, failures named.

The output file has one line per request that ran, in no particular order:
``{"custom_id", "response": {"status_code", "body"}, "error"}``; the error file has the
requests that failed. Each good reply is read with the provider's own response reader
and checked (count, dimension, finite values) before its vectors are cached: a bad
reply is a failed request, never a vector. Requests in neither file (an expired or
cancelled batch) failed too; the next pass submits them again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from embedgen.errors import TransientProviderError
from embedgen.providers.http_base import check_vectors
from embedgen.redact import redact

if TYPE_CHECKING:
    from embedgen.batch.client import BatchClient
    from embedgen.batch.journal import Job

log = logging.getLogger("embedgen")

_PUT_ROWS = 4096
"""Vectors per cache write transaction while collecting."""


@dataclass
class Collected:
    vectors: int = 0
    billed_tokens: int = 0
    failed: list[str] = field(default_factory=list)
    """Hex keys of inputs whose request failed or never ran."""
    error: str | None = None


def line_error(rec: dict[str, Any]) -> str:
    """The message of a failed result line (output or error file)."""
    err = rec.get("error")
    if isinstance(err, dict) and err.get("message"):
        return str(err.get("message"))
    resp = rec.get("response")
    body = resp.get("body") if isinstance(resp, dict) else None
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    status = resp.get("status_code") if isinstance(resp, dict) else None
    return f"request failed (status {status})" if status else "request failed"


def collect(client: BatchClient, job: Job, cache: Any, fp_id: bytes, dim: int) -> Collected:
    """Cache every good result of ``job``'s finished batch; what failed and was billed."""
    out = Collected()
    done: set[str] = set()
    keys: list[bytes] = []
    rows: list[np.ndarray] = []

    def flush() -> None:
        if keys:
            cache.put_many(fp_id, list(keys), np.concatenate(rows))
            keys.clear()
            rows.clear()

    if job.output_file_id:
        for rec in _lines(client.content(job.output_file_id)):
            cid = rec.get("custom_id")
            hex_keys = job.requests.get(cid) if isinstance(cid, str) else None
            if hex_keys is None or cid in done:
                continue
            resp = rec.get("response")
            status = resp.get("status_code") if isinstance(resp, dict) else None
            if status != 200 or rec.get("error"):
                out.error = out.error or line_error(rec)
                continue
            try:
                vecs, usage = client.read_response(resp.get("body"), len(hex_keys))  # type: ignore[union-attr]
                mat = check_vectors(vecs, len(hex_keys), dim)
            except (KeyError, IndexError, TypeError, ValueError, TransientProviderError) as exc:
                out.error = out.error or f"bad result for {cid}: {exc}"
                continue
            done.add(cid)  # type: ignore[arg-type]
            keys.extend(bytes.fromhex(k) for k in hex_keys)
            rows.append(mat)
            out.vectors += len(hex_keys)
            out.billed_tokens += usage if usage is not None else job.request_tokens.get(cid, 0)  # type: ignore[arg-type]
            if len(keys) >= _PUT_ROWS:
                flush()
        flush()
    if job.error_file_id:
        for rec in _lines(client.content(job.error_file_id)):
            if out.error is None:
                out.error = line_error(rec)
    out.failed = [k for cid, ks in job.requests.items() if cid not in done for k in ks]
    if out.error:
        out.error = redact(out.error)[:300]
    return out


def _lines(data: bytes) -> list[dict[str, Any]]:
    out = []
    bad = 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
    if bad:
        log.warning(
            f"batch results: {bad} malformed lines ignored (their requests are resubmitted)"
        )
    return out


def cleanup(client: BatchClient, job: Job) -> None:
    """Delete the job's uploaded and result files (best effort: a failure is logged)."""
    from embedgen.errors import ProviderError

    for file_id in (job.input_file_id, job.output_file_id, job.error_file_id):
        if not file_id:
            continue
        try:
            client.delete_file(file_id)
        except ProviderError as exc:
            log.warning(f"could not delete batch file {file_id}: {exc}")
