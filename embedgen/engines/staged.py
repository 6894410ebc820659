"""Output to object storage: run into a local staging folder, then upload what is finished.

``-o s3://bucket/out.parquet`` (or ``s3://bucket/dir/``) runs either engine exactly as for
a local output, into ``<tmp>/embedgen-out-<hash>/`` on the driver's machine (the output
lock, temporary and partial files live there too), and uploads the finished file (or the
dataset's shards, then its ``_embedgen.json``) and the skip list with
:func:`embedgen.util.storage.upload`: each to a temporary key, then copied into place. A
run that fails or is killed before its upload completes leaves no object under the final
key; its partial rows stay in the staging folder, its vectors in the cache, and the same
command again finishes it. The staging folder needs room for one output file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from embedgen.engines.ray_output import DESCRIPTION
from embedgen.util import storage

if TYPE_CHECKING:
    from embedgen.pipeline.spec import RunSpec
    from embedgen.pipeline.summary import RunSummary


def staging_dir(output: Path) -> Path:
    """The local folder a remote output is staged in (one per output, so its lock works)."""
    where = storage.uri(output) + "|" + storage.environment().get("AWS_ENDPOINT_URL", "")
    digest = hashlib.blake2b(where.encode(), digest_size=8).hexdigest()
    return Path(tempfile.gettempdir()) / f"embedgen-out-{digest}"


def run_to_store(spec: RunSpec, dataset: bool, run: Callable[[RunSpec], RunSummary]) -> RunSummary:
    """``run`` the spec into a local staging copy of its output, then upload the result."""
    stage = staging_dir(spec.output)
    local = stage / ("dataset" if dataset else spec.output.name)
    staged = dataclasses.replace(spec, output=local)
    summary = run(staged)
    remote = spec.output
    if dataset:
        shards = [p.name for p in sorted(local.glob("part-*.parquet"))]
        for name in [*shards, "skipped.jsonl"]:
            if (local / name).exists():
                storage.upload(local / name, remote / name)
        for old in storage.files_under(remote):  # shards of an earlier run, as DirSink does
            name = old.name
            if old.parent == remote and name.startswith("part-") and name not in shards:
                storage.delete(old)
        storage.upload(local / DESCRIPTION, remote / DESCRIPTION)  # last: the dataset is whole
        skipped_remote = remote / "skipped.jsonl"
    else:
        storage.upload(local, remote)
        skipped_remote = spec.skipped_path
        if summary.skipped_path is not None:
            storage.upload(summary.skipped_path, skipped_remote)
        else:
            storage.delete(skipped_remote)
    shutil.rmtree(stage, ignore_errors=True)
    summary.output = remote
    summary.skipped_path = skipped_remote if summary.skipped_path is not None else None
    return summary
