"""services.worker.storage.owned: which of a batch's events count for it once the unique index
`(user_id, event_id)` has refused some of them. The worker owns a refused (duplicate) event only
when the stored document carries this batch's id AND the same identity and content; every other
duplicate is someone else's and is counted by no one here.

`deliver` plays MongoDB's part (a dict keyed as the unique index is) around the worker's own
steps: stamp the batch id, collapse copies within the batch (shared.contracts.event_identity),
insert, then ask the pure decision."""
from __future__ import annotations

import copy
from datetime import UTC, datetime

from services.worker.storage import Ownership, owned
from shared.contracts import event_identity


def event(user_id: int, event_id: str, amount: float = 10.0, at: str = "2026-03-01T10:00:00+00:00") -> dict:
    return {"user_id": user_id, "event_id": event_id, "event_type": "user_purchase", "timestamp": at,
            "metadata": {"amount": amount, "category": "books"}, "geo": None}


def as_stored(doc: dict) -> dict:
    """The document as MongoDB gives it back: the instant a datetime at millisecond precision."""
    stored = copy.deepcopy(doc)
    moment = datetime.fromisoformat(doc["timestamp"]).astimezone(UTC)
    stored["timestamp"] = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return stored


def deliver(index: dict, docs: list[dict], batch_id: str) -> Ownership:
    docs = [dict(doc, batch_id=batch_id) for doc in docs]
    unique, _, _ = event_identity.collapse(docs)
    duplicates = {i for i, doc in enumerate(unique) if event_identity.key(doc) in index}
    for i, doc in enumerate(unique):
        if i not in duplicates:
            index[event_identity.key(doc)] = as_stored(doc)
    stored = {event_identity.key(unique[i]): index[event_identity.key(unique[i])] for i in duplicates}
    return owned(unique, duplicates, stored, batch_id)


def keys(docs: list[dict]) -> list[tuple[int, str]]:
    return [event_identity.key(doc) for doc in docs]


def test_a_new_batch_is_all_new():
    index: dict = {}
    got = deliver(index, [event(1, "a"), event(2, "a"), event(1, "b")], "batch-1")
    assert keys(got.new) == [(1, "a"), (2, "a"), (1, "b")] and got.ours == [] and got.theirs == []


def test_a_redelivery_of_the_same_batch_owns_what_it_stored_before():
    index: dict = {}
    batch = [event(1, "a"), event(2, "a", 99.5), event(1, "b")]
    deliver(index, batch, "batch-1")
    again = deliver(index, batch, "batch-1")
    assert again.new == [] and keys(again.ours) == keys(batch) and again.theirs == []


def test_a_redelivery_after_a_partial_insert_owns_the_stored_part_and_inserts_the_rest():
    # A killed attempt stored the first two events only.
    index: dict = {}
    batch = [event(1, "a"), event(1, "b"), event(1, "c"), event(2, "a")]
    deliver(index, batch[:2], "batch-1")
    again = deliver(index, batch, "batch-1")
    assert keys(again.new) == [(1, "c"), (2, "a")]
    assert keys(again.ours) == [(1, "a"), (1, "b")] and again.theirs == []
    # What counts for the batch is then exactly the batch, each event once.
    assert sorted(keys(again.new + again.ours)) == sorted(keys(batch))


def test_another_batch_with_the_same_identity_and_content_owns_nothing_of_it():
    index: dict = {}
    deliver(index, [event(1, "a")], "batch-1")
    other = deliver(index, [event(1, "a"), event(1, "z")], "batch-2")
    assert keys(other.new) == [(1, "z")] and other.ours == [] and keys(other.theirs) == [(1, "a")]


def test_the_same_identity_with_other_content_is_not_owned_even_under_the_same_batch_id():
    index: dict = {}
    deliver(index, [event(1, "a", 10.0)], "batch-1")
    for changed in (event(1, "a", 11.0), event(1, "a", at="2026-03-01T10:00:01+00:00"),
                    dict(event(1, "a"), event_type="page_view"), dict(event(1, "a"), geo={"country": "UA"})):
        got = deliver(index, [changed], "batch-1")
        assert got.new == [] and got.ours == [] and keys(got.theirs) == [(1, "a")], changed


def test_the_same_event_id_of_another_user_is_another_event():
    index: dict = {}
    deliver(index, [event(1, "order-42")], "batch-1")
    got = deliver(index, [event(2, "order-42")], "batch-2")
    assert keys(got.new) == [(2, "order-42")] and got.ours == [] and got.theirs == []


def test_copies_within_a_batch_count_once_however_often_it_is_delivered():
    index: dict = {}
    purchase = event(1, "p", 25.0)
    batch = [purchase] * 1000 + [event(1, "q")]
    first = deliver(index, batch, "batch-1")
    assert keys(first.new) == [(1, "p"), (1, "q")] and first.ours == [] and first.theirs == []
    again = deliver(index, batch, "batch-1")
    # One stored document per key: the 1,000 copies are owned once, not 1,000 times.
    assert again.new == [] and keys(again.ours) == [(1, "p"), (1, "q")] and again.theirs == []


def test_a_conflicting_copy_within_a_batch_loses_to_the_first():
    index: dict = {}
    batch = [event(1, "p", 25.0), event(1, "p", 999.0)]
    first = deliver(index, batch, "batch-1")
    assert [d["metadata"]["amount"] for d in first.new] == [25.0]
    again = deliver(index, batch, "batch-1")
    assert [d["metadata"]["amount"] for d in again.ours] == [25.0] and again.theirs == []


def test_a_duplicate_whose_document_is_gone_is_not_owned():
    # Refused by the index, then deleted (an erasure) before the worker read it back.
    doc = dict(event(1, "a"), batch_id="batch-1")
    got = owned([doc], {0}, {}, "batch-1")
    assert got == Ownership([], [], [doc])


def test_a_stored_document_without_a_batch_id_is_not_owned():
    # Stored before batches were stamped (or by the backfill under another id): not this batch's.
    doc = dict(event(1, "a"), batch_id="batch-1")
    stored = as_stored(event(1, "a"))
    assert owned([doc], {0}, {(1, "a"): stored}, "batch-1") == Ownership([], [], [doc])
    assert owned([doc], {0}, {(1, "a"): dict(stored, batch_id="batch-1")}, "batch-1") == Ownership([], [doc], [])


def test_every_event_is_in_exactly_one_class_and_keeps_its_order():
    index: dict = {}
    deliver(index, [event(1, "mine"), event(1, "mine2")], "batch-1")
    deliver(index, [event(1, "other")], "batch-2")
    deliver(index, [event(1, "changed", 1.0)], "batch-1")
    batch = [event(1, "new1"), event(1, "mine"), event(1, "other"), event(1, "changed", 2.0), event(1, "new2"),
             event(1, "mine2")]
    got = deliver(index, batch, "batch-1")
    assert keys(got.new) == [(1, "new1"), (1, "new2")]
    assert keys(got.ours) == [(1, "mine"), (1, "mine2")]
    assert keys(got.theirs) == [(1, "other"), (1, "changed")]
