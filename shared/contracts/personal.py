"""Which fields of a person are personal data, and how answers leave them out.

A key with the `read` scope sees people pseudonymously: by id, with city, country, dates, score
and analytics. The fields that say who someone is (username, e-mail, full name, street) need the
`personal` scope as well; without it they are absent from every answer (users, lists, the top
users, profiles, the dashboard's pages), not emptied. An answer that holds them carries
`Cache-Control: no-store`.

Profiles are cached in Redis once, whoever asks (shared.pipeline.profile_cache): the cached text is the
whole profile preceded by the character ranges that hold the personal members, so that a cache hit
serves either view by slicing a string, without parsing JSON or a second cache entry
(`pack_profile`, `profile_view`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

PERSONAL = "personal"
USER_FIELDS = ("username", "email", "full_name")
ADDRESS_FIELDS = ("street",)
NO_STORE = {"Cache-Control": "no-store"}
# The description the OpenAPI document gives each personal field (shared.contracts.users).
FIELD_NOTE = "Personal data: present only for a key with the `personal` scope (absent otherwise)."


def may_see(scopes: Iterable[str] | None) -> bool:
    return PERSONAL in (scopes or ())


def pseudonymous(user: dict[str, Any]) -> dict[str, Any]:
    """A user summary (shared.contracts.users) without the fields that identify the person."""
    out = {k: v for k, v in user.items() if k not in USER_FIELDS}
    address = user.get("address")
    if isinstance(address, dict):
        out["address"] = {k: v for k, v in address.items() if k not in ADDRESS_FIELDS}
    return out


def user_view(user: dict[str, Any], personal: bool) -> dict[str, Any]:
    return user if personal else pseudonymous(user)


def _dumps(value: Any) -> str:
    # As shared.pipeline.profile_cache serialises profiles: compact, dates as strings.
    return json.dumps(value, default=str, separators=(",", ":"))


class _Text:
    """A JSON text built member by member, remembering where the personal members lie."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.cuts: list[tuple[int, int]] = []

    def add(self, text: str, personal: bool = False) -> None:
        if personal and text:
            self.cuts.append((self.length, self.length + len(text)))
        self.parts.append(text)
        self.length += len(text)

    def members(self, obj: dict[str, Any], personal_keys: tuple[str, ...],
                nested: dict[str, tuple[Any, ...]] | None = None) -> None:
        """`obj` as a JSON object in its own key order, each personal member cut out together with
        one comma, so that what is left is a valid object with the other members in their order."""
        keys = list(obj)
        kept = [i for i, k in enumerate(keys) if k not in personal_keys]
        self.add("{")
        if not kept:  # nothing but personal members: cut them as one run
            self.add(",".join(f"{_dumps(k)}:{_dumps(obj[k])}" for k in keys), personal=True)
            self.add("}")
            return
        first = kept[0]
        for i, k in enumerate(keys):
            member = f"{_dumps(k)}:{_dumps(obj[k])}" if k in personal_keys else None
            if member is not None:
                # Before the first kept member a member takes the comma after it, else the one before.
                self.add(member + "," if i < first else "," + member, personal=True)
                continue
            self.add(("," if i > first else "") + f"{_dumps(k)}:")
            if nested and k in nested and isinstance(obj[k], dict):
                self.members(obj[k], *nested[k])
            else:
                self.add(_dumps(obj[k]))
        self.add("}")


def pack_profile(profile: dict[str, Any]) -> str:
    """The profile as cached: `<start>-<end>,...;` (the personal members' character ranges), then
    the profile's JSON with them. `profile_view` turns it into either answer."""
    text = _Text()
    text.members(profile, (), {"user": ((*USER_FIELDS,), {"address": ((*ADDRESS_FIELDS,), None)})})
    ranges = ",".join(f"{start}-{end}" for start, end in text.cuts)
    return f"{ranges};" + "".join(text.parts)


def profile_view(packed: str, personal: bool) -> str:
    """The answer's JSON from a packed profile: whole, or without its personal members."""
    if packed.startswith("{"):
        # Cached before profiles were packed (an entry lives an hour): read it the slow way.
        return packed if personal else _dumps(_strip(json.loads(packed)))
    ranges, _, body = packed.partition(";")
    if personal or not ranges:
        return body
    kept, start = [], 0
    for cut in ranges.split(","):
        begin, _, end = cut.partition("-")
        kept.append(body[start:int(begin)])
        start = int(end)
    kept.append(body[start:])
    return "".join(kept)


def _strip(profile: dict[str, Any]) -> dict[str, Any]:
    if isinstance(profile.get("user"), dict):
        profile = {**profile, "user": pseudonymous(profile["user"])}
    return profile
