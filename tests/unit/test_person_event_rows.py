"""shared.pipeline.person_events: which metadata a person_events row keeps (what a funnel step's
`where` matches by jsonb equality), and the row derived from a stored document."""
import json
import math
from datetime import UTC, datetime

from bson import Int64

from shared.pipeline.person_events import MAX_PROPERTY_CHARS, properties, row


def test_scalars_are_kept_with_their_json_types():
    kept = properties({"plan": "pro", "seats": 3, "ratio": 0.25, "annual": True, "trial": False, "big": Int64(2**40)})
    assert kept == {"plan": "pro", "seats": 3, "ratio": 0.25, "annual": True, "trial": False, "big": 2**40}
    # A bool is not an int here: true stays true (jsonb `{"annual": true}` does not contain `{"annual": 1}`).
    encoded = json.loads(json.dumps(kept))
    assert encoded["annual"] is True and encoded["trial"] is False
    assert type(encoded["seats"]) is int and type(encoded["big"]) is int


def test_nested_values_nulls_and_long_strings_are_left_out():
    metadata = {"nested": {"a": 1}, "list": [1, 2], "none": None, "long": "x" * (MAX_PROPERTY_CHARS + 1),
                "edge": "y" * MAX_PROPERTY_CHARS, "when": datetime(2026, 1, 1, tzinfo=UTC)}
    assert properties(metadata) == {"edge": "y" * MAX_PROPERTY_CHARS}


def test_what_jsonb_cannot_hold_is_left_out_not_an_error():
    # NaN and infinities are not JSON; jsonb cannot store U+0000 (custom metadata values may hold it).
    assert properties({"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "nul": "a\x00b", "ok": "a"}) == {"ok": "a"}


def test_no_metadata_is_no_properties():
    assert properties(None) == {} and properties({}) == {}


def test_a_row_is_the_documents_person_id_type_instant_and_properties():
    # As MongoDB hands a document back: a naive UTC datetime, cut to milliseconds.
    doc = {"user_id": -42, "event_id": "e1", "event_type": "page_view",
           "timestamp": datetime(2026, 3, 2, 9, 0, 0, 123456), "metadata": {"page": "/pricing", "deep": {"a": 1}}}
    person_id, event_id, event_type, at, props = row(doc)
    assert (person_id, event_id, event_type) == (-42, "e1", "page_view")
    assert at == datetime(2026, 3, 2, 9, 0, 0, 123000, tzinfo=UTC)
    assert json.loads(props) == {"page": "/pricing"}
    assert row({**doc, "metadata": None})[4] == "{}"


def test_a_data_version_bump_redis_refuses_is_logged_and_counted_not_raised(monkeypatch):
    # After a commit the change is done: a Redis outage must not raise into a task retry that re-runs
    # the batch's side effects. A real refused connection (nothing listens on port 1), not a mock.
    import socket

    from shared.contracts.settings import get_settings
    from shared.infra.cache import get_redis
    from shared.pipeline import data_version

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 1)) != 0  # nothing listens there
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    get_redis.cache_clear()
    try:
        before = data_version.failed_bumps
        assert data_version.changed("test") is None
        assert data_version.failed_bumps == before + 1
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        get_redis.cache_clear()
