"""shared.pipeline.erasure: the erasure plan as values, and the invariants that make its order
right. Step 1 (`IN_POSTGRES`, one transaction) runs its parts in the order listed; step 2 deletes
from every MongoDB collection of `IN_MONGODB`, and an erasure's ledger row is closed only for users
none of those collections answers for (`closable`)."""
from __future__ import annotations

from shared.contracts.tables import Base
from shared.infra import mongo
from shared.pipeline import erasure
from shared.pipeline.erasure import IN_MONGODB, IN_POSTGRES, closable


def before(first: str, then: str) -> bool:
    return IN_POSTGRES.index(first) < IN_POSTGRES.index(then)


def test_step_one_runs_each_planned_part_once_and_nothing_else():
    assert len(IN_POSTGRES) == len(set(IN_POSTGRES))
    assert set(IN_POSTGRES) == set(erasure._IN_POSTGRES_STEPS)


def test_category_sales_are_reduced_before_the_user_row_takes_the_persons_categories():
    # The person's share is read from customer_categories, which the user row's deletion cascades away.
    assert before("category_sales", "user")


def test_outbox_messages_naming_the_person_go_before_the_erase_message_is_written():
    # The delete matches every message naming the user id; the user.erase message names it too.
    assert before("outbox_messages", "erase_message")


def test_person_events_are_deleted_once_the_visitors_ids_are_known():
    # person_events has no foreign key to cascade from: the user's rows and its visitors' (named by
    # the negative ids `_delete_visitors` reads as it deletes their rows) are deleted by id.
    assert before("visitors", "person_events")


def test_the_address_goes_after_the_user_row():
    # Only an address nobody lives at any more is deleted.
    assert before("user", "address")


def test_the_ledger_and_the_erase_message_commit_with_the_user_rows_deletion():
    # All in step 1's one transaction: no erasure without its ledger row and its message.
    assert {"user", "ledger", "erase_message"} <= set(IN_POSTGRES)


def test_every_table_of_a_person_goes_with_the_user_row_except_the_ledger():
    users = Base.metadata.tables["users"]
    for table in Base.metadata.sorted_tables:
        if "user_id" not in table.columns:
            continue
        to_users = [fk for fk in table.foreign_keys if fk.column.table is users]
        if table.name == "erasures":
            # The ledger outlives the user row: it is how an unfinished erasure is found again.
            assert to_users == [], "a cascade from users would delete the ledger with the person"
            continue
        assert [fk.ondelete for fk in to_users] == ["CASCADE"], table.name


def test_step_two_and_its_confirmation_cover_every_collection_of_a_person():
    person_collections = {mongo.EVENTS, mongo.PROFILES, mongo.WELCOME_EMAILS}
    assert {collection for collection, _ in IN_MONGODB} == person_collections
    # The others hold no person: the fitted models and the population's distributions.
    assert not {mongo.FITTED_MODELS, mongo.CUSTOMER_STATS} & {collection for collection, _ in IN_MONGODB}
    # Events name their person in a field; a profile and a welcome record are keyed by them.
    assert dict(IN_MONGODB) == {mongo.EVENTS: "user_id", mongo.PROFILES: "_id", mongo.WELCOME_EMAILS: "_id"}


def test_an_erasure_is_closed_only_when_nothing_of_the_person_is_left():
    assert closable([3, 1, 2], set()) == [1, 2, 3]
    assert closable([3, 1, 2], {2}) == [1, 3]
    assert closable([1, 2], {1, 2}) == []
    assert closable([], {5}) == []
    assert closable([4, 4, 1], {9}) == [1, 4]  # each once, whatever else is left
    # An erased user's visitors' events (not merged yet) are under the negatives of their ids.
    assert closable([1, 2], {-7}, {1: [7, 8], 2: [9]}) == [2]
    assert closable([1], {-9}, {1: [7]}) == [1]
