"""Who the client is, behind the reverse proxies this deployment trusts (TRUSTED_PROXIES).

The peer of the TCP connection (`REMOTE_ADDR`) is the client unless it is one of the configured
proxies. Only then is `X-Forwarded-For` read, as werkzeug's ProxyFix and uvicorn's
`--forwarded-allow-ips` read it: from the right (the entry the nearest proxy appended), skipping
entries that are trusted proxies themselves; the first address that is not one is the client.
Anything to the left of it was written by the client and proves nothing. A request that does not
come from a trusted proxy is judged by its peer address alone, so a client talking to the API
directly cannot pick its own rate-limit bucket by sending the header.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from shared.settings import get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4)
def _networks(setting: str) -> tuple[Network, ...]:
    # "10.0.0.1, 172.16.0.0/12": single addresses and CIDR ranges, IPv4 or IPv6.
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in setting.split(",") if part.strip())


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().removeprefix("[").split("]")[0])
    except ValueError:
        return False  # not an address (a name, "unknown", garbage): never a proxy we trust
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return any(ip in network for network in networks)


def client_address(request) -> str:
    """The client's address: `REMOTE_ADDR`, or when that is a trusted proxy the nearest
    `X-Forwarded-For` entry that is not a trusted proxy ("unknown" without any address)."""
    environ = request.environ
    peer = environ.get("REMOTE_ADDR") or "unknown"
    networks = _networks(get_settings().trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    # Every hop is a proxy of ours (or there is no header): the leftmost is as far as we can see.
    return hops[0] if hops else peer
