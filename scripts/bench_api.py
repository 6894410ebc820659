"""How close to a rate limit does the API provider run? (not a test: prints a report)

Starts a loopback OpenAI-protocol server that allows R requests/min and T tokens/min
(a token bucket with one second of burst, answering 429 with retry-after-ms past
them, and sending x-ratelimit-* headers), embeds batches through the real provider
with ``max_concurrency`` workers, and reports the sustained rate of successful
requests against the bound ``min(R, T / tokens_per_request)``. Target: >= 0.85.

Scenarios: the client configured with the account's limits (``rpm``/``tpm``), and the
client configured with none, learning them from headers and 429s.

    python scripts/bench_api.py                # ~100 s
    python scripts/bench_api.py --seconds 20   # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedgen.config import OpenAIConfig  # noqa: E402
from embedgen.providers.api_factory import build_api_provider  # noqa: E402
from embedgen.providers.base import Batch  # noqa: E402
from embedgen.router import Member, Router  # noqa: E402
from embedgen.router.build import reliability  # noqa: E402
from tests.api_servers import ApiServer  # noqa: E402

KEY = "sk-bench-0123456789abcdef"


def scenario(
    label: str, *, rpm: int, tpm: int, configure: bool, seconds: float, workers: int
) -> float:
    with ApiServer("openai", key=KEY, rpm=rpm, tpm=tpm, rate_headers=True) as server:
        cfg = OpenAIConfig(
            base_url=server.url + "/v1",
            dimensions=8,
            max_concurrency=workers,
            rpm=rpm if configure else None,
            tpm=tpm if configure else None,
            max_retries=50,
            backoff_base=0.05,
            backoff_max=2.0,
            failure_threshold=1000,
        )
        member = Member(build_api_provider("bench", cfg), reliability(cfg))
        p = Router([member])
        tok = p.tokenizer()

        def make(i: int) -> Batch:
            texts = [f"benchmark request {i} text {j} with a few more words" for j in range(10)]
            counts = [len(ids) for ids, _ in tok.encode_offsets(texts)]
            return Batch(texts, counts)

        per_request = make(0).tokens
        bound = min(rpm / 60.0, tpm / 60.0 / per_request)
        deadline = time.monotonic() + seconds
        t0 = time.monotonic()

        def work(i: int) -> None:
            if time.monotonic() < deadline:
                p.embed(make(i))

        n_jobs = int(bound * seconds * 1.5) + workers * 4
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(n_jobs)))
        elapsed = time.monotonic() - t0
        ok = [r.at for r in server.records if r.status == 200]
        limited = sum(1 for r in server.records if r.status == 429)
        # Steady state: skip the first 2 s, which the server's one-second burst inflates.
        start = min(ok) + 2.0
        steady = [t for t in ok if t >= start]
        span = max(steady) - start if len(steady) > 1 else 0.0
        rate = len(steady) / span if span else 0.0
        ratio = rate / bound
        s = member.stats()
        print(
            f"{label:<38} bound {bound * 60:7.1f} req/min ({per_request} tok/req)  "
            f"sustained {rate * 60:7.1f} req/min  ratio {ratio:5.2f}  "
            f"429s {limited:3d}  retries {s.retries:3d}  {elapsed:5.1f}s",
            flush=True,
        )
        p.close()
        return ratio


def run(seconds: float = 25.0, workers: int = 8) -> float:
    """Run the four scenarios, print a line each, and return the worst ratio."""
    os.environ["OPENAI_API_KEY"] = KEY
    runs = [
        ("token-bound, limits configured", 1200, 60_000, True),
        ("request-bound, limits configured", 600, 1_000_000, True),
        ("token-bound, limits from headers", 1200, 60_000, False),
        ("request-bound, limits from headers", 600, 1_000_000, False),
    ]
    ratios = [
        scenario(label, rpm=r, tpm=t, configure=c, seconds=seconds, workers=workers)
        for label, r, t, c in runs
    ]
    worst = min(ratios)
    print(f"worst ratio {worst:.2f} (target >= 0.85): {'ok' if worst >= 0.85 else 'BELOW TARGET'}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=25.0, help="per scenario (4 scenarios)")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    run(args.seconds, args.workers)


if __name__ == "__main__":
    main()
