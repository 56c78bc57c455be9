"""shared.contracts.personal: the packed profile gives back exactly the whole profile, or exactly the profile
without its personal members, whatever the key order and whatever the values hold (commas, braces,
semicolons, quotes, non-ASCII text: the cut ranges must never land inside a value)."""
import json
import random

import pytest

from shared.contracts.personal import pack_profile, profile_view, pseudonymous

TRICKY = ['a;b,1-2', 'x"}{,', "Іван Іванов", "\\\"", "", "0-0;", "}}}"]


def profile(rng: random.Random) -> dict:
    user = {"id": rng.randint(1, 10**9), "username": rng.choice(TRICKY), "email": rng.choice(TRICKY),
            "full_name": rng.choice(TRICKY), "profile_score": rng.random() * 100, "created_at": "2026-01-01T00:00:00",
            "address": {"street": rng.choice(TRICKY), "city": rng.choice(TRICKY),
                        "country": {"code": "UA", "name": "Ukraine"}}}
    items = list(user.items())
    rng.shuffle(items)
    user = dict(items)
    address = list(user["address"].items())
    rng.shuffle(address)
    user["address"] = dict(address)
    return {"user_id": user["id"], "user": user, "segment": rng.choice(TRICKY), "totals": {"events": 3},
            "recommendations": [rng.choice(TRICKY)]}


@pytest.mark.parametrize("seed", range(300))
def test_both_views_of_a_packed_profile_are_exact(seed):
    original = profile(random.Random(seed))
    packed = pack_profile(original)
    whole = profile_view(packed, personal=True)
    assert json.loads(whole) == original
    assert list(json.loads(whole)["user"]) == list(original["user"])  # the key order is kept
    cut = json.loads(profile_view(packed, personal=False))
    assert cut == {**original, "user": pseudonymous(original["user"])}
    for field in ("username", "email", "full_name"):
        assert field not in cut["user"]
    assert "street" not in cut["user"]["address"]


def test_a_profile_cached_before_packing_is_still_served_right():
    original = profile(random.Random(1))
    legacy = json.dumps(original)  # the plain JSON entries written before this change (TTL one hour)
    assert json.loads(profile_view(legacy, personal=True)) == original
    assert json.loads(profile_view(legacy, personal=False))["user"] == pseudonymous(original["user"])


def test_a_user_with_only_personal_members_leaves_an_empty_object():
    original = {"user": {"email": "a@b.c"}, "x": 1}
    assert json.loads(profile_view(pack_profile(original), personal=False)) == {"user": {}, "x": 1}
