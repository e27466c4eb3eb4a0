"""Who is calling: the one rule for a client's network address, and the network it is limited by.

`X-Forwarded-For` is written by the client and appended to by each proxy, so only the
hops added by proxies we trust can be believed. Like uvicorn's `forwarded_allow_ips`,
the header is read only when the socket peer is a trusted proxy, and then from the
right: the first hop that is not itself a trusted proxy is the client. A hop that is
not an address means the chain cannot be trusted, so the socket peer is used.

Limits apply to networks, not addresses: an IPv6 host usually holds a whole /64, so
one /64 counts as one client, and a /48 (one site) gets a wider budget of its own.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import NamedTuple

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IPV6_CLIENT_PREFIX = 64
IPV6_SITE_PREFIX = 48


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`127.0.0.1`, `10.0.0.0/8`, `::1`: raises ValueError naming a bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value.strip()!r}") from None
    return tuple(networks)


class _Parsed(NamedTuple):
    address: IPAddress
    text: str  # `str(address)`, made once: it is what callers keep


# Parsed once per text: a signing request reads its client's address, then its client
# network and site network, from the same string (and proxies' addresses recur).
# Addresses are immutable values, so a cached one cannot be changed by a caller.
@functools.lru_cache(maxsize=4096)
def _parse(value: str) -> _Parsed | None:
    text = value.strip()
    # An IPv4 address already in its one written form (what `str` gives back): the C
    # parser says so, and ipaddress's own parser and printer (Python code, a few us a
    # request, nearly every address new in a surge) are spared. Anything else, leading
    # zeros and IPv6 included, takes ipaddress's path; tests/unit/runtime holds the two.
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        pass
    else:
        if socket.inet_ntop(socket.AF_INET, packed) == text:
            return _Parsed(ipaddress.IPv4Address(packed), text)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return _Parsed(address, str(address))


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in trusted)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[IPNetwork]
) -> str | None:
    """The caller's address, or None when the server was not told (e.g. a Unix socket)."""
    peer_parsed = _parse(peer) if peer else None
    if peer_parsed is None:
        return None
    if not forwarded_for or not _trusted(peer_parsed.address, trusted):
        return peer_parsed.text
    hops = [_parse(hop) for hop in forwarded_for.split(",")]
    if any(hop is None for hop in hops):
        return peer_parsed.text
    for hop in reversed(hops):
        assert hop is not None
        if not _trusted(hop.address, trusted):
            return hop.text
    # Every hop is one of our proxies: the left-most is the closest we know to the client.
    assert hops[0] is not None
    return hops[0].text


def client_network(address: str) -> str:
    """What a per-client limit counts: the address itself (IPv4) or its /64 (IPv6)."""
    parsed = _parse(address)
    if parsed is None:
        raise ValueError(f"not an IP address: {address!r}")
    if parsed.address.version == 4:
        return parsed.text
    return str(ipaddress.ip_network(f"{parsed.text}/{IPV6_CLIENT_PREFIX}", strict=False))


def site_network(address: str) -> str | None:
    """The wider budget an IPv6 client shares with its site (/48); None for IPv4."""
    parsed = _parse(address)
    if parsed is None or parsed.address.version == 4:
        return None
    return str(ipaddress.ip_network(f"{parsed.text}/{IPV6_SITE_PREFIX}", strict=False))
