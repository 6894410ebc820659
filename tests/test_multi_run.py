"""Several models in one pass: one read, shared chunks, one vector column per model slot.

The slots: the default (int8), the packaged default as shipped (fp32, ``default-original``)
and an OpenAI-compatible API on a loopback server, whose vectors are a known function of
the text (``vector_for``), so its column can be checked exactly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embedgen.cli import app
from embedgen.models.local import resolve_model
from embedgen.providers.api_tokenizers import BpeTokenizer
from embedgen.providers.hf_tokenizer import HFTokenizer
from tests.api_servers import ApiServer, vector_for
from tests.cache_corpus import sentences, write_corpus

runner = CliRunner()
KEY = "sk-multi-test-0123456789abcdef"
API_MODEL = "BAAI/bge-small-en-v1.5"
SLOT = re.compile(r"slot (\w+): .*?, ([\d,]+) cached, ([\d,]+) computed")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EG_COMPAT_KEY", KEY)
    with ApiServer("openai", key=KEY, dim=8, model=API_MODEL) as s:
        yield s


def config(path: Path, server: ApiServer, extra: str = "") -> Path:
    path.write_text(
        f'[providers.api]\nkind = "openai_compatible"\nbase_url = "{server.url}/v1"\n'
        f'model = "{API_MODEL}"\ndim = 8\napi_key_env = "EG_COMPAT_KEY"\n'
        'tokenizer = "cl100k_base"\nmax_retries = 1\nbackoff_base = 0.001\n'
        "failure_threshold = 2\nrecovery_timeout = 30\n" + extra,
        encoding="utf-8",
    )
    return path


def corpus(tmp_path: Path, n: int = 40) -> Path:
    short = sentences(n, seed=4)
    long = [" ".join(sentences(30, seed=5 + i, avoid=set(short))) for i in range(3)]
    texts = short[:10] + long + short[10:]
    return write_corpus(tmp_path / "corpus.parquet", [f"d{i:03d}" for i in range(len(texts))],
                        texts)  # fmt: skip


def run(*args: str | Path, code: int = 0) -> dict[str, tuple[int, int]]:
    result = runner.invoke(app, ["run", *map(str, args)])
    assert result.exit_code == code, result.output
    return {m[0]: (int(m[1].replace(",", "")), int(m[2].replace(",", "")))
            for m in SLOT.findall(result.output)}  # fmt: skip


def slots(*names: str) -> list[str]:
    spec = {"fast": "default", "fp32": "default-original", "api": "api"}
    return [x for n in names for x in ("--model", f"{n}={spec[n]}")]


def test_three_models_one_pass(tmp_path: Path, server: ApiServer, monkeypatch) -> None:
    from embedgen.pipeline import windows

    reads = []
    real = windows.read_documents

    def counted(*a, **k):
        reads.append(a)
        return real(*a, **k)

    monkeypatch.setattr(windows, "read_documents", counted)
    src, cfg, out = corpus(tmp_path), config(tmp_path / "c.toml", server), tmp_path / "out.parquet"
    counts = run(src, "-c", cfg, *slots("fast", "fp32", "api"), "--id-column", "doc",
                 "--max-tokens", "48", "--overlap", "8", "-o", out)  # fmt: skip
    assert len(reads) == 1, "the corpus is read once for every model"
    table = pq.read_table(out)
    n = table.num_rows
    assert n > 43, "long documents are cut into several chunks"
    assert {k: v[1] for k, v in counts.items()} == {"fast": n, "fp32": n, "api": n}
    names = table.schema.names
    for col in ("embedding_fast", "embedding_fp32", "embedding_api", "tokens_api"):
        assert col in names
    assert "embedding" not in names and "tokens_fp32" not in names  # same tokenizer as fast
    texts = table.column("text").to_pylist()
    # every chunk fits every model, in its own tokens
    minilm = HFTokenizer(resolve_model("default").tokenizer_path)
    bpe = BpeTokenizer("cl100k_base")
    for t, api_tokens in zip(texts, table.column("tokens_api").to_pylist()):
        assert len(minilm.encode_offsets([t])[0][0]) + minilm.overhead <= 48
        assert len(bpe.encode_offsets([t])[0][0]) == api_tokens <= 48
    # the API column is the server's vectors exactly
    api = np.array(table.column("embedding_api").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(api, [vector_for(t, 8, API_MODEL) for t in texts])
    # each column's metadata names its own model and fingerprint
    meta = {c: table.schema.field(f"embedding_{c}").metadata for c in ("fast", "fp32", "api")}
    fps = {c: m[b"embedgen.fingerprint"] for c, m in meta.items()}
    assert len(set(fps.values())) == 3
    assert meta["api"][b"embedgen.model"] == API_MODEL.encode()
    models = json.loads(table.schema.metadata[b"embedgen.models"])
    assert models["fp32"]["fingerprint"] == fps["fp32"].decode()
    # the local columns equal single-model runs with the same --max-tokens, on the chunks
    # both cut alike (MiniLM is the strictest model; a few chunks were cut further for the API)
    spans = list(zip(*(table.column(c).to_pylist() for c in ("id", "char_start", "char_end"))))
    for name, model in (("fp32", "default-original"), ("fast", "default")):
        single = tmp_path / f"{name}.parquet"
        run(src, "--model", model, "--id-column", "doc", "--max-tokens", "48", "--overlap", "8",
            "--no-cache", "-o", single)  # fmt: skip
        ref = pq.read_table(single)
        ref_rows = dict(zip(
            zip(*(ref.column(c).to_pylist() for c in ("id", "char_start", "char_end"))),
            ref.column("embedding").to_pylist(),
        ))  # fmt: skip
        both = [i for i, s in enumerate(spans) if s in ref_rows]
        assert len(both) >= 0.9 * n
        a = np.array(table.column(f"embedding_{name}").take(both).to_pylist())
        b = np.array([ref_rows[spans[i]] for i in both])
        cos = (a * b).sum(1)
        assert cos.min() >= (0.99999 if name == "fp32" else 0.99), (name, cos.min())


def test_adding_a_model_embeds_only_that_model(tmp_path: Path, server: ApiServer) -> None:
    src, cfg = corpus(tmp_path, 20), config(tmp_path / "c.toml", server)
    first = run(src, "-c", cfg, *slots("fp32", "api"), "-o", tmp_path / "a.parquet")
    requests = server.ok_requests()
    again = run(src, "-c", cfg, *slots("fp32", "api", "fast"), "-o", tmp_path / "b.parquet")
    chunks = first["fp32"][1]
    assert again == {"fp32": (chunks, 0), "api": (chunks, 0), "fast": (0, chunks)}
    assert server.ok_requests() == requests, "no request for the cached API slot"
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    for col in ("embedding_fp32", "embedding_api"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist()


def test_a_failing_slot_stops_the_run_or_leaves_nulls(tmp_path: Path) -> None:
    src = corpus(tmp_path, 12)
    with ApiServer("openai", key=KEY, dim=8, model=API_MODEL, down="503") as down:
        import os

        os.environ["EG_COMPAT_KEY"] = KEY
        try:
            cfg = config(tmp_path / "c.toml", down, "[run]\nsort_window = 4\n")
            out = tmp_path / "out.parquet"
            result = runner.invoke(app, ["run", str(src), "-c", str(cfg), *slots("fast", "api"),
                                         "-o", str(out)])  # fmt: skip
            assert result.exit_code == 1, result.output
            assert not out.exists()
            assert "error: " in result.output
            result = runner.invoke(app, ["run", str(src), "-c", str(cfg), *slots("fast", "api"),
                                         "-o", str(out), "--allow-missing"])  # fmt: skip
            assert result.exit_code == 4, result.output
            assert "warning: slot api failed" in result.output
        finally:
            del os.environ["EG_COMPAT_KEY"]
    table = pq.read_table(out)
    assert table.column("embedding_api").null_count == table.num_rows
    assert table.column("embedding_fast").null_count == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "a=default", "--model", "a=default-original"], "slot 'a' is given twice"),
        (["--model", "a=default", "--model", "b=no-such-model"], "slot b: model 'no-such-model'"),
        (["--model", "a=default", "--model", "b=api", "--dimensions", "128", "--force"],
         "slot b: dimensions 128 does not match the 8-d"),
        (["--model", "a=default", "--model", "b=default", "--dimensions", "999", "--force"],
         "slot a: --dimensions 999"),
        (["--model", "a=default", "--model", "b=default", "--dimensions", "128"],
         "slot a: --dimensions 128: all-minilm-l6-v2-int8 was not trained for truncation"),
        (["--model", "a=default", "--model", "b=api", "--engine", "ray"], "local engine"),
    ],
)  # fmt: skip
def test_bad_slots_exit_2_before_any_request(
    tmp_path: Path, server: ApiServer, args: list[str], message: str
) -> None:
    src, cfg = corpus(tmp_path, 5), config(tmp_path / "c.toml", server)
    result = runner.invoke(app, ["run", str(src), "-c", str(cfg), *args, "-o",
                                 str(tmp_path / "o.parquet")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert server.records == []


def test_cost_estimate_prices_each_slot_and_the_total(tmp_path: Path, server: ApiServer) -> None:
    src = corpus(tmp_path, 20)
    cfg = config(tmp_path / "c.toml", server, "price_per_mtok = 100.0\n"
                 '[slots.fast]\nmodel = "default"\n[slots.api]\nproviders = ["api"]\n'
                 "max_cost_usd = 0.0001\n")  # fmt: skip
    result = runner.invoke(app, ["cost-estimate", str(src), "-c", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {r["slot"]: r for r in report["providers"]}
    assert set(rows) == {"fast", "api"} and rows["api"]["provider"] == "api"
    assert rows["fast"]["cost_usd"] == 0 and rows["api"]["cost_usd"] > 0
    assert report["total_cost_usd"] == pytest.approx(rows["api"]["cost_usd"])
    assert rows["api"]["fits_budget"] is False and "slot cap" in rows["api"]["budget_note"]
    # the chunks counted are the run's shared chunks: the same count for every slot
    assert rows["fast"]["chunks"] == rows["api"]["chunks"]
    uncapped = config(tmp_path / "u.toml", server, "price_per_mtok = 100.0\n")
    run_counts = run(src, "-c", uncapped, *slots("fast", "api"), "-o", tmp_path / "o.parquet")
    assert rows["fast"]["chunks"] == run_counts["fast"][1]


def test_a_slot_stops_at_its_own_cap(tmp_path: Path, server: ApiServer) -> None:
    src = corpus(tmp_path, 20)
    cfg = config(tmp_path / "c.toml", server, "price_per_mtok = 100.0\n"
                 '[slots.fast]\nmodel = "default"\n[slots.api]\nproviders = ["api"]\n'
                 "max_cost_usd = 0.0001\n")  # fmt: skip
    out = tmp_path / "o.parquet"
    result = runner.invoke(app, ["run", str(src), "-c", str(cfg), "-o", str(out)])
    assert result.exit_code == 3, result.output
    assert "slot api" in result.output and "cap" in result.output
