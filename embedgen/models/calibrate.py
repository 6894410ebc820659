"""Statistics of a model's inner activations on a sample, for smoothing and sensitivity.

:func:`sample_feeds` tokenizes texts into length-sorted padded batches (what a run
sends); :func:`scan_activations` runs a session that also outputs the named inner
tensors and hands each batch's values to a callback, so nothing larger than one
batch is held; :func:`activation_absmax` is the per-channel absolute maximum that
:func:`embedgen.models.variants.smooth` needs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedgen.errors import ModelError

if TYPE_CHECKING:
    import onnx

Feeds = dict[str, np.ndarray]
BATCH_SIZE = 32
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
SAMPLE_SENTENCES = SAMPLE / "sentences.txt"
SAMPLE_PASSAGES = SAMPLE / "passages.txt"


def sample_feeds(
    tokenizer_path: Path,
    texts: list[str],
    *,
    max_tokens: int,
    batch_size: int = BATCH_SIZE,
    prefix: str = "",
) -> list[Feeds]:
    """``input_ids``/``attention_mask``/``token_type_ids`` batches, sorted by length."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    encodings = tok.encode_batch([prefix + t for t in texts])
    order = sorted(range(len(texts)), key=lambda i: (len(encodings[i].ids), i))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encodings[i].ids) for i in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            n = len(encodings[i].ids)
            ids[r, :n] = encodings[i].ids
            mask[r, :n] = 1
        batches.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
    return batches


def _session(model: onnx.ModelProto, threads: int) -> object:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    # Basic folding only: extended fusions would hide the inner tensors asked for.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if model.ByteSize() < 2_000_000_000:
        return ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
    from embedgen.models.variants import save

    tmp = tempfile.mkdtemp(prefix="embedgen-calib-")
    path = Path(tmp) / "model.onnx"
    save(model, path)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def scan_activations(
    model: onnx.ModelProto,
    batches: Iterable[Feeds],
    names: list[str],
    visit: Callable[[Feeds, dict[str, np.ndarray]], None],
    *,
    threads: int = 1,
) -> None:
    """Run ``model`` on each batch and call ``visit(feeds, {name: value})``.

    One thread by default, so the figures (and what is built from them) do not depend
    on how the work was split.
    """
    import onnx
    from onnx import TensorProto, helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = _session(probe, threads)
    inputs = {i.name for i in session.get_inputs()}  # type: ignore[attr-defined]
    for feeds in batches:
        given = {k: v for k, v in feeds.items() if k in inputs}
        try:
            values = session.run(names, given)  # type: ignore[attr-defined]
        except Exception as exc:  # onnxruntime's own error types
            raise ModelError(f"the model failed on a sample batch: {exc}") from None
        visit(given, dict(zip(names, values)))


def activation_absmax(
    model: onnx.ModelProto, batches: Iterable[Feeds], names: list[str]
) -> dict[str, np.ndarray]:
    """Per-channel absolute maximum of each named activation over every batch."""
    found: dict[str, np.ndarray] = {}

    def visit(_feeds: Feeds, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            a = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            found[name] = np.maximum(found[name], a) if name in found else a

    scan_activations(model, batches, names, visit)
    return found


def builtin_texts() -> list[str]:
    """The built-in sample: short texts, passages, and paragraphs of consecutive texts.

    Short texts alone leave the later positions of a 256-token window unseen; the
    paragraphs (4 to 16 consecutive lines joined) and passages cover them.
    """
    lines = [t for t in SAMPLE_SENTENCES.read_text("utf-8").splitlines() if t.strip()]
    passages = [t for t in SAMPLE_PASSAGES.read_text("utf-8").splitlines() if t.strip()]
    paragraphs: list[str] = []
    start, sizes = 0, (4, 8, 12, 16)
    while start < len(lines):
        size = sizes[len(paragraphs) % len(sizes)]
        paragraphs.append(" ".join(lines[start : start + size]))
        start += size
    out: list[str] = []
    for i, line in enumerate(lines):  # interleaved, so a --limit keeps a mix of lengths
        out.append(line)
        if i % 4 == 3 and paragraphs:
            out.append(paragraphs.pop(0))
        if i % 12 == 11 and passages:
            out.append(passages.pop(0))
    return out + paragraphs + passages
