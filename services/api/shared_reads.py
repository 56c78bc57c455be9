"""Reads of a store that anonymous callers trigger (`/metrics`, `/health/ready`), shared per process.

Each store is read at most once per READ_INTERVAL_SECONDS in an API process, whatever the number of
callers: the result (or the failure) of the last read is kept with its time, and concurrent callers
of a stale result wait on one lock for the one read in progress, then share it. Without this every
unauthenticated request opened an AMQP connection and ran Postgres, MongoDB and Redis reads: a
cheap way for anyone to load every store. A figure is then up to READ_INTERVAL_SECONDS old, well
inside a Prometheus scrape interval or a load balancer's probe period.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
READ_INTERVAL_SECONDS = 1.0


class SharedRead(Generic[T]):
    """`get()` returns what `read()` returned (or raises what it raised) at most
    `interval` seconds ago, reading again only when that is older."""

    def __init__(self, read: Callable[[], T], interval: float = READ_INTERVAL_SECONDS):
        self._read = read
        self._interval = interval
        self._lock = threading.Lock()
        self._finished = float("-inf")  # when the last read ended (monotonic)
        self._outcome: tuple[bool, T | BaseException] | None = None
        self.reads = 0  # how many times the store was actually read (tests and logs)

    def get(self) -> T:
        with self._lock:  # a caller arriving during a read waits for it instead of reading again
            if self._outcome is None or time.monotonic() - self._finished >= self._interval:
                self.reads += 1
                try:
                    self._outcome = (True, self._read())
                except Exception as exc:  # kept and re-raised to every caller of this read
                    self._outcome = (False, exc)
                # From the end of the read: a store that answers slowly is not asked again at once.
                self._finished = time.monotonic()
            ok, value = self._outcome
        if ok:
            return value  # type: ignore[return-value]
        raise value  # type: ignore[misc]
