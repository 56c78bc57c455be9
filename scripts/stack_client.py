"""A small HTTP client of the running stack, shared by `make demo` and the benchmarks."""
from __future__ import annotations

import os

import requests
from urllib3.util.retry import Retry

API = os.environ.get("PULSE_API", "http://127.0.0.1:8000").rstrip("/")


class StackError(RuntimeError):
    """The stack is unreachable, not ready, or answered something unexpected."""


def session(pool: int = 16) -> requests.Session:
    # A server may close an idle keep-alive connection; a request that races that close fails
    # with "connection aborted" before the server saw it. Retrying is safe for every caller here:
    # reads are reads, events carry their own event_id, a repeated signup answers 409, a repeated
    # fit only refits.
    s = requests.Session()
    retry = Retry(total=3, connect=3, read=2, status=0, allowed_methods=None, backoff_factor=0.2,
                  raise_on_status=False)
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=retry)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


_default = session()


def call(method: str, path: str, *, expect=(200,), http: requests.Session | None = None, timeout: float = 60,
         **kwargs) -> requests.Response:
    try:
        response = (http or _default).request(method, API + path, timeout=timeout, **kwargs)
    except requests.ConnectionError as exc:
        raise StackError(f"The Pulse API is not reachable at {API} ({type(exc).__name__}). "
                         "Start the stack with `make dev` (or set PULSE_API).") from exc
    if response.status_code not in expect:
        raise StackError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
    return response


def require_stack() -> None:
    ready = call("GET", "/health/ready", expect=(200, 503), timeout=10)
    if ready.json().get("status") != "ok":
        raise StackError(f"The stack at {API} is not ready: {ready.text}")
