from __future__ import annotations

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
