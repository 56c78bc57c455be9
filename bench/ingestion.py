"""Event ingestion throughput, end to end, against two baselines measured in the same run.

Runs against the running stack: start it with `make dev` (users must exist: run `make demo` first,
or the bench signs up bench users), then `.venv/bin/python bench/ingestion.py`.

  pipeline  N events POSTed to /api/events/batch (batches of 1000, several client threads) until
            all N documents are in MongoDB `events` (the stack's worker stores them);
  ceiling   pymongo insert_many of the same documents, in the form the worker stores them
            (event ids of their own), straight into the same MongoDB collection `events`, deleted
            again (untimed) after the last measurement: the store that the pipeline's worker
            does, and nothing else.
            Into `events` itself, not an empty scratch collection, because inserting into a
            collection of tens of thousands of documents is measurably slower than into an empty
            one, and the pipeline pays that too;
  naive     the same pipeline without batching: the stack's own worker fed one event per
            message (what EVENTS_CHUNK_SIZE=1 would publish), i.e. the same per-event work
            (idempotent insert, activity counters, cache versions, rescoring) done one event at a
            time, at the stack's worker concurrency. The bench publishes the messages itself, so
            the naive pipeline is spared the HTTP requests the batched one pays; measured on a
            smaller N, these events stay in `events` like the pipeline's.

Targets: pipeline >= 0.5x the ceiling and >= 10x the naive pipeline.
The events are page views / logins / searches / add-to-carts (no purchases, so the demo's sales
figures stay as they are) of 200 dedicated bench users (`bench.user.NNNN`, Tallinn, EE; signed up
through the API when missing), each with a unique `bench-<run>-<i>` event_id; they stay in `events`
like any other activity. Each phase starts on a quiet stack (the work queues empty, the analytics
backlog a pipeline phase leaves worked off). Pipeline and ceiling are measured in BENCH_ROUNDS
alternating rounds (ceiling first in even rounds, pipeline first in odd ones) over slices of the
events and summed, because the dev server's speed drifts over minutes.
Env: BENCH_EVENTS (default 20000), BENCH_ROUNDS (default 4), BENCH_NAIVE_EVENTS (default 2000),
BENCH_CLIENTS (default 4),
BENCH_ISOLATE=1 to also measure the pipeline with the analytics worker's consumer paused (Celery
remote control cancel_consumer/add_consumer; restored afterwards): ingestion without the profile
recomputations it triggers competing for MongoDB, i.e. where the time goes.
"""
from __future__ import annotations

import os
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from _common import (
    LINE,
    BenchError,
    bench_users,
    call,
    queue_depths,
    require_stack,
    run,
    session,
    verdict,
    wait_quiet,
    wait_until,
)
from celery import Celery  # noqa: E402

from shared.contracts.schemas import EventMessage  # noqa: E402
from shared.contracts.settings import get_settings  # noqa: E402
from shared.contracts.topology import STORE_EVENTS  # noqa: E402
from shared.infra.celery_app import create_celery_app  # noqa: E402
from shared.infra.mongo import EVENTS, get_database  # noqa: E402

BATCH = 1000
NAIVE_PUBLISHERS = 4  # publisher threads: publishing with confirms must not be what limits the naive run


# ----------------------------------------------------------------------------- helpers

def make_events(run_id: str, n: int, users: list[int], seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events = []
    for i in range(n):
        kind = rng.choices(["page_view", "login", "search", "add_to_cart"], [70, 10, 10, 10])[0]
        if kind == "add_to_cart":
            metadata = {"product_id": f"P-{rng.randint(1, 999)}", "category": rng.choice(["books", "home", "toys"]),
                        "price": round(rng.uniform(5, 300), 2)}
        elif kind == "search":
            metadata = {"q": rng.choice(["laptop", "novel", "jacket", "lamp"]), "bench_run": run_id}
        else:
            metadata = {"page": rng.choice(["/", "/catalog", "/cart", "/deals"]), "bench_run": run_id}
        events.append({
            "event_id": f"bench-{run_id}-{i}",
            "user_id": rng.choice(users),
            "event_type": kind,
            "timestamp": (now - timedelta(seconds=rng.randint(0, 86_400))).isoformat(),
            "metadata": metadata,
            "geo": {"country": "UA", "city": "Kyiv"},
        })
    return events


def stored_form(events: list[dict]) -> list[dict]:
    """The documents as the worker stores them (shared.contracts.schemas.EventMessage.document)."""
    received_at = datetime.now(UTC)
    return [EventMessage.model_validate({**e, "event_id": f"{e['event_id']}-ceiling"}).document(received_at)
            for e in events]


# ----------------------------------------------------------------------------- measurements

def measure_pipeline(db, events: list[dict], clients: int) -> tuple[float, float]:
    """(seconds until every 202, seconds until every document is in `events`).

    Completion is polled cheaply: the API publishes each batch in chunks of EVENTS_CHUNK_SIZE and
    the worker stores a chunk with one insert_many, so the first and last event_id of every chunk
    are looked up (the unique index on `(user_id, event_id)`) until all are there; then every id is
    verified once (untimed unless something is missing). Counting the collection instead costs seconds per poll on the
    dev server and would slow down what we measure.
    """
    events_collection = db[EVENTS]
    chunk = get_settings().events_chunk_size
    batches = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    sentinels = set()
    for batch in batches:
        for i in range(0, len(batch), chunk):
            part = batch[i:i + chunk]
            sentinels.update((_key(part[0]), _key(part[-1])))
    sessions = [session(2) for _ in range(clients)]

    def post(args):
        index, batch = args
        call("POST", "/api/events/batch", expect=(202,), json={"events": batch}, http=sessions[index % clients],
             timeout=120)

    pending = set(sentinels)

    def sentinels_stored() -> bool:
        pending.difference_update(_found(events_collection, pending))
        return not pending

    def all_stored() -> bool:
        return _stored(events_collection, [_key(e) for e in events]) == len(events)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, enumerate(batches)))
    accepted = time.perf_counter() - start
    wait_until(sentinels_stored, timeout=900, interval=0.05, what=f"{len(events)} events in MongoDB")
    stored = time.perf_counter() - start
    if not all_stored():
        wait_until(all_stored, timeout=600, interval=0.5, what=f"all {len(events)} events in MongoDB")
        stored = time.perf_counter() - start
    return accepted, stored


def _key(event: dict) -> tuple[int, str]:
    """An event's identity: `(user_id, event_id)` (shared.contracts.event_identity)."""
    return int(event["user_id"]), event["event_id"]


def _by_user(keys) -> dict[int, list[str]]:
    """Keys grouped by user: one query per user is an exact range of the unique index, where one
    query with `$in` on both fields or an `$or` of users takes the dev server seconds to tens of
    seconds (as in services.worker.storage.insert_events)."""
    grouped: dict[int, list[str]] = {}
    for user_id, event_id in keys:
        grouped.setdefault(user_id, []).append(event_id)
    return grouped


def _found(collection, keys) -> set[tuple[int, str]]:
    return {(user_id, d["event_id"])
            for user_id, ids in _by_user(keys).items()
            for d in collection.find({"user_id": user_id, "event_id": {"$in": ids}}, {"_id": 0, "event_id": 1})}


def _stored(collection, keys: list[tuple[int, str]]) -> int:
    return sum(len(_found(collection, keys[i:i + 1000])) for i in range(0, len(keys), 1000))


def measure_ceiling(db, events: list[dict], inserted: list[str]) -> float:
    """Seconds for one insert_many of the events' stored form. Their ids go to `inserted`: the
    caller deletes them after every measurement is done (a mass delete in between would change
    the server's state under the next measurement)."""
    events_collection = db[EVENTS]
    docs = stored_form(events)
    keys = [_key(d) for d in docs]
    inserted.extend(keys)
    start = time.perf_counter()
    events_collection.insert_many(docs, ordered=False)
    elapsed = time.perf_counter() - start
    if _stored(events_collection, keys) != len(docs):
        raise BenchError("ceiling: not every document was inserted")
    return elapsed


def delete_ceiling_documents(db, keys: list[tuple[int, str]]) -> None:
    for user_id, ids in _by_user(keys).items():
        db[EVENTS].delete_many({"user_id": user_id, "event_id": {"$in": ids}})


def measure_naive(db, events: list[dict]) -> float:
    """The stack's worker, one event per message. Done when the last events published are stored
    (the worker takes messages in order, a few at a time), then every one is verified."""
    events_collection = db[EVENTS]
    app = create_celery_app("bench-naive")
    keys = [_key(e) for e in events]
    tail = set(keys[-2 * NAIVE_PUBLISHERS * int(os.environ.get("WORKER_CONCURRENCY", 1)) - 8:])
    parts = [events[i::NAIVE_PUBLISHERS] for i in range(NAIVE_PUBLISHERS)]
    errors: list[BaseException] = []

    def publish(part: list[dict]) -> None:
        try:
            with app.producer_or_acquire() as producer:
                for event in part:
                    app.send_task(STORE_EVENTS, kwargs={"events": [event]}, producer=producer)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def tail_stored() -> bool:
        tail.difference_update(_found(events_collection, tail))
        return not tail

    start = time.perf_counter()
    threads = [threading.Thread(target=publish, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"naive: publishing failed: {errors[0]!r}")
    wait_until(tail_stored, timeout=900, interval=0.1, what="the naive pipeline")
    elapsed = time.perf_counter() - start
    if _stored(events_collection, keys) != len(keys):
        wait_until(lambda: _stored(events_collection, keys) == len(keys), timeout=600, interval=0.5,
                   what=f"all {len(keys)} naive events in MongoDB")
        elapsed = time.perf_counter() - start
    return elapsed


def measure_isolated(db, events: list[dict], clients: int) -> float:
    control = Celery(broker=get_settings().broker_url).control
    queue = f"{get_settings().queue_prefix}.analytics"
    nodes = [name for reply in control.ping(timeout=2) for name in reply if name.startswith("analytics-")]
    if not nodes:
        raise BenchError("BENCH_ISOLATE: no analytics worker answered the ping")
    control.cancel_consumer(queue, destination=nodes, reply=True)
    try:
        return measure_pipeline(db, events, clients)[1]
    finally:
        control.add_consumer(queue, destination=nodes, reply=True)


def main() -> None:
    require_stack()
    n = int(os.environ.get("BENCH_EVENTS", 20_000))
    n_naive = int(os.environ.get("BENCH_NAIVE_EVENTS", 2_000))
    clients = int(os.environ.get("BENCH_CLIENTS", 4))
    rounds = int(os.environ.get("BENCH_ROUNDS", 4))
    run_id = uuid.uuid4().hex[:8]
    db = get_database()
    users = bench_users(200)
    events = make_events(run_id, n, users)
    naive_events = make_events(run_id + "n", n_naive, users, seed=8)

    # Every phase on a quiet stack (wait_quiet: the analytics backlog a pipeline phase leaves is
    # worked off first). Pipeline and ceiling alternate over ROUNDS slices of the events, in
    # alternating order, and their times are summed: the dev MongoDB server's speed drifts by
    # +-50% over minutes, and one pipeline phase followed by one ceiling phase measured that
    # drift as much as the pipeline.
    waited = wait_quiet()
    naive_s = measure_naive(db, naive_events)
    slices = [events[i::rounds] for i in range(rounds)]
    ceiling_s = accepted_s = pipeline_s = 0.0
    ceiling_ids: list[tuple[int, str]] = []
    backlog = {}
    try:
        for index, part in enumerate(slices):
            for phase in (("ceiling", "pipeline") if index % 2 == 0 else ("pipeline", "ceiling")):
                waited += wait_quiet()
                if phase == "ceiling":
                    ceiling_s += measure_ceiling(db, part, ceiling_ids)
                else:
                    accepted, stored = measure_pipeline(db, part, clients)
                    accepted_s += accepted
                    pipeline_s += stored
                    backlog = queue_depths([f"{get_settings().queue_prefix}.analytics"])
    finally:
        delete_ceiling_documents(db, ceiling_ids)
    isolated_s = None
    if os.environ.get("BENCH_ISOLATE") == "1":
        waited += wait_quiet()
        isolated_s = measure_isolated(db, make_events(run_id + "i", n, users, seed=9), clients)

    pipeline_rate, ceiling_rate, naive_rate = n / pipeline_s, n / ceiling_s, n_naive / naive_s
    print(LINE)
    print(f"bench/ingestion.py — run {run_id}: {n} events in {rounds} alternating rounds of pipeline and ceiling "
          f"(batches of up to {BATCH}, {clients} client threads), {len(users)} bench users; "
          f"{waited:.0f}s spent waiting for a quiet stack")
    print(LINE)
    print(f"pipeline  POST /api/events/batch -> MongoDB events : {pipeline_s:7.2f} s  {pipeline_rate:10,.0f} events/s"
          f"   (all 202s after {accepted_s:.2f} s: {n / accepted_s:,.0f} events/s accepted)")
    print(f"ceiling   pymongo insert_many into events, same docs: {ceiling_s:7.2f} s  {ceiling_rate:10,.0f} events/s")
    print(f"naive     one Celery task per event ({n_naive} events)  : {naive_s:7.2f} s  {naive_rate:10,.0f} events/s"
          f"   (the stack's worker, one event per message)")
    print(f"pipeline / ceiling = {pipeline_rate / ceiling_rate:.2f}x   target >= 0.5x -> "
          f"{verdict(pipeline_rate / ceiling_rate >= 0.5)}")
    print(f"pipeline / naive   = {pipeline_rate / naive_rate:.1f}x   target >= 10x -> "
          f"{verdict(pipeline_rate / naive_rate >= 10)}")
    print(f"ceiling / naive    = {ceiling_rate / naive_rate:.1f}x   (the most any pipeline could reach against "
          f"the naive one on this MongoDB server)")
    print(f"analytics backlog left by the last pipeline round: {sum(backlog.values())} rescoring tasks queued")
    if isolated_s is not None:
        rate = n / isolated_s
        print(f"pipeline with the analytics consumer paused: {isolated_s:.2f} s  {rate:,.0f} events/s  "
              f"= {rate / ceiling_rate:.2f}x ceiling, {rate / naive_rate:.1f}x naive")


if __name__ == "__main__":
    run(main)
