"""An identified visitor's stored events become the user's, exactly once (MERGE_VISITOR).

The link commits with an outbox row (shared.pipeline.visitors); the relay publishes this task. It
takes the visitor's negative-id documents (`user_id = -visitor_id`) a page at a time, in
`event_id` order, through the unique index `(user_id, event_id)`: its cost is that visitor's
events, never the population's. For each page it stores the user's copies (`user_id` = the user,
`anonymous_id` kept) through the one storage path, `store_batch`, under the batch id
`merge:{visitor_id}:{first event_id of the page}`, and only once that batch's summaries have
committed does it delete the page's negative-id documents.

Why each event is counted exactly once, whatever is redelivered or killed:

- No page changes under the merge. Once the link commits, no batch stores a negative-id document
  of this visitor (a batch holds the visitor's row FOR SHARE from before its insert to its commit,
  and the link's UPDATE waited for those; later batches read the link and store as the user). So
  the documents still under `-visitor_id` only ever shrink, by this task's deletions.
- A page's documents are deleted only after its copies were applied. So on a redelivery the first
  page left is either a page never applied (its copies are new, or were stored by an earlier
  attempt of this same page: same batch id and content, which `insert_events` counts as the
  batch's own, once, and the batch-id ledger applies it once), or the rest of a page whose
  deletion was cut short: those copies are stored under the earlier page's batch id, so the new
  page's batch finds them "theirs" and counts nothing for them; they were counted when that
  page's batch applied.
- A copy that collides with an event the user already has (the same `event_id`, sent with the
  `user_id`) is a duplicate, not counted: exactly as if the visitor's event had carried the
  `user_id` from the start (first copy wins).
- A batch that stored a visitor's event under `-visitor_id`, died before committing and is
  redelivered after the link, stores it as the user's: the merge then finds the copy stored by
  that batch and counts nothing for it (or, if the merge came first, the batch does).

`person_events` (shared.pipeline.person_events) holds one row per stored event under its person.
The first page's batch moves EVERY row of the visitor to the user (`moved_from`), in the
transaction that inserts the user's rows of its copies: a page at a time, a funnel asked between two
pages would count the visitor and the user as two persons. So no committed state counts the person
twice or loses an event:

- Killed before that commit: nothing changed in Postgres; the redelivery does it all.
- Killed after it: the visitor has no rows left (none are added under its id once linked), so the
  redelivery's and the later pages' moves move nothing, and their copies' rows exist already
  (insert ON CONFLICT DO NOTHING).
- An event the user already has (the same `event_id`, sent with the `user_id`) keeps its one row,
  the user's; the visitor's row of it goes, as its document does.
- The user erased meanwhile: the move adds no row (only to a user whose `users` row exists) and the
  erasure deletes the visitor's rows with the user's (shared.pipeline.erasure).
- Until the pages' documents are moved too, `summaries rebuild --check` reads those events under
  the visitor in MongoDB and under the user in `person_events`: run it on a quiet stack, as it says.

Lock order: the batch takes the user's row FOR KEY SHARE before touching `person_events`, and an
erasure takes it FOR UPDATE before deleting the person's rows, so the two run one after the other.
"""
from collections.abc import Callable
from typing import Any

from pymongo.database import Database

from services.worker.storage import store_batch
from shared.infra.mongo import EVENTS, Document

MERGE_PAGE = 1000

# What a stored document carries that its copy must not: MongoDB's id, and the batch that stored it.
_NOT_COPIED = ("_id", "batch_id")


def copies(page: list[dict[str, Any]], user_id: int) -> list[dict[str, Any]]:
    """The user's copies of a visitor's documents: the person changes, nothing else does."""
    return [{**{k: v for k, v in doc.items() if k not in _NOT_COPIED}, "user_id": user_id} for doc in page]


def batch_id(visitor_id: int, page: list[dict[str, Any]]) -> str:
    return f"merge:{visitor_id}:{page[0]['event_id']}"


def merge_visitor(db: Database[Document], visitor_id: int, user_id: int, schedule_rescore: Callable[[float], None],
                  page_size: int = MERGE_PAGE) -> dict[str, int]:
    """Move every negative-id document of the visitor to the user. Idempotent (see the module)."""
    moved = pages = counted = 0
    while True:
        page = list(db[EVENTS].find({"user_id": -visitor_id}).sort("event_id", 1).limit(page_size))
        if not page:
            break
        # Not an ingestion: the visitor's events were counted as stored, and their lag observed,
        # when they arrived; their copies count in the summaries only.
        stored = store_batch(db, batch_id(visitor_id, page), copies(page, user_id), schedule_rescore,
                             resolve_visitors=False, ingested=False, moved_from=-visitor_id)
        if stored.gone:
            # The user was erased meanwhile: store_batch deleted the copies; the visitor's own
            # documents go too (the erasure's message names the visitor as well).
            db[EVENTS].delete_many({"user_id": -visitor_id})
            return {"moved": moved, "pages": pages, "erased": 1}
        db[EVENTS].delete_many({"user_id": -visitor_id, "event_id": {"$in": [doc["event_id"] for doc in page]}})
        moved += len(page)
        counted += stored.inserted
        pages += 1
    return {"moved": moved, "pages": pages, "inserted": counted}
