"""shared.pipeline.visitors and services.worker.merge: which person each event of a batch is stored
under, which links a batch makes, and the merge's copies and page ids (pure decisions)."""
from datetime import UTC, datetime

from services.worker.merge import batch_id, copies
from shared.contracts import event_identity
from shared.pipeline.visitors import VisitorRow, plan_links, resolve

AT = datetime(2026, 1, 1, tzinfo=UTC)


def doc(event_id: str, user_id: int | None = None, anonymous_id: str | None = None) -> dict:
    d = {"event_id": event_id, "user_id": user_id, "event_type": "page_view", "timestamp": AT, "metadata": {}}
    if anonymous_id is not None:
        d["anonymous_id"] = anonymous_id
    return d


def test_an_unlinked_visitors_event_is_stored_under_the_negative_visitor_id():
    [stored] = resolve([doc("e", anonymous_id="a")], {"a": VisitorRow(7, None)})
    assert stored["user_id"] == -7 and stored["anonymous_id"] == "a"


def test_a_linked_visitors_event_is_the_users_and_keeps_its_anonymous_id():
    [stored] = resolve([doc("e", anonymous_id="a")], {"a": VisitorRow(7, 42)})
    assert stored["user_id"] == 42 and stored["anonymous_id"] == "a"


def test_an_event_with_a_user_id_is_that_users_whatever_its_visitor_is_linked_to():
    [stored] = resolve([doc("e", user_id=5, anonymous_id="a")], {"a": VisitorRow(7, 42)})
    assert stored["user_id"] == 5


def test_two_visitors_using_one_event_id_are_two_events():
    rows = {"a": VisitorRow(1, None), "b": VisitorRow(2, None)}
    stored = resolve([doc("same", anonymous_id="a"), doc("same", anonymous_id="b")], rows)
    assert len({event_identity.key(d) for d in stored}) == 2
    # Before resolution too (the API's collapse of one request).
    assert len({event_identity.key(d) for d in [doc("same", anonymous_id="a"), doc("same", anonymous_id="b")]}) == 2
    assert event_identity.key(doc("x", anonymous_id="7")) != event_identity.key(doc("x", user_id=7))


def test_an_event_with_both_ids_links_an_unlinked_visitor_and_the_first_claim_wins():
    rows = {"a": VisitorRow(1, None), "b": VisitorRow(2, 9), "c": VisitorRow(3, None)}
    batch = [doc("1", user_id=5, anonymous_id="a"), doc("2", user_id=6, anonymous_id="a"),
             doc("3", user_id=5, anonymous_id="b"), doc("4", anonymous_id="c")]
    assert plan_links(batch, rows) == {"a": 5}


def test_the_anonymous_events_of_a_batch_follow_the_link_the_batch_made():
    rows = {"a": VisitorRow(1, None)}
    batch = [doc("1", anonymous_id="a"), doc("2", user_id=5, anonymous_id="a")]
    links = plan_links(batch, rows)
    linked = {a: VisitorRow(rows[a].id, u) for a, u in links.items()}
    assert [d["user_id"] for d in resolve(batch, {**rows, **linked})] == [5, 5]


def test_merge_copies_change_the_person_only_and_page_ids_name_the_first_event():
    page = [{"_id": "x", "batch_id": "b1", **doc("e1", user_id=-3, anonymous_id="a")},
            {"_id": "y", "batch_id": "b1", **doc("e2", user_id=-3, anonymous_id="a")}]
    made = copies(page, 42)
    assert [c["user_id"] for c in made] == [42, 42]
    assert all("_id" not in c and "batch_id" not in c and c["anonymous_id"] == "a" for c in made)
    assert batch_id(3, page) == "merge:3:e1"
    # A copy is the event the user would have sent: the same content but for the person.
    assert event_identity.content(made[0]) == event_identity.content({**doc("e1", user_id=42)})


def test_the_clock_correction_does_not_change_what_identifies_a_retry():
    stated = doc("e", user_id=1)
    first = {**stated, "timestamp": datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC), "original_timestamp": AT}
    retry = {**stated, "timestamp": datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC), "original_timestamp": AT}
    assert event_identity.content(first) == event_identity.content(retry)
