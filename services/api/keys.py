"""Key management (admin): create a key (shown once), list keys, revoke one."""
from datetime import UTC, datetime

from flask import Response, g
from flask_openapi3 import APIBlueprint, Tag
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from services.api import access
from services.api.problems import Problem, ProblemError
from shared.contracts.schemas import Printable
from shared.contracts.tables import ApiKey
from shared.infra import api_keys
from shared.infra.db import session_scope

keys_bp = APIBlueprint("keys", __name__, url_prefix="/api/keys", abp_tags=[Tag(name="keys")])


class KeyRequest(BaseModel):
    scopes: list[api_keys.Scope] = Field(min_length=1, max_length=len(api_keys.SCOPES),
                                         description="Any of ingest, read, admin, personal (see docs/keys.md)")
    name: Printable = Field("", max_length=100, description="What the key is for")
    expires_at: AwareDatetime | None = Field(None, description="When the key stops working (ISO 8601 with an offset)")

    @field_validator("expires_at")
    @classmethod
    def _in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return value


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    status: str = Field(description="active, expired or revoked")

    @classmethod
    def of(cls, row: ApiKey) -> "KeyOut":
        return cls(id=row.id, name=row.name, scopes=row.scopes, created_at=row.created_at,
                   expires_at=row.expires_at, revoked_at=row.revoked_at, status=api_keys.status(row))


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash")


class KeyList(BaseModel):
    items: list[KeyOut]


class KeyPath(BaseModel):
    key_id: str = Field(pattern=r"^[0-9a-f]{12}$")


@keys_bp.post("", summary="Create an API key (admin); the answer is the only time the key is shown",
              responses={201: KeyCreated, 422: Problem})
def create_key(body: KeyRequest):
    with session_scope() as session:
        row, key = api_keys.create(session, body.scopes, body.name, body.expires_at)
        session.refresh(row)
        created = KeyCreated(**KeyOut.of(row).model_dump(), key=key)
    return created.model_dump(mode="json"), 201, {"Location": f"/api/keys/{created.id}", "Cache-Control": "no-store"}


@keys_bp.get("", summary="Every API key with its scopes and status (never the keys themselves)",
             responses={200: KeyList})
def list_keys():
    with session_scope() as session:
        items = [KeyOut.of(row) for row in api_keys.list_keys(session)]
    return KeyList(items=items).model_dump(mode="json")


@keys_bp.delete("/<key_id>", summary="Revoke an API key (admin); revoking it again changes nothing",
                description="Not the key the request is made with (409): a caller cannot lock itself out by "
                "accident; revoke it with another admin key or `pulse keys revoke <id>`.",
                responses={204: None, 404: Problem, 409: Problem})
def revoke_key(path: KeyPath):
    if g.principal is not None and g.principal.key_id == path.key_id:
        raise ProblemError(409, "This request is made with that key: revoke it with another admin key, or with "
                           "`pulse keys revoke`")
    with session_scope() as session:
        if not api_keys.revoke(session, path.key_id):
            raise ProblemError(404, f"No API key with id {path.key_id}")
    access.forget(path.key_id)
    # Committed: now every other API process is told (it re-checks every key on its next request).
    api_keys.announce_revocation(path.key_id)
    return Response(status=204)
