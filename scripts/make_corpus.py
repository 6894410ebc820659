"""Build benchmark corpora from real text found on this machine, offline and deterministically.

Sources: docstrings of the Python standard library and installed packages (read with
``ast``, nothing is imported), /usr/share/common-licenses, /usr/share/doc/*/copyright
and README files, and man pages stripped of troff. Writes, under ``--out``:

- ``short.parquet`` / ``short.jsonl``: one to three sentences per row (5-120 words),
  deduplicated; columns ``id``, ``text``.
- ``long.parquet``: whole documents of 600-5,000 words (licenses, module docs, man
  pages, copyright files); columns ``id``, ``text``.
- ``short_20k.parquet``, ``short_200k.parquet``: short texts, the pool repeated with a
  row-number suffix once exhausted, so every text is distinct.

    python scripts/make_corpus.py --out bench-data
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import random
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "bench-data"
SHORT_WORDS = (5, 120)
LONG_WORDS = (600, 5000)
MAN_SECTIONS = ("man1", "man5", "man8")
MAN_PER_FAMILY = 60
"""Most man pages per name prefix (``gcloud_*`` alone has thousands of near-twins)."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_WS = re.compile(r"\s+")
_TROFF_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # string registers
    (re.compile(r"\\[nkmM](\[[^\]]*\]|\(..|.)"), ""),  # registers, marks, colours
    (re.compile(r"\\[hvwlLoDbxXZR]'[^']*'"), ""),  # motions, widths, drawing
    (re.compile(r"\\[ud]"), ""),  # half-line up/down
    (re.compile(r"\\\((em|en)"), "\u2014"),
    (re.compile(r"\\\((aq|cq|oq)"), "'"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\(co"), "\u00a9"),
    (re.compile(r"\\\(bu"), "\u2022"),
    (re.compile(r"\\\(.."), ""),
    (re.compile(r"\\\[[^\]]*\]"), ""),
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\[&|^/,%:c0 ~]"), ""),
    (re.compile(r"\\\"$"), ""),
]
_TROFF_KEEP_ARGS = {"SH", "SS", "B", "I", "BR", "IR", "RB", "BI", "IB", "RI", "IP", "TP", "Nm"}


@dataclass(frozen=True)
class Doc:
    source: str
    name: str
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def _read_text(path: Path) -> str | None:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return raw.decode("utf-8", errors="replace")


# --- sources -------------------------------------------------------------------------


def python_docs(roots: list[Path]) -> Iterator[Doc]:
    """One document per module: its docstring, then each class and function docstring."""
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if any(
                part in {"test", "tests", "idlelib", "site-packages"}
                for part in path.parts[len(root.parts) : -1]
            ):
                continue
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError, OSError, RecursionError):
                continue
            parts = []
            if doc := ast.get_docstring(tree):
                parts.append(doc)
            for node in ast.walk(tree):
                if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and not node.name.startswith("_"):
                        parts.append(f"{node.name}\n\n{doc}")
            if parts:
                rel = path.relative_to(root).with_suffix("")
                yield Doc("python", ".".join(rel.parts), "\n\n".join(parts))


def license_docs() -> Iterator[Doc]:
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        if path.is_file() and (text := _read_text(path)):
            yield Doc("license", path.name, text)


def debian_docs() -> Iterator[Doc]:
    for pkg in sorted(Path("/usr/share/doc").glob("*")):
        files = [pkg / "copyright", *sorted(pkg.glob("README*"))]
        for path in files:
            if path.is_file() and not path.is_symlink() and (text := _read_text(path)):
                yield Doc("doc", f"{pkg.name}/{path.name}", text)


def strip_troff(src: str) -> str:
    """Plain text of a man page: macros dropped (their text arguments kept), escapes removed."""
    out: list[str] = []
    for line in src.splitlines():
        if line.startswith((".", "'")):
            macro, _, args = line[1:].strip().partition(" ")
            if macro in ("SH", "SS", "PP", "P", "LP", "TP", "IP", "sp", "br"):
                out.append("")
            if macro not in _TROFF_KEEP_ARGS or not args:
                continue
            line = args.replace('"', "")
        for pattern, repl in _TROFF_ESCAPES:
            line = pattern.sub(repl, line)
        out.append(line.replace("\\", ""))
    return "\n".join(out)


def man_docs() -> Iterator[Doc]:
    families: dict[str, int] = {}
    for section in MAN_SECTIONS:
        for path in sorted(Path("/usr/share/man", section).glob("*.gz")):
            family = re.split(r"[-_.]", path.name, maxsplit=1)[0]
            if families.get(family, 0) >= MAN_PER_FAMILY or path.is_symlink():
                continue
            if not (src := _read_text(path)):
                continue
            if src.startswith(".so "):  # a redirect to another page
                continue
            families[family] = families.get(family, 0) + 1
            yield Doc("man", path.name.removesuffix(".gz"), strip_troff(src))


# --- shaping -------------------------------------------------------------------------


def paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        para = _WS.sub(" ", block).strip()
        if para:
            yield para


def _is_prose(text: str) -> bool:
    """Mostly letters and spaces: drops code, tables, option lists and markup."""
    if ">>>" in text or "::" in text or "---" in text or "===" in text or "http" in text:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return letters / len(text) > 0.85 and text[0].isupper() and text[-1] in ".!?\"')"


def short_texts(docs: list[Doc], rng: random.Random) -> list[str]:
    """Runs of one to three sentences from prose paragraphs, deduplicated, shuffled."""
    seen: set[str] = set()
    out: list[str] = []
    lo, hi = SHORT_WORDS
    for doc in docs:
        for para in paragraphs(doc.text):
            sentences = _SENTENCE_END.split(para)
            i = 0
            while i < len(sentences):
                take = rng.randint(1, 3)
                text = " ".join(sentences[i : i + take])
                i += take
                key = text.lower()
                if lo <= len(text.split()) <= hi and _is_prose(text) and key not in seen:
                    seen.add(key)
                    out.append(text)
    rng.shuffle(out)
    return out


def _clip(text: str, max_words: int) -> str:
    """Whole paragraphs up to ``max_words`` words."""
    kept: list[str] = []
    count = 0
    for block in re.split(r"\n\s*\n", text.strip()):
        n = len(block.split())
        if count + n > max_words:
            break
        kept.append(block.strip("\n"))
        count += n
    return "\n\n".join(kept)


def long_texts(docs: list[Doc], n: int, rng: random.Random) -> list[Doc]:
    """Up to ``n`` documents of 600-5,000 words, mixed evenly across sources."""
    lo, hi = LONG_WORDS
    by_source: dict[str, list[Doc]] = {}
    seen: set[str] = set()
    for doc in docs:
        text = re.sub(r"\n{3,}", "\n\n", doc.text).strip()
        if len(text.split()) > hi:
            text = _clip(text, hi)
        if lo <= len(text.split()) <= hi and text not in seen:
            seen.add(text)
            by_source.setdefault(doc.source, []).append(Doc(doc.source, doc.name, text))
    for group in by_source.values():
        rng.shuffle(group)
    picked: list[Doc] = []
    queues = [by_source[s] for s in sorted(by_source)]
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return picked


def repeated(pool: list[str], rows: int) -> list[str]:
    """``rows`` distinct texts: the pool, then the pool again with a row-number suffix."""
    return [
        pool[i % len(pool)] if i < len(pool) else f"{pool[i % len(pool)]} (#{i})"
        for i in range(rows)
    ]


# --- output --------------------------------------------------------------------------


def write_parquet(path: Path, ids: list[str], texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=10_000)


def write_jsonl(path: Path, ids: list[str], texts: list[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i, t in zip(ids, texts, strict=True):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")


def python_roots() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    roots += [
        Path(p) for p in sorted(set(sys.path)) if p.endswith(("dist-packages", "site-packages"))
    ]
    unique: list[Path] = []
    for r in roots:
        if r.is_dir() and r not in unique:
            unique.append(r)
    return unique


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--short", type=int, default=10_000, help="rows of short.parquet")
    parser.add_argument("--long", type=int, default=500, help="rows of long.parquet")
    args = parser.parse_args(argv)

    docs: list[Doc] = []
    for name, source in (
        ("python", python_docs(python_roots())),
        ("licenses", license_docs()),
        ("doc", debian_docs()),
        ("man", man_docs()),
    ):
        before = len(docs)
        docs.extend(source)
        print(f"read {len(docs) - before:,} {name} documents")

    pool = short_texts(docs, random.Random(args.seed))
    if len(pool) < args.short:
        print(f"only {len(pool):,} short texts found, fewer than {args.short:,}", file=sys.stderr)
        return 1
    longs = long_texts(docs, args.long, random.Random(args.seed + 1))

    args.out.mkdir(parents=True, exist_ok=True)
    short = pool[: args.short]
    short_ids = [f"s{i:06d}" for i in range(len(short))]
    write_parquet(args.out / "short.parquet", short_ids, short)
    write_jsonl(args.out / "short.jsonl", short_ids, short)
    for rows, name in ((20_000, "short_20k"), (200_000, "short_200k")):
        write_parquet(
            args.out / f"{name}.parquet", [f"r{i:06d}" for i in range(rows)], repeated(pool, rows)
        )
    write_parquet(
        args.out / "long.parquet",
        [f"{d.source}:{d.name}" for d in longs],
        [d.text for d in longs],
    )

    words = sorted(d.words for d in longs)
    mix = {s: sum(d.source == s for d in longs) for s in sorted({d.source for d in longs})}
    print(f"short pool: {len(pool):,} distinct texts")
    print(f"short.parquet, short.jsonl: {len(short):,} rows")
    print("short_20k.parquet: 20,000 rows; short_200k.parquet: 200,000 rows")
    print(
        f"long.parquet: {len(longs):,} documents, words min {words[0]:,} "
        f"median {words[len(words) // 2]:,} max {words[-1]:,}, by source {mix}"
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
