"""A small HTTP client of the running stack, shared by `make demo` and the benchmarks."""
from __future__ import annotations

import os
from pathlib import Path

import requests
from urllib3.util.retry import Retry

API = os.environ.get("PULSE_API", "http://127.0.0.1:8000").rstrip("/")


def key_file() -> Path:
    return Path(os.environ.get("PULSE_VAR_DIR", "var")) / "dev-api-key"


_found_key: list[str] = []


def api_key() -> str | None:
    """PULSE_API_KEY, or the development key `make dev` wrote (every scope: admin requests are
    not rate limited, so benchmarks and the demo measure the stack, not its limits). Looked up
    until found, then remembered."""
    if not _found_key:
        key = os.environ.get("PULSE_API_KEY")
        if not key:
            try:
                key = key_file().read_text().strip()
            except OSError:
                return None
        if key:
            _found_key.append(key)
    return _found_key[0] if _found_key else None


def auth_headers() -> dict[str, str]:
    """The Authorization header, for callers that do not use `session()` (http.client timing loops)."""
    key = api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


class _Authorized(requests.Session):
    """Sends the key with every request, resolved when the first request goes out."""

    def request(self, method, url, *args, **kwargs):
        key = api_key()
        if key and "Authorization" not in self.headers:
            self.headers["Authorization"] = f"Bearer {key}"
        return super().request(method, url, *args, **kwargs)


class StackError(RuntimeError):
    """The stack is unreachable, not ready, or answered something unexpected."""


def session(pool: int = 16) -> requests.Session:
    # A server may close an idle keep-alive connection; a request that races that close fails
    # with "connection aborted" before the server saw it. Retrying is safe for every caller here:
    # reads are reads, events carry their own event_id, a repeated signup answers 409, a repeated
    # fit only refits.
    s = _Authorized()
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
    if response.status_code == 401 and 401 not in expect:
        raise StackError(f"{method} {path} answered 401: {response.json().get('detail')}. Start the stack with "
                         f"`make dev` (it writes {key_file()}) or set PULSE_API_KEY to a key with every scope.")
    if response.status_code not in expect:
        raise StackError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
    return response


def require_stack() -> None:
    ready = call("GET", "/health/ready", expect=(200, 503), timeout=10)
    if ready.json().get("status") != "ok":
        raise StackError(f"The stack at {API} is not ready: {ready.text}")


def run_job(path: str, body: dict, *, timeout: float = 600, poll: float = 0.5) -> dict:
    """POST a job (a fit, a validation: 202 with its Location) and poll it until it is done;
    its result. A failed job is a StackError with the job's reason."""
    return answer("POST", path, json=body, expect=(202,), timeout=timeout, poll=poll)


def answer(method: str, path: str, *, expect: tuple[int, ...] = (200, 202), timeout: float = 600,
           poll: float = 0.5, **kwargs) -> dict:
    """A request's answer: its body when 200, or, when 202 (a job), the job's result once its
    Location says done. A failed or overdue job is a StackError with the job's reason."""
    import time

    submitted = call(method, path, expect=expect, **kwargs)
    if submitted.status_code != 202:
        return submitted.json()
    location = submitted.headers["Location"]
    deadline = time.monotonic() + timeout
    while True:
        job = call("GET", location).json()
        if job["status"] == "done":
            return job["result"]
        if job["status"] == "failed":
            raise StackError(f"{path} job {job['id']} failed: {job['error']['detail']}")
        if time.monotonic() > deadline:
            raise StackError(f"{path} job {job['id']} still {job['status']} after {timeout:.0f}s")
        time.sleep(poll)
