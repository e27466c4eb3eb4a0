"""The stack's own services reach a local cluster over its Unix socket; people and tools
are shown, and can still use, the loopback TCP address. The cluster runs with the stack's
server settings."""

from __future__ import annotations

import asyncpg
import pytest
from groundswell_stack.infra import Infra
from groundswell_stack.postgres import SERVER_SETTINGS


async def test_services_are_given_the_clusters_unix_socket(infra: Infra) -> None:
    if infra.postgres is None:
        pytest.skip("PostgreSQL comes from DATABASE_URL or a container: no socket of ours")
    service_url = infra.env()["DATABASE_URL"]
    assert service_url != infra.database_url
    assert "127.0.0.1" in infra.database_url

    over_socket = await asyncpg.connect(service_url)
    over_tcp = await asyncpg.connect(infra.database_url)
    try:
        # inet_client_addr() is NULL on a Unix-socket connection, the client's IP on TCP.
        assert await over_socket.fetchval("SELECT inet_client_addr()") is None
        assert str(await over_tcp.fetchval("SELECT inet_client_addr()")) == "127.0.0.1"
        same = "SELECT current_database(), current_setting('port')"
        assert tuple(await over_socket.fetchrow(same)) == tuple(await over_tcp.fetchrow(same))
    finally:
        await over_socket.close()
        await over_tcp.close()


async def test_the_local_cluster_runs_with_the_stacks_server_settings(infra: Infra) -> None:
    if infra.postgres is None:
        pytest.skip("PostgreSQL comes from DATABASE_URL or a container: not our server")
    conn = await asyncpg.connect(infra.database_url)
    try:
        running = {name: await conn.fetchval(f"SHOW {name}") for name in SERVER_SETTINGS}
    finally:
        await conn.close()
    assert running == SERVER_SETTINGS
