"""Who sent a request, and over which scheme, when Pulse runs behind reverse proxies (TRUSTED_PROXIES).

`X-Forwarded-For` and `X-Forwarded-Proto` are headers anyone can send, so they are believed only
from a peer listed in TRUSTED_PROXIES (addresses or CIDR networks, comma-separated; empty, the
default, for an API that clients reach directly). From such a peer `X-Forwarded-For` is read as
werkzeug's ProxyFix and uvicorn's `--forwarded-allow-ips` read it: from the right (the entry the
nearest proxy appended), skipping entries that are trusted proxies themselves; the first address
that is not one is the client. Anything to the left of it was written by the client and proves
nothing. The scheme is the last `X-Forwarded-Proto` value (the one our proxy set). From any other
peer the socket's own address and scheme stand, whatever the headers say, so a client talking to
the API directly can neither pick its own rate-limit bucket nor claim HTTPS.

One reading, `forwarded`, so that every decision that depends on the client (the failed-key and
signup limits in services.api.access, the dashboard login) or on the scheme (the dashboard's
Secure cookie) reads the same.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shared.contracts.settings import get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Forwarded:
    client: str  # the client's address ("unknown" when the server gave none)
    scheme: str  # "http" or "https"


@lru_cache(maxsize=4)
def trusted_networks(setting: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES parsed: single addresses and CIDR ranges, IPv4 or IPv6 (a bad entry fails
    at the first request, naming itself)."""
    networks = []
    for entry in (part.strip() for part in setting.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR network") from exc
    return tuple(networks)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().removeprefix("[").split("]")[0])
    except ValueError:
        return False  # not an address (a name, "unknown", garbage): never a proxy we trust
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return any(ip in network for network in networks)


def _values(environ: dict[str, Any], header: str) -> list[str]:
    return [value.strip() for value in environ.get(header, "").split(",") if value.strip()]


def forwarded(environ: dict[str, Any]) -> Forwarded:
    """The request's client address and scheme, through a trusted proxy's headers when it came from one."""
    peer = environ.get("REMOTE_ADDR") or "unknown"
    scheme = environ.get("wsgi.url_scheme", "http")
    networks = trusted_networks(get_settings().trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return Forwarded(peer, scheme)
    hops = _values(environ, "HTTP_X_FORWARDED_FOR")
    # Every hop a proxy of ours (or no header): the leftmost is as far as we can see.
    client = next((hop for hop in reversed(hops) if not _trusted(hop, networks)), hops[0] if hops else peer)
    protos = _values(environ, "HTTP_X_FORWARDED_PROTO")
    proto = protos[-1].lower() if protos else ""
    return Forwarded(client, proto if proto in ("http", "https") else scheme)


def client_address(request) -> str:
    """The client's address (see `forwarded`)."""
    return forwarded(request.environ).client
