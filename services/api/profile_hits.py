"""Cached profile reads served before Flask: `GET /api/users/<id>/profile` when Redis holds it.

A cache hit is the product's most frequent request and its cheapest: one Redis MGET (the body and
the key revocation token, services.api.access) and one Postgres read of the user's current cache
version (shared.pipeline.profile_cache). Routing it
through Flask and flask-openapi3 (request context, view-args model, response object) cost more
than the Redis read itself (~0.12 ms of a ~0.5 ms hit on the dev machine), so this WSGI
middleware answers hits directly with the same body and headers the Flask view sends. Everything
else (a miss, HEAD, a query string, another path, Redis unreachable) goes to Flask unchanged,
where `services.api.users.get_profile` computes, caches, documents and reports errors. The route
re-reads the cache on a miss: one more round trip on a path that takes ~10 ms, in exchange for
the view staying the whole story on its own.

A key without the personal scope gets the profile without the person's name, e-mail and street,
cut from the same cached text (shared.contracts.personal.profile_view), as the view answers it.

The key and the rate limit are checked here as Flask would (services.api.access: same decision,
same problem answers); a request that goes on to Flask carries the decision along, so a limit
is counted once per request.
"""
import re

import redis
from sqlalchemy.exc import DatabaseError

from services.api import access, proxies
from services.api.metrics import ROUTE
from services.api.problems import problem_response
from shared.contracts import personal
from shared.infra.cache import get_redis, reply
from shared.pipeline import profile_cache

PROFILE_PATH = re.compile(r"/api/users/([0-9]{1,18})/profile")
PROFILE_ENDPOINT = "users.get_profile"
PROFILE_ROUTE = "/api/users/{user_id}/profile"


class ProfileHits:
    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING"):
            match = PROFILE_PATH.fullmatch(environ.get("PATH_INFO", ""))
            if match:
                environ[ROUTE] = PROFILE_ROUTE
                user_id = int(match.group(1))
                try:
                    # One round trip for the revocation token (access) and the cached profile.
                    announced, raw = reply(
                        get_redis().mget([access.revocations_key(), profile_cache.profile_key(user_id)]))
                except redis.RedisError:
                    announced, raw = access.UNREAD, None
                try:
                    decision = access.decide(PROFILE_ENDPOINT, access.authorization(environ, PROFILE_ENDPOINT),
                                             proxies.forwarded(environ).client, announced)
                except Exception:
                    return self.wsgi_app(environ, start_response)  # Postgres down: Flask answers 503
                if decision.status != 200:
                    response = problem_response(decision.status, decision.detail)
                    response.headers.update(decision.headers)
                    return response(environ, start_response)
                environ[access.DECIDED] = decision
                try:
                    body = profile_cache.cached(user_id, raw) if raw is not None else None
                except (redis.RedisError, DatabaseError):
                    body = None  # the view reports it as the API does everywhere else
                if body is not None:
                    # The view the key may see, cut from the one cached text (shared.contracts.personal).
                    shown = decision.principal is not None and personal.may_see(decision.principal.scopes)
                    data = personal.profile_view(body, shown).encode()
                    start_response("200 OK", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(data))), ("X-Cache", "HIT"),
                                              *(personal.NO_STORE.items() if shown else ()),
                                              *decision.headers.items()])
                    return [data]
        return self.wsgi_app(environ, start_response)
