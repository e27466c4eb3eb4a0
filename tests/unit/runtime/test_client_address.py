from __future__ import annotations

import ipaddress
import random

import pytest
from groundswell_runtime.client_address import (
    client_address,
    client_network,
    parse_networks,
    site_network,
)

PROXIES = parse_networks(["127.0.0.1", "10.0.0.0/8"])


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", ()) == "203.0.113.9"


def test_from_an_untrusted_peer_the_header_is_ignored() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"


def test_the_right_most_untrusted_hop_is_the_client() -> None:
    # The client wrote "6.6.6.6" itself; our proxy appended the address it really saw.
    chosen = client_address("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3", PROXIES)
    assert chosen == "198.51.100.7"


def test_a_hop_that_is_not_an_address_falls_back_to_the_peer() -> None:
    assert client_address("127.0.0.1", "<script>, 198.51.100.7", PROXIES) == "127.0.0.1"
    assert client_address("127.0.0.1", "", PROXIES) == "127.0.0.1"


def test_every_hop_trusted_gives_the_left_most() -> None:
    assert client_address("127.0.0.1", "10.0.0.5, 10.0.0.6", PROXIES) == "10.0.0.5"


def test_ipv4_mapped_peers_are_ipv4() -> None:
    assert client_address("::ffff:127.0.0.1", "198.51.100.7", PROXIES) == "198.51.100.7"


def test_no_peer_is_no_address() -> None:
    assert client_address(None, "198.51.100.7", PROXIES) is None


def test_ipv6_clients_are_limited_by_their_64_and_48() -> None:
    assert client_network("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert site_network("2001:db8:1:2:aaaa::1") == "2001:db8:1::/48"
    assert client_network("198.51.100.7") == "198.51.100.7"
    assert site_network("198.51.100.7") is None


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        parse_networks(["127.0.0.1", "nonsense"])


@pytest.mark.parametrize(
    "text",
    [
        "203.0.113.9",
        " 203.0.113.9 ",
        "0.0.0.0",
        "255.255.255.255",
        "010.1.2.3",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.2.3",
        "1.2.3.04",
        "0x7f.0.0.1",
        "127.1",
        "1.2.3.4/32",
        "",
        "::1",
        "::ffff:198.51.100.7",
        "2001:DB8::1",
        "2001:db8:0:0::1",
        "fe80::1%eth0",
        "1.2.3.4 ",
        "\t1.2.3.4",
        "1.2.3.4\n",
        "٣.1.2.3",
        "1.2.3.-1",
        "+1.2.3.4",
    ],
)
def test_an_address_reads_as_ipaddress_reads_it(text: str) -> None:
    # The IPv4 fast path (the C parser) must agree with ipaddress on every text: the
    # same address or none, and the same written form.
    try:
        expected = ipaddress.ip_address(text.strip())
    except ValueError:
        expected = None
    if isinstance(expected, ipaddress.IPv6Address) and expected.ipv4_mapped is not None:
        expected = expected.ipv4_mapped
    peer = client_address(text, None, ()) if text.strip() else None
    assert peer == (None if expected is None else str(expected))


def test_random_ipv4_addresses_read_as_ipaddress_reads_them() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        octets = [
            str(rng.choice([0, 1, 9, 10, 99, 100, 199, 255, 256, rng.randrange(300)]))
            for _ in range(4)
        ]
        if rng.random() < 0.2:
            octets[rng.randrange(4)] = "0" + octets[0]  # a leading zero
        text = ".".join(octets)
        try:
            expected: str | None = str(ipaddress.ip_address(text))
        except ValueError:
            expected = None
        assert client_address(text, None, ()) == expected, text
