"""The stack runs signing's outbox relay as a service of its own."""

from __future__ import annotations

from groundswell_stack.services import relay_port, service_env, service_specs


def test_default_ports_put_the_relay_on_8005_and_tell_serve_to_leave_it_out() -> None:
    specs = service_specs({})
    by_name = {s.name: s for s in specs}
    relay = by_name["signing-relay"]
    assert relay.command == ("groundswell-signing", "relay")
    assert relay.port == 8005 and relay.port_env == "SIGNING_RELAY_PORT"
    env = service_env({}, specs)
    assert env["SIGNING_RELAY_MODE"] == "separate"
    assert env["SIGNING_RELAY_PORT"] == "8005"


def test_a_moved_stack_gets_a_free_relay_port_that_later_calls_agree_on() -> None:
    base = {"SIGNING_PORT": "18001"}
    first = relay_port(base)
    assert base["SIGNING_RELAY_PORT"] == str(first)
    assert {s.name: s.port for s in service_specs(base)}["signing-relay"] == first


def test_an_explicit_relay_port_wins() -> None:
    assert relay_port({"SIGNING_PORT": "18001", "SIGNING_RELAY_PORT": "18005"}) == 18005


def test_without_the_relay_service_serve_keeps_its_own_relay() -> None:
    specs = [s for s in service_specs({}) if s.name != "signing-relay"]
    assert "SIGNING_RELAY_MODE" not in service_env({}, specs)
