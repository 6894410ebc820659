"""Talking to the Hugging Face Hub (or a mirror): list a revision, fetch files.

Everything that touches ``huggingface_hub`` is here, imported inside functions, and
every failure leaves as a one-line :class:`~embedgen.errors.ModelError` naming the
endpoint. ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are read when a
download starts (``huggingface_hub`` itself reads ``HF_ENDPOINT`` only at import).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from embedgen.errors import ModelError

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo revision, with what the Hub says it must be."""

    path: str
    size: int | None
    sha256: str | None
    """LFS files: the sha256 of the content."""
    git_sha1: str | None
    """Git blob id (sha1 of ``blob <size>\\0<content>``): checks non-LFS files."""


@dataclass(frozen=True)
class RemoteRevision:
    repo: str
    commit: str
    files: dict[str, RemoteFile]


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def offline() -> bool:
    return any(
        (os.environ.get(k) or "").strip().lower() in _TRUE
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_repo_path(path: str) -> None:
    """Refuse a repo file name that would land outside the model folder."""
    bad = (
        not path
        or "\0" in path
        or PurePosixPath(path).is_absolute()
        or PureWindowsPath(path).is_absolute()
        or PureWindowsPath(path).drive != ""
        or path.startswith(("/", "\\"))
        or ".." in path.replace("\\", "/").split("/")
        or posixpath.normpath(path) != path.replace("\\", "/").rstrip("/")
    )
    if bad:
        raise ModelError(
            f"the Hub lists a file named {path!r}, which would be written outside the model "
            "folder; refusing to download from this repo"
        )


def _unreachable(ep: str, target: Path, detail: str) -> ModelError:
    return ModelError(
        f"cannot reach the Hub at {ep} ({detail}); set HF_ENDPOINT to a reachable mirror "
        f"(e.g. HF_ENDPOINT=https://hf-mirror.example), or copy a model folder to {target}"
    )


def _is_network_error(exc: BaseException) -> bool:
    root = type(exc).__module__.split(".")[0]
    return isinstance(exc, (ConnectionError, TimeoutError)) or root in {
        "httpx",
        "httpx2",
        "httpcore",
        "requests",
        "urllib3",
    }


def map_error(exc: BaseException, *, repo: str, revision: str, target: Path) -> ModelError:
    """One clear :class:`ModelError` for anything ``huggingface_hub`` raised."""
    from huggingface_hub import errors as hf

    ep = endpoint()
    if isinstance(exc, hf.GatedRepoError):
        return ModelError(
            f"{repo} is gated on {ep}: accept its licence on the Hub and set HF_TOKEN"
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelError(
            f"repo {repo} not found on {ep}; check the name (private repos need HF_TOKEN)"
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return ModelError(f"revision {revision!r} of {repo} not found on {ep}")
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return ModelError(f"{repo}@{revision}: a listed file is missing on {ep} ({_first(exc)})")
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return ModelError(
            f"HF_HUB_OFFLINE is set, so {repo} cannot be fetched; unset it, or copy a model "
            f"folder to {target}"
        )
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:  # a mirror that answers without the Hub's error codes
            return ModelError(
                f"repo {repo} not found on {ep} (HTTP 404 for revision {revision!r}); check "
                "the name and revision (private repos need HF_TOKEN)"
            )
        return _unreachable(ep, target, f"HTTP {status}" if status else _first(exc))
    if _is_network_error(exc):
        return _unreachable(ep, target, _first(exc) or type(exc).__name__)
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return ModelError(
            f"{repo}: a file arrived truncated from {ep} ({_first(exc)}); re-run the download"
        )
    return ModelError(f"download of {repo} from {ep} failed: {_first(exc) or type(exc).__name__}")


def _first(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


def list_revision(repo: str, revision: str, *, target: Path) -> RemoteRevision:
    """The commit ``revision`` resolves to and its files with sizes and hashes."""
    from huggingface_hub import HfApi

    ep = endpoint()
    try:
        info = HfApi(endpoint=ep, token=token()).model_info(
            repo, revision=revision, files_metadata=True
        )
    except Exception as exc:  # mapped to one ModelError
        raise map_error(exc, repo=repo, revision=revision, target=target) from None
    if not info.sha:
        raise ModelError(f"{ep} did not say which commit {repo}@{revision} is; is it a Hub?")
    files: dict[str, RemoteFile] = {}
    for sib in info.siblings or []:
        lfs = sib.lfs
        files[sib.rfilename] = RemoteFile(
            path=sib.rfilename,
            size=(lfs.size if lfs else sib.size),
            sha256=(lfs.sha256 if lfs else None),
            git_sha1=(None if lfs else sib.blob_id),
        )
    return RemoteRevision(repo=repo, commit=info.sha, files=files)


def fetch_file(
    repo: str, path: str, *, commit: str, folder: Path, force: bool, target: Path
) -> Path:
    """Download one repo file into ``folder`` (resumable, with a bytes/speed bar)."""
    from huggingface_hub import hf_hub_download

    check_repo_path(path)
    try:
        local = hf_hub_download(
            repo,
            path,
            revision=commit,
            local_dir=folder,
            endpoint=endpoint(),
            token=token(),
            force_download=force,
        )
    except Exception as exc:  # mapped to one ModelError
        raise map_error(exc, repo=repo, revision=commit, target=target) from None
    return Path(local)


def forget_file(folder: Path, path: str) -> None:
    """Remove a fetched file and huggingface_hub's record of it, so it is fetched again."""
    (folder / path).unlink(missing_ok=True)
    meta = folder / ".cache" / "huggingface" / "download" / f"{path}.metadata"
    meta.unlink(missing_ok=True)
