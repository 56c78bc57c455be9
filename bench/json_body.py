"""What the request-body parser's limits cost (services/api/json_body.py), in process, no stack.

Every JSON body is read by LimitedJSONProvider: a depth check over the raw bytes, then the
standard parser without NaN/Infinity. Measured here on the bodies the benchmarks send most: a
batch of 1,000 events as bench/ingestion.py builds them (~190 kB), and a signup. Baseline, in the
same run: `json.loads` of the same bytes (what Flask's default provider did). The ingestion
request also validates every event with pydantic and publishes to RabbitMQ, so the share of a
whole request is smaller than the share of parsing printed here.

Env: BENCH_REPEAT (default 300 parses of each body per round), BENCH_ROUNDS (default 5; the best
round is kept, as the machine's load drifts).
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flask import Flask  # noqa: E402
from ingestion import make_events  # noqa: E402

from services.api.json_body import LimitedJSONProvider  # noqa: E402

LINE = "=" * 78


def timed(parse, body: bytes, repeat: int) -> float:
    # Without the collector: a collection triggered by one parser's garbage would be charged to
    # whichever parser happened to run next.
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(repeat):
            parse(body)
        return (time.perf_counter() - started) / repeat * 1e6
    finally:
        gc.enable()


def best_of(parsers: list, body: bytes, repeat: int, rounds: int) -> list[float]:
    """Best-of-rounds microseconds per parse of each parser, the parsers alternating within each
    round so that the machine's drift falls on both alike."""
    best = [float("inf")] * len(parsers)
    for _ in range(rounds):
        for i, parse in enumerate(parsers):
            best[i] = min(best[i], timed(parse, body, repeat))
    return best


def main() -> None:
    repeat = int(os.environ.get("BENCH_REPEAT", 300))
    rounds = int(os.environ.get("BENCH_ROUNDS", 5))
    provider = LimitedJSONProvider(Flask(__name__))
    batch = json.dumps({"events": make_events(uuid.uuid4().hex[:8], 1000, list(range(1, 101)))}).encode()
    signup = json.dumps({"username": "ivan_data", "email": "ivan.data@example.com", "full_name": "Ivan Ivanov",
                         "address": {"street": "Khreschatyk Street", "city": "Kyiv", "country_code": "UA"}}).encode()
    print(LINE)
    print("bench/json_body.py — the body parser's limits vs json.loads, in process")
    print(LINE)
    for name, body in (("batch of 1,000 events", batch), ("signup", signup)):
        assert provider.loads(body) == json.loads(body)
        plain, limited = best_of([json.loads, provider.loads], body, repeat, rounds)
        print(f"{name:22} {len(body):>8,} bytes: json.loads {plain:9.1f} µs, limited {limited:9.1f} µs "
              f"({limited / plain:.2f}x, +{limited - plain:.1f} µs)")


if __name__ == "__main__":
    main()
