"""What a download fetches: a registry entry or an unlisted repo turned into a plan,
and the repo files chosen from the Hub's listing.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

from embedgen.errors import ModelError, UsageError
from embedgen.models import hub
from embedgen.models.registry import RegistryEntry, load_registry, lookup

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
    pooling = pooling.lower() if pooling is not None else None
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
        known = ", ".join(sorted(load_registry()))
        raise UsageError(f"unknown model {model!r}: use a known name ({known}) or ORG/REPO")
    if not _NAME_RE.match(plan.name):
        raise UsageError(f"model name {plan.name!r} is not a plain folder name; pass --name")
    return plan


def _registry_by_repo() -> list[RegistryEntry]:
    return list(load_registry().values())


# -- choosing files -------------------------------------------------------------------


def select_files(plan: Plan, rev: hub.RemoteRevision) -> list[str]:
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
