"""Custom events' model and the tracking plan's decisions, without the stack."""
import time
from datetime import UTC, datetime

import pytest
from flask import Flask
from pydantic import ValidationError

from services.api import tracking_plan
from services.api.problems import ProblemError, error_field
from shared.contracts import event_identity
from shared.contracts.schemas import EventBatch, EventMessage, SingleEvent, StoreEventsMessage

SCHEMA = {"type": "object", "required": ["video_id"],
          "properties": {"video_id": {"type": "string"}, "seconds": {"type": "number", "minimum": 0},
                         "chapters": {"type": "array", "items": {"type": "integer"}}}}


def fields_of(body: dict) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        EventBatch.model_validate(body)
    return [error_field(e) for e in caught.value.errors()]


def event(event_type="video_played", metadata=None, **extra):
    return {"user_id": 1, "event_type": event_type, "metadata": metadata if metadata is not None else {}, **extra}


@pytest.mark.parametrize("name", ["a", "video_played", "x" * 64, "a1_b2"])
def test_any_name_of_the_pattern_is_a_custom_event(name):
    parsed = EventBatch.model_validate({"events": [event(name, {"a": {"b": [1, 2.5, None, True, "s"]}})]})
    assert type(parsed.events[0]).__name__ == "CustomEvent"


@pytest.mark.parametrize("name", ["A", "1a", "_a", "a-b", "x" * 65, "", "vidéo"])
def test_a_name_off_the_pattern_is_named(name):
    assert fields_of({"events": [event(name)]}) == ["events[0].event_type"]


def test_built_in_types_keep_their_strict_models():
    # A purchase with a custom event's freedom would be a custom event: it is not, its model decides.
    assert fields_of({"events": [event("user_purchase", {"price": "x"})]}) == [
        "events[0].metadata.product_id", "events[0].metadata.price", "events[0].metadata.category"]
    assert fields_of({"events": [event("page_view", {"a": {"b": 1}})]})[0] == "events[0].metadata.a"
    assert fields_of({"events": [{"user_id": 1}]}) == ["events[0].event_type"]


@pytest.mark.parametrize("metadata", [
    {"$where": 1}, {"a": {"$gt": 1}}, {"a.b": 1}, {"": 1}, {"k" * 65: 1}, {"a\x00": 1},
    {"a": {"b": {"c": {"d": {"e": {}}}}}}, {"a": [[[[[1]]]]]},
    {"n": 2**63}, {f"k{i}": i for i in range(51)}, {"s": "x" * 33_000}, {"a": [{"$set": 1}]},
    {"s": "\ud800"},
])
def test_metadata_no_store_should_hold_is_refused_naming_metadata(metadata):
    assert fields_of({"events": [event("x", metadata)]}) == ["events[0].metadata"]


def test_a_key_no_utf_8_can_carry_is_named_in_text_an_answer_can_carry():
    [field] = fields_of({"events": [event("x", {"\udfff": 1})]})
    assert field.startswith("events[0].metadata.")
    field.encode()  # no UnicodeEncodeError: the problem document can be written
    from services.api.problems import field_path
    assert field_path(("metadata", "\udfff")) == "metadata.\\udfff"


def test_the_deepest_metadata_allowed_is_five_levels():
    EventBatch.model_validate({"events": [event("x", {"a": {"b": {"c": {"d": {"e": 1}}}}})]})
    EventBatch.model_validate({"events": [event("x", {"a": [[[1]]], "n": -(2**63)})]})


def test_a_single_custom_event_is_the_same_union():
    assert type(SingleEvent.model_validate(event()).root).__name__ == "CustomEvent"


def test_violations_ride_the_message_only_when_there_are_some():
    received = datetime(2024, 1, 1, tzinfo=UTC)
    parsed = EventBatch.model_validate({"events": [event("x", {"a": 1})]}).events[0]
    plain = EventMessage.of(parsed, "e-1", received).model_dump(mode="json")
    assert "violations" not in plain
    flagged = {**EventMessage.wire(parsed, "e-1", received), "violations": ["metadata.a: bad"]}
    [back] = StoreEventsMessage.model_validate({"events": [flagged]}).events
    assert back.document(received)["violations"] == ["metadata.a: bad"]
    assert "violations" not in EventMessage.model_validate(plain).document(received)
    # Not part of the event's identity: the plan's verdict, not what the client said.
    assert event_identity.content(flagged) == event_identity.content(plain)


@pytest.mark.parametrize("schema, field", [
    ({"type": "nope"}, "schema.type"),
    ({"properties": {"a": {"maxLength": -1}}}, "schema.properties.a.maxLength"),
    ({"$schema": "http://json-schema.org/draft-07/schema#"}, "schema.$schema"),
    ({"$ref": "https://example.com/s.json"}, "schema"),
    ({"pattern": "(?<=a)b"}, "schema.pattern"),
    ({"pattern": "(a)\\1"}, "schema.pattern"),
    ([], "schema"),
    ({"pattern": "(a{1000}){1000}"}, "schema.pattern"),  # a pattern compiled to gigabytes
    ({"properties": {"a": {"const": "x\x00"}}}, "schema.properties.a.const"),
    ({"properties": {"a\ud800": {}}}, "schema.properties"),
])
def test_bad_schemas_name_where(schema, field):
    with pytest.raises(tracking_plan.SchemaProblem) as caught:
        tracking_plan.compile_schema(schema)
    assert caught.value.field == field


@pytest.mark.parametrize("pattern", ["^(a+)+$", "((((a*)*)*)*)*b", "^(a|aa)+$"])
def test_patterns_run_in_linear_time(pattern):
    validator = tracking_plan.compile_schema({"type": "string", "pattern": pattern})
    started = time.monotonic()
    assert not validator.is_valid("a" * 100_000 + "!")
    assert time.monotonic() - started < 1.0


def entry(on_violation="refuse", schema=SCHEMA, name="video_played") -> tracking_plan.PlanEntry:
    return tracking_plan.PlanEntry(name, schema, on_violation, 1, datetime.now(UTC),
                                   tracking_plan.compile_schema(schema))


@pytest.fixture()
def plan(monkeypatch):
    """The process's plan set by hand (never refreshed), and what would be recorded."""
    recorded: list = []
    monkeypatch.setattr(tracking_plan.PLAN, "entries", {})
    monkeypatch.setattr(tracking_plan.PLAN, "checked_at", float("inf"))
    monkeypatch.setattr(tracking_plan, "_record", recorded.extend)
    app = Flask(__name__)
    with app.test_request_context("/api/events/batch", method="POST"):
        yield tracking_plan.PLAN.entries, recorded


def messages(*metadatas, event_type="video_played"):
    return [{"event_id": f"e{i}", "user_id": 1, "event_type": event_type, "metadata": m}
            for i, m in enumerate(metadatas)]


def test_refuse_names_each_field_in_request_order(plan):
    entries, recorded = plan
    entries["video_played"] = entry("refuse")
    batch = messages({"video_id": "v"}, {"seconds": -1, "chapters": [1, "x"]})
    with pytest.raises(ProblemError) as caught:
        tracking_plan.check(batch, batch)
    assert caught.value.status == 422
    assert sorted(e.field for e in caught.value.errors or []) == [
        "events[1].metadata.chapters[1]", "events[1].metadata.seconds", "events[1].metadata.video_id"]
    assert sorted(r.reason for r in recorded) == [
        "metadata.chapters[*]: type", "metadata.seconds: minimum", "metadata.video_id: required"]
    assert {r.action for r in recorded} == {"refused"}
    assert "violations" not in batch[1]


def test_flag_marks_the_message_and_records(plan):
    entries, recorded = plan
    entries["video_played"] = entry("flag")
    batch = messages({"video_id": 5}, {"video_id": "ok"})
    tracking_plan.check(batch, batch)
    assert batch[0]["violations"] == ['metadata.video_id: 5 is not of type "string"']
    assert "violations" not in batch[1]
    assert [(r.reason, r.action, r.label, r.example["event_id"]) for r in recorded] == [
        ("metadata.video_id: type", "flagged", "video_played", "e0")]


@pytest.mark.parametrize("unplanned, outcome", [("accept", None), ("flag", "flagged"), ("refuse", "refused")])
def test_unplanned_types_follow_the_setting(plan, monkeypatch, unplanned, outcome):
    _, recorded = plan
    monkeypatch.setattr(tracking_plan.get_settings(), "tracking_plan_unplanned", unplanned)
    batch = messages({"anything": 1}, event_type="something_new")
    if outcome == "refused":
        with pytest.raises(ProblemError) as caught:
            tracking_plan.check(batch, batch)
        assert [e.field for e in caught.value.errors or []] == ["events[0].event_type"]
    else:
        tracking_plan.check(batch, batch)
    assert [(r.action, r.label) for r in recorded] == ([] if outcome is None else [(outcome, "(unplanned)")])
    assert ("violations" in batch[0]) == (outcome == "flagged")


def test_built_in_events_never_read_the_plan(plan, monkeypatch):
    monkeypatch.setattr(tracking_plan.PLAN, "current", lambda: pytest.fail("read the plan"))
    batch = messages({}, event_type="page_view")
    tracking_plan.check(batch, batch)


@pytest.mark.parametrize("schema", [{"$ref": "#"}, {"allOf": [{"$ref": "#"}]},
                                    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                                     "$ref": "#/$defs/a"}])
def test_a_schema_that_refers_to_itself_ends(schema):
    validator = tracking_plan.compile_schema(schema)
    assert list(validator.iter_errors({"a": {"b": {"c": {"d": {"e": 1}}}}})) == []


def test_built_in_entries_are_their_models_schemas():
    assert tracking_plan.BUILT_IN_SCHEMAS["user_purchase"]["required"] == ["product_id", "price", "category"]
    assert set(tracking_plan.BUILT_IN_SCHEMAS) == {"user_purchase", "add_to_cart", "page_view", "login", "logout",
                                                  "search"}


def test_a_refused_request_counts_no_flagged_event(plan):
    entries, recorded = plan
    entries["video_played"] = entry("refuse")
    entries["trial_started"] = entry("flag", name="trial_started")
    batch = messages({"video_id": 1}) + messages({"video_id": 2}, event_type="trial_started")
    batch[1]["event_id"] = "e1"
    with pytest.raises(ProblemError) as caught:
        tracking_plan.check(batch, batch)
    assert [e.field for e in caught.value.errors or []] == ["events[0].metadata.video_id"]
    assert [(r.event_type, r.action) for r in recorded] == [("video_played", "refused")]
