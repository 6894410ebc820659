"""``embedgen download``: fetch a model's ONNX files from the Hub, verify, record, prove.

A download goes to ``<models-dir>/.<name>.partial/`` (resumable), every file is
checked against the Hub's size and sha256 (LFS) or git blob id, the model is loaded
once to embed a sentence, the manifest is written, and only then does the folder
replace ``<models-dir>/<name>/``. A folder whose manifest still verifies is left as
is without touching the network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from embedgen.errors import ModelError, UsageError
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
from embedgen.models.registry import RegistryEntry, lookup

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.-]*$")
_POOLINGS = ("mean", "cls", "model")
_ST_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
)
_WEIGHT_SUFFIXES = (
    ".bin",
    ".safetensors",
    ".h5",
    ".msgpack",
    ".pt",
    ".pth",
    ".ckpt",
    ".gguf",
    ".tflite",
    ".ot",
    ".onnx",
)


@dataclass(kw_only=True)
class Plan:
    """What to fetch and how the model runs, before the Hub has been asked."""

    name: str
    repo: str
    revision: str
    variant: str | None = None
    patterns: tuple[str, ...] | None = None
    """None: choose from the listing (an unlisted repo)."""
    onnx_file: str | None = None
    tokenizer_file: str | None = None
    pooling: str | None = None
    model_output: str | None = None
    normalize: bool = True
    dim: int | None = None
    max_tokens: int | None = None
    query_prefix: str = ""
    document_prefix: str = ""
    licence: str | None = None
    extra: dict = field(default_factory=dict)


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


def plan_for(
    model: str,
    *,
    revision: str | None = None,
    variant: str | None = None,
    name: str | None = None,
    onnx_file: str | None = None,
    pooling: str | None = None,
    dim: int | None = None,
    max_tokens: int | None = None,
    query_prefix: str | None = None,
    document_prefix: str | None = None,
) -> Plan:
    """A plan from the registry (``bge-m3``) or for any ``ORG/REPO`` with options."""
    if pooling is not None and pooling not in _POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(_POOLINGS)}, not {pooling!r}")
    entry: RegistryEntry | None = lookup(model)
    if entry is None:
        entry = next((e for e in _registry_by_repo() if e.repo.lower() == model.lower()), None)
        if entry is not None and onnx_file is not None:
            entry = None  # explicit files: treat as an unlisted repo
    if entry is not None:
        plan = Plan(
            name=name or entry.name,
            repo=entry.repo,
            revision=revision or entry.revision,
            variant=variant,
            patterns=entry.patterns_for(variant),
            onnx_file=entry.onnx_for(variant),
            tokenizer_file=entry.tokenizer_file,
            pooling=pooling or entry.pooling,
            model_output=None if pooling else entry.model_output,
            normalize=entry.normalize,
            dim=dim or entry.dim,
            max_tokens=max_tokens or entry.max_tokens,
            query_prefix=entry.query_prefix if query_prefix is None else query_prefix,
            document_prefix=entry.document_prefix if document_prefix is None else document_prefix,
            licence=entry.licence or None,
        )
        if entry.matryoshka_dims:
            plan.extra["matryoshka_dims"] = list(entry.matryoshka_dims)
    elif _REPO_RE.match(model):
        if variant is not None:
            raise UsageError("--variant needs a registry model; for a repo pass --onnx-file")
        if onnx_file is not None:
            hub.check_repo_path(onnx_file)
        plan = Plan(
            name=name or model.split("/")[1].lower(),
            repo=model,
            revision=revision or "main",
            onnx_file=onnx_file,
            pooling=pooling,
            dim=dim,
            max_tokens=max_tokens,
            query_prefix=query_prefix or "",
            document_prefix=document_prefix or "",
        )
    else:
        from embedgen.models.registry import load_registry

        known = ", ".join(sorted(load_registry()))
        raise UsageError(f"unknown model {model!r}: use a known name ({known}) or ORG/REPO")
    if not _NAME_RE.match(plan.name):
        raise UsageError(f"model name {plan.name!r} is not a plain folder name; pass --name")
    return plan


def _registry_by_repo() -> list[RegistryEntry]:
    from embedgen.models.registry import load_registry

    return list(load_registry().values())


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


# -- choosing files -------------------------------------------------------------------


def _select(plan: Plan, rev: hub.RemoteRevision) -> list[str]:
    names = sorted(rev.files)
    if plan.onnx_file is None:
        onnx = [n for n in names if n.endswith(".onnx")]
        preferred = next((n for n in ("onnx/model.onnx", "model.onnx") if n in rev.files), None)
        if preferred is None and len(onnx) != 1:
            listed = ", ".join(onnx) or "none"
            raise ModelError(f"{plan.repo}: pick the ONNX file with --onnx-file (found: {listed})")
        plan.onnx_file = preferred or onnx[0]
    if plan.patterns is None:
        plan.patterns = _patterns_for_repo(plan.onnx_file, names)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in plan.patterns)]
    for n in chosen:
        hub.check_repo_path(n)
    if plan.onnx_file not in rev.files:
        avail = ", ".join(n for n in names if n.endswith(".onnx")) or "none"
        raise ModelError(
            f"{plan.repo}@{plan.revision} has no {plan.onnx_file} (ONNX files: {avail})"
        )
    if plan.tokenizer_file is None:
        beside = f"{os.path.dirname(plan.onnx_file)}/tokenizer.json".lstrip("/")
        plan.tokenizer_file = beside if beside in rev.files else "tokenizer.json"
    if plan.tokenizer_file not in rev.files:
        raise ModelError(f"{plan.repo}@{plan.revision} has no {plan.tokenizer_file}")
    for required in (plan.onnx_file, plan.tokenizer_file):
        if required not in chosen:
            chosen.append(required)
    return chosen


def _patterns_for_repo(onnx_file: str, names: list[str]) -> tuple[str, ...]:
    """An unlisted repo: the ONNX file, its external data and tokenizer/config files."""
    folder = os.path.dirname(onnx_file)
    stem = os.path.basename(onnx_file)
    others = [os.path.basename(n) for n in names if n.endswith(".onnx") and n != onnx_file]
    pats = [onnx_file, *(_ST_FILES), "*_Pooling/config.json"]
    for n in names:
        if os.path.dirname(n) != folder or n == onnx_file:
            continue
        base = os.path.basename(n)
        if base.startswith(stem):
            pats.append(n)  # model.onnx_data, model.onnx.data
        elif (
            folder
            and not base.endswith(_WEIGHT_SUFFIXES)
            and not any(base.startswith(o) for o in others)
        ):
            pats.append(n)  # tokenizer files and extra tensor files beside the graph
    return tuple(dict.fromkeys(pats))


# -- the download ---------------------------------------------------------------------


def _target_ok(target: Path, plan: Plan, notes: list[str]) -> Manifest | None:
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
    return manifest


def _swap_in(staging: Path, target: Path) -> None:
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def download_model(
    model: str,
    *,
    models_dir: Path | None = None,
    force: bool = False,
    smoke: bool = True,
    **options: object,
) -> DownloadResult:
    """Fetch ``model`` (registry name or ``ORG/REPO``) into ``<models_dir>/<name>/``."""
    plan = plan_for(model, **options)  # type: ignore[arg-type]
    root = (models_dir or default_models_dir()).expanduser()
    target = root / plan.name
    notes: list[str] = []
    if not force:
        done = _target_ok(target, plan, notes)
        if done is not None:
            return DownloadResult(target, done, False, sum(f.size for f in done.files), done.dim)
    if hub.offline():
        raise ModelError(
            f"HF_HUB_OFFLINE is set and {target} does not hold a verified {plan.name}; "
            f"unset HF_HUB_OFFLINE, or copy a model folder to {target}"
        )
    rev = hub.list_revision(plan.repo, plan.revision, target=target)
    chosen = _select(plan, rev)
    staging = root / f".{plan.name}.partial"
    if force:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    entries = []
    ep = hub.endpoint()
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
    write_manifest(staging, manifest)
    if smoke:
        from embedgen.models.onnx_info import smoke_test

        dim = smoke_test(read_folder(staging, name=plan.name))
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
    from embedgen.models.onnx_info import graph_outputs
    from embedgen.providers.sparse import SPARSE_OUTPUT, find_sparse_head

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
