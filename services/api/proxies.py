"""Who sent a request, and over which scheme, when Pulse runs behind reverse proxies.

`X-Forwarded-For` and `X-Forwarded-Proto` are headers anyone can send, so they are believed only
from a peer listed in TRUSTED_PROXIES (addresses or CIDR networks, comma-separated; empty: none,
the default, for an API that clients reach directly). From such a peer they are read as werkzeug's
ProxyFix(x_for=1, x_proto=1) reads them: the last value of each, the one that proxy appended
(earlier values were sent by whoever called the proxy and prove nothing). From any other peer the
socket's own address and scheme stand, whatever the headers say.

One function, `forwarded`, so that every decision that depends on the client (the failed-key and
signup limits, services.api.access) or the scheme (the dashboard's Secure cookie) reads the same.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from shared.settings import get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Forwarded:
    client: str  # the client's IP address ("unknown" when the server gave none)
    scheme: str  # "http" or "https"


@lru_cache(maxsize=4)
def trusted_networks(setting: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES parsed (a bad entry fails at the first request, naming itself)."""
    networks = []
    for entry in (part.strip() for part in setting.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR network") from exc
    return tuple(networks)


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


def _last(environ: dict, header: str) -> str | None:
    values = [v.strip() for v in environ.get(header, "").split(",") if v.strip()]
    return values[-1] if values else None


def forwarded(environ: dict) -> Forwarded:
    """The request's client address and scheme, through a trusted proxy's headers when it came from one."""
    peer = environ.get("REMOTE_ADDR") or "unknown"
    scheme = environ.get("wsgi.url_scheme", "http")
    networks = trusted_networks(get_settings().trusted_proxies)
    peer_address = _address(peer)
    if not networks or peer_address is None or not any(peer_address in network for network in networks):
        return Forwarded(peer, scheme)
    client = _address(_last(environ, "HTTP_X_FORWARDED_FOR"))
    proto = (_last(environ, "HTTP_X_FORWARDED_PROTO") or "").lower()
    return Forwarded(str(client) if client is not None else peer, proto if proto in ("http", "https") else scheme)
