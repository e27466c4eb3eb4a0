"""Ports for our servers stay out of the range outgoing connections take theirs from."""

from __future__ import annotations

import socket

import pytest
from groundswell_stack import processes


def test_ports_are_below_the_ephemeral_range_bindable_and_never_handed_out_twice() -> None:
    low = processes._ephemeral_low()
    if low - processes._FIRST_PORT < 1_000:
        pytest.skip("this kernel's ephemeral range leaves no room below it: port 0 is used")
    ports = [processes.free_port() for _ in range(200)]

    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        assert processes._FIRST_PORT <= port < low
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))  # nothing holds it
