"""How every request body is read as JSON: one parser, with limits, for every route.

Flask's `request.get_json()` (which flask-openapi3 and services.api.problems use, and any route
added later) goes through `app.json.loads`; this provider is that `loads`. It refuses, as a
ValueError that Flask turns into a 400 problem (services.api.problems), what the standard parser
would accept and then choke on:

* nesting deeper than MAX_DEPTH. Python's parser recurses once per level: 100,000 `[` raise a
  RecursionError (a 500), and a few hundred levels pass the parser and then cost every later step
  (validation, MongoDB's 100-level document limit). No event request Pulse accepts nests past 8
  levels (a custom event's 5-level metadata in a batch); a tracking plan's schema may nest 20 (a 422 past it).
* NaN, Infinity and -Infinity, which RFC 8259 does not allow and which would be stored as numbers
  no JSON reader can read back.
* integers of more than 4300 digits (Python's own limit raises a ValueError already; named here).

The size of a body is bounded before it is read (MAX_CONTENT_LENGTH in services.api.app: 413).
"""
from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider

MAX_DEPTH = 32
# Every byte but the quote and the four brackets, deleted by bytes.translate (C speed); the
# openers and closers are folded into one pair so that a pass of bytes.replace removes every
# innermost pair.
_DELETE = bytes(b for b in range(256) if b not in b'"[]{}')
_FOLD = bytes.maketrans(b"[]{}", b"()()")


class TooDeep(ValueError):
    pass


def nesting_exceeds(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text `data` nests arrays and objects more than `limit` levels deep. Each
    pass of `replace` removes the innermost level of every branch, so a text that still holds a
    pair after `limit` passes is deeper than `limit`. Unbalanced brackets are left to the parser
    (and its recursion, to the RecursionError caught in `loads`)."""
    # Brackets inside strings are text, not structure. Escaped backslashes, then escaped quotes,
    # are dropped first (in that order: `\\"` ends a string, `\"` does not), so that every quote
    # left opens or closes a string.
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    bare = data.translate(_FOLD, _DELETE)
    # Two adjacent quotes are an empty string or the end of one string and the start of the next
    # with no bracket between: dropping them changes what is inside a string nowhere. Strings
    # without brackets (nearly all) vanish so; any quote left delimits a string with brackets.
    bare = bare.replace(b'""', b"")
    if b'"' in bare:
        bare = b"".join(bare.split(b'"')[::2])
    if bare.count(b"(") <= limit:
        return False  # cannot be deeper than it has openers (most bodies stop here)
    for _ in range(limit):
        shorter = bare.replace(b"()", b"")
        if len(shorter) == len(bare):
            return False
        bare = shorter
    return b"()" in bare


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


class LimitedJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        data = s if isinstance(s, bytes) else s.encode("utf-8", "surrogatepass")
        if nesting_exceeds(data):
            raise TooDeep(f"nested more than {MAX_DEPTH} levels deep")
        kwargs.setdefault("parse_constant", _no_constant)
        try:
            return json.loads(s, **kwargs)
        except RecursionError:  # cannot happen within MAX_DEPTH; kept so it can never be a 500
            raise TooDeep(f"nested more than {MAX_DEPTH} levels deep") from None
