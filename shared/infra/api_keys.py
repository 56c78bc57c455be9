"""API keys: who may do what.

A key is ``pulse_<id>_<secret>``: the id (12 hex digits) is public, named in listings, logs and
`DELETE /api/keys/<id>`; the secret is 256 random bits. Only the SHA-256 of the whole key is
stored, and the key is shown once, when it is created. A fast hash is the right one here: a slow
password hash protects guessable secrets, and nobody guesses 256 random bits.

Scopes (independent: admin does not imply read):

* ``ingest``: post events;
* ``read``: users, profiles and the analytics reads;
* ``admin``: model fits, cache statistics, erasure and export of a person's data, key management.
  Requests with an admin key are not rate limited.
* ``personal``: who people are. Without it every answer shows people pseudonymously (by id, with
  city, country, dates and analytics); with it the username, e-mail, full name and street are
  there too (shared.contracts.personal). An export, being all of a person's data, needs admin and personal.

`pulse keys create --scope read --scope ingest [--name N] [--expires-at ISO]`,
`list`, `revoke <id>`, and `dev <file>`: the development key of `make dev` (every scope, written
to a file only its owner can read, created when the file does not hold a working key).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from redis import RedisError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.contracts.tables import ApiKey
from shared.infra.cache import get_redis
from shared.infra.cache import key as cache_key

Scope = Literal["ingest", "read", "admin", "personal"]
SCOPES: tuple[str, ...] = get_args(Scope)
INGEST, READ, ADMIN, PERSONAL = SCOPES
KEY_FORMAT = re.compile(r"pulse_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# The Redis key (under CACHE_PREFIX) whose value changes with every revocation.
REVOCATIONS = ("keys", "revocations")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """A checked key, as a request sees it."""

    key_id: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked: bool

    def usable(self, now: datetime | None = None) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > (now or datetime.now(UTC)))

    @property
    def unlimited(self) -> bool:
        return ADMIN in self.scopes


def status(row: ApiKey, now: datetime | None = None) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


def create(
    session: Session, scopes: Collection[str], name: str = "", expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key: (its row, the key itself, which exists nowhere else)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    key_id = secrets.token_hex(6)
    key = f"pulse_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(id=key_id, name=name, scopes=sorted(set(scopes), key=SCOPES.index), secret_hash=digest(key),
                 expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, key


def lookup(session: Session, key: str) -> Principal | None:
    """The key's principal (revoked and expired ones too: the caller says which answer fits), or
    None when no such key exists."""
    match = KEY_FORMAT.fullmatch(key)
    if match is None:
        return None
    row = session.get(ApiKey, match.group(1))
    if row is None or not hmac.compare_digest(row.secret_hash, digest(key)):
        return None
    return Principal(row.id, frozenset(row.scopes), row.expires_at, row.revoked_at is not None)


def lookup_id(session: Session, key_id: str) -> Principal | None:
    """The principal of the key with this id (a dashboard session knows the id, not the key)."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    return Principal(row.id, frozenset(row.scopes), row.expires_at, row.revoked_at is not None)


def announce_revocation(key_id: str) -> bool:
    """After the revocation committed: a new random token in Redis, which every API process
    compares on every request (services.api.access), so none of them accepts the key from its
    next request on. False when Redis is unreachable: the processes that checked the key then
    keep it for up to API_KEY_CACHE_SECONDS."""
    try:
        get_redis().set(cache_key(*REVOCATIONS), f"{secrets.token_hex(16)}:{key_id}")
    except RedisError:
        return False
    return True


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke(session: Session, key_id: str) -> bool:
    """Revoke the key (a second revocation changes nothing). False when there is no such key."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=datetime.now(UTC)))
    return True


def write_secret_file(path: Path, content: str) -> None:
    """Write `content` to a file only its owner can read or write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")


def ensure_dev_key(session: Session, path: Path) -> tuple[str, bool]:
    """The development key in `path`: kept when the database knows it, usable, with every scope;
    otherwise a new one (every scope, no expiry) replaces it. Returns (key, created)."""
    if path.exists():
        key = path.read_text().strip()
        principal = lookup(session, key)
        if principal is not None and principal.usable() and principal.scopes == frozenset(SCOPES):
            os.chmod(path, 0o600)
            return key, False
    _, key = create(session, list(SCOPES), name="development")
    write_secret_file(path, key)
    return key, True
