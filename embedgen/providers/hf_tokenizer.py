"""A ``tokenizer.json`` (Hugging Face tokenizers) as a :class:`TextTokenizer`.

Documents are tokenized once without special tokens; chunk windows are slices of
those ids, and the model-ready ids are ``head + prefix + window + tail``, so a
local model never tokenizes a text twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedgen.errors import ModelError


class HFTokenizer:
    def __init__(self, path: Path, *, prefix: str = "") -> None:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception on bad files
            raise ModelError(f"{path}: cannot load tokenizer ({exc})") from None
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.path = path
        self.prefix = prefix
        self.head, self.tail = _special_template(tok)
        self.prefix_ids: list[int] = (
            tok.encode(prefix, add_special_tokens=False).ids if prefix else []
        )
        self.pad_id = _pad_id(tok)

    @property
    def overhead(self) -> int:
        return len(self.head) + len(self.tail) + len(self.prefix_ids)

    def encode_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [(e.ids, e.offsets) for e in encs]

    def model_inputs(self, ids: Sequence[int]) -> list[int]:
        return [*self.head, *self.prefix_ids, *ids, *self.tail]

    def encode_for_model(self, text: str) -> list[int]:
        """Model-ready ids of one text (prefix and special tokens added)."""
        return self.model_inputs(self._tok.encode(text, add_special_tokens=False).ids)

    def special_ids(self) -> set[int]:
        return {*self.head, *self.tail, self.pad_id}


def _special_template(tok: object) -> tuple[list[int], list[int]]:
    """Special-token ids the post-processor puts before and after a single text."""
    probe = "a"
    plain = tok.encode(probe, add_special_tokens=False).ids  # type: ignore[attr-defined]
    full = tok.encode(probe, add_special_tokens=True).ids  # type: ignore[attr-defined]
    n = len(plain)
    for i in range(len(full) - n + 1):
        if full[i : i + n] == plain:
            return list(full[:i]), list(full[i + n :])
    return [], []


def _pad_id(tok: object) -> int:
    for name in ("[PAD]", "<pad>", "<|padding|>", "<|endoftext|>"):
        tid = tok.token_to_id(name)  # type: ignore[attr-defined]
        if tid is not None:
            return int(tid)
    return 0
