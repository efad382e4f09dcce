"""The SQLite file deleted or replaced under a running gateway: it says so (log, /healthz),
saves what it knew, and goes on deciding."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store import open_store
from tests.faults.live import live_gateway
from tests.waiting import eventually


async def healthz(live) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.metrics_port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    response = (await asyncio.wait_for(reader.read(), 10)).decode()
    writer.close()
    return int(response.split()[1]), response.split("\r\n\r\n", 1)[1]


async def deferred(live, source: str) -> int:
    client = await live.client(source)
    await client.ehlo()
    await client.cmd("MAIL FROM:<a@example.org>")
    reply = await client.cmd("RCPT TO:<bob@example.com>")
    await client.close()
    return reply.code


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_database_file_gone_from_under_the_gateway_is_reported(tmp_path, how) -> None:
    database = tmp_path / "state.db"
    async with live_gateway(tmp_path) as live:
        assert await deferred(live, "127.0.0.3") == 450  # a pending record to keep
        assert await healthz(live) == (200, "ok\n")
        if how == "deleted":
            database.unlink()
        else:  # a backup restored over it, say
            other = open_store(f"sqlite://{tmp_path / 'backup' / 'state.db'}")
            await other.open()
            await other.close()
            (tmp_path / "backup" / "state.db").replace(database)
        _, body = await eventually(lambda: healthz(live), lambda r: r[0] == 503)
        assert f"was {'deleted' if how == 'deleted' else 'replaced'}" in body
        said = await eventually(lambda: [line for line in live.lines if "while in use" in line])
        assert len(said) == 1 and "level=error" in said[0]  # said once, not every check
        (rescued,) = tmp_path.glob("state.db.rescued-*")
        saved = open_store(f"sqlite://{rescued}")
        await saved.open()
        assert [key for key, _ in await saved.scan("defer:")] == ["defer:127.0.0.3"]
        await saved.close()
        assert await deferred(live, "127.0.0.4") == 450  # still deciding meanwhile
