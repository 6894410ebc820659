"""``embedgen download``: fetch a model's ONNX files from the Hub, verify, record, prove.

A download goes to ``<models-dir>/.<name>.partial/`` (resumable), every file is
checked against the Hub's size and sha256 (LFS) or git blob id, the caller's proof
(``prove``: load the model once and embed a sentence) runs, the manifest is written,
and only then does the folder replace ``<models-dir>/<name>/``. A folder whose
manifest still verifies is left as is without touching the network.

A Hub or mirror that lists no hash for a file cannot have that file verified: the
download says so in a note and records the files in the manifest, and
``require_verified`` refuses such downloads before fetching anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedgen.errors import ModelError
from embedgen.models import hub
from embedgen.models.local import models_dir as default_models_dir
from embedgen.models.local import read_folder, sha256_file
from embedgen.models.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    read_manifest,
    write_manifest,
)
from embedgen.models.onnx_info import SPARSE_OUTPUT, find_sparse_head, graph_outputs
from embedgen.models.plan import Plan, plan_for, select_files
from embedgen.util.atomic import replace_durably

if TYPE_CHECKING:
    from embedgen.models.local import ModelSpec

__all__ = ["DownloadResult", "download_model", "plan_for", "verify_folder"]


@dataclass(frozen=True)
class DownloadResult:
    folder: Path
    manifest: Manifest
    fetched: bool
    """False when the folder already held the verified model (a no-op)."""
    size: int
    dim: int | None
    notes: tuple[str, ...] = ()
    """Things the user should know (a local file that failed verification, ...)."""


# -- local verification ---------------------------------------------------------------


def verify_folder(folder: Path, manifest: Manifest) -> list[str]:
    """Problems with the files the manifest lists (empty: every size and sha256 matches)."""
    problems = []
    if not manifest.files:
        return ["the manifest lists no files"]
    for f in manifest.files:
        path = folder / f.path
        if not path.is_file():
            problems.append(f"{f.path} is missing")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.path} has {path.stat().st_size} bytes, expected {f.size}")
        elif sha256_file(path) != f.sha256:
            problems.append(f"{f.path} has been altered (sha256 differs)")
    return problems


def _git_sha1(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _check_against_hub(local: Path, remote: hub.RemoteFile, ep: str) -> FileEntry:
    """Size and hash of a fetched file against the Hub's listing; a FileEntry when it matches."""
    size = local.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ModelError(
            f"{remote.path} is truncated or padded: {size} bytes, the Hub at {ep} lists "
            f"{remote.size}; re-run the download"
        )
    digest = sha256_file(local)
    if remote.sha256 is not None and digest != remote.sha256:
        raise ModelError(
            f"{remote.path} does not match the Hub's sha256 ({digest[:12]}... vs "
            f"{remote.sha256[:12]}...): the file was altered in transit or on the server; "
            "it has been removed, re-run the download"
        )
    if remote.sha256 is None and remote.git_sha1 and _git_sha1(local) != remote.git_sha1:
        raise ModelError(
            f"{remote.path} does not match the Hub's git blob id: the file was altered; "
            "it has been removed, re-run the download"
        )
    return FileEntry(path=remote.path, size=size, sha256=digest)


def _unverifiable(rev: hub.RemoteRevision, chosen: list[str]) -> list[str]:
    """The chosen files for which the listing gives no sha256 and no git blob id."""
    return [p for p in chosen if rev.files[p].sha256 is None and not rev.files[p].git_sha1]


# -- the download ---------------------------------------------------------------------


def _target_ok(
    target: Path, plan: Plan, notes: list[str], require_verified: bool
) -> Manifest | None:
    """The target's manifest when it already holds this model, verified; else None."""
    manifest = read_manifest(target) if target.is_dir() else None
    if manifest is None:
        if target.exists() and any(target.iterdir()):
            raise ModelError(
                f"{target} exists and is not a downloaded model (no {MANIFEST_NAME}); "
                "pass --force to replace it, or --name to use another folder"
            )
        return None
    if (manifest.repo or "").lower() != plan.repo.lower():
        raise ModelError(
            f"{target} holds {manifest.repo}, not {plan.repo}; pass --force to replace it, "
            "or --name to use another folder"
        )
    asked = manifest.extra.get("requested_revision")
    same_rev = plan.revision in (asked, manifest.revision)
    if manifest.variant != plan.variant or not same_rev:
        return None
    problems = verify_folder(target, manifest)
    if problems:
        notes.append(f"{target.name}: {problems[0]}; fetched again")
        return None
    unverified = manifest.extra.get("unverified") or []
    if require_verified and unverified:
        raise ModelError(
            f"{target} was fetched from a source that listed no hashes, so "
            f"{', '.join(unverified)} were never verified; pass --force to fetch it again "
            "with --require-verified, or drop --require-verified"
        )
    return manifest


def _swap_in(staging: Path, target: Path) -> None:
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    replace_durably(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def download_model(
    model: str,
    *,
    models_dir: Path | None = None,
    force: bool = False,
    require_verified: bool = False,
    prove: Callable[[ModelSpec], int] | None = None,
    **options: Any,
) -> DownloadResult:
    """Fetch ``model`` (registry name or ``ORG/REPO``) into ``<models_dir>/<name>/``.

    ``prove`` loads the staged model and returns its vector size (e.g.
    :func:`embedgen.providers.smoke.smoke_test`); None skips that proof.
    ``require_verified`` refuses files the Hub lists without a hash. ``options`` are
    :func:`~embedgen.models.plan.plan_for`'s: revision, variant, name, onnx_file,
    pooling, dim, max_tokens, query_prefix, document_prefix.
    """
    plan = plan_for(model, **options)
    root = (models_dir or default_models_dir()).expanduser()
    target = root / plan.name
    notes: list[str] = []
    if not force:
        done = _target_ok(target, plan, notes, require_verified)
        if done is not None:
            return DownloadResult(target, done, False, sum(f.size for f in done.files), done.dim)
    if hub.offline():
        raise ModelError(
            f"HF_HUB_OFFLINE is set and {target} does not hold a verified {plan.name}; "
            f"unset HF_HUB_OFFLINE, or copy a model folder to {target}"
        )
    rev = hub.list_revision(plan.repo, plan.revision, target=target)
    chosen = select_files(plan, rev)
    ep = hub.endpoint()
    unverified = _unverifiable(rev, chosen)
    names = ", ".join(unverified)
    if unverified and require_verified:
        raise ModelError(
            f"{ep} lists no sha256 or git blob id for {names} of "
            f"{plan.repo}@{rev.commit[:12]}, so they cannot be verified and "
            "--require-verified refuses them; download from a Hub that lists hashes"
        )
    if unverified:
        notes.append(
            f"{len(unverified)} file(s) of {plan.repo} could not be verified: {ep} lists "
            f"no sha256 or size for {names}; pass --require-verified to refuse "
            "such downloads"
        )
    staging = root / f".{plan.name}.partial"
    if force:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in chosen:
        local = hub.fetch_file(
            plan.repo, path, commit=rev.commit, folder=staging, force=force, target=target
        )
        try:
            entries.append(_check_against_hub(local, rev.files[path], ep))
        except ModelError:
            hub.forget_file(staging, path)
            raise
    manifest = _manifest(plan, rev, entries, staging)
    if unverified:
        manifest.extra["unverified"] = sorted(unverified)
    write_manifest(staging, manifest)
    if prove is not None:
        dim = prove(read_folder(staging, name=plan.name))
        if manifest.dim is not None and dim != manifest.dim:
            raise ModelError(
                f"{plan.name}: the model gives {dim}-d vectors, expected {manifest.dim}; "
                "check --onnx-file / --dim"
            )
        if manifest.dim is None:
            manifest.dim = dim
            write_manifest(staging, manifest)
    _swap_in(staging, target)
    size = sum(f.size for f in entries)
    return DownloadResult(target, manifest, True, size, manifest.dim, tuple(notes))


def _manifest(
    plan: Plan, rev: hub.RemoteRevision, entries: list[FileEntry], staging: Path
) -> Manifest:
    """The manifest: the plan, filled in from the fetched files where it left things open."""
    if plan.onnx_file is None or plan.tokenizer_file is None:
        raise ModelError(f"{plan.repo}: no ONNX file or tokenizer chosen")
    onnx_path = staging / plan.onnx_file
    outputs = graph_outputs(onnx_path)
    pooling = plan.pooling
    if plan.model_output and plan.model_output in outputs:
        pooling = "model"
    max_tokens = plan.max_tokens
    if pooling is None or max_tokens is None:  # read the repo's sentence-transformers files
        st = read_folder(staging, name=plan.name, onnx_override=onnx_path)
        pooling, max_tokens = pooling or st.pooling, max_tokens or st.max_tokens
    extra = dict(plan.extra)
    extra["requested_revision"] = plan.revision
    extra["outputs"] = outputs
    head = find_sparse_head(staging, onnx_path)
    if head is not None:
        extra["sparse_head"] = head.relative_to(staging).as_posix()
    return Manifest(
        name=plan.name,
        onnx_file=plan.onnx_file,
        tokenizer_file=plan.tokenizer_file,
        pooling=pooling,
        normalize=plan.normalize,
        dim=plan.dim,
        max_tokens=max_tokens,
        query_prefix=plan.query_prefix,
        document_prefix=plan.document_prefix,
        repo=plan.repo,
        revision=rev.commit,
        variant=plan.variant,
        licence=plan.licence,
        sparse=SPARSE_OUTPUT in outputs or head is not None,
        files=sorted(entries, key=lambda e: e.path),
        extra=extra,
    )
