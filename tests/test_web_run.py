"""[web] in `onajimi run` and `onajimi check` as processes: a web port that cannot be
bound is one line and exit 2 (alone and under a supervisor), worker 0 of two serves the
pages, and check says what the pages will do."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import main
from tests.conftest import CONF
from tests.gatewayenv import write_gateway_config
from tests.redisserver import free_port
from tests.test_run import one_line_error, services, start  # noqa: F401 - a fixture
from tests.test_web import TOKEN
from tests.test_workers import workers_of
from tests.waiting import eventually


def web_config(directory: Path, *, dns: str, backend: int, web: str, workers: int = 1) -> Path:
    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        shutil.copy(CONF / name, directory / name)
    token = directory / "admin.token"
    token.write_text(TOKEN)
    return write_gateway_config(
        directory / "gateway.toml",
        port=free_port(),
        backend=backend,
        dns=dns,
        store=f"sqlite://{directory / 'state.db'}",
        lists=directory,
        extra=f'[web]\nlisten = "{web}"\nadmin_token_file = "{token}"\n'
        f"[server]\nworkers = {workers}\n",
    )


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_web_port_in_use_is_one_line_exit_2(tmp_path, services, workers) -> None:  # noqa: F811
    dns, backend = services
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = web_config(
            tmp_path,
            dns=dns.address,
            backend=backend.port,
            web=f"127.0.0.1:{port}",
            workers=workers,
        )
        await one_line_error(
            config, f"web.listen: cannot listen on 127.0.0.1:{port}: address already in use"
        )


async def test_worker_0_of_two_serves_the_pages(tmp_path, services) -> None:  # noqa: F811
    dns, backend = services
    web = free_port()
    config = web_config(
        tmp_path, dns=dns.address, backend=backend.port, web=f"127.0.0.1:{web}", workers=2
    )
    process = await start(config, stderr=asyncio.subprocess.DEVNULL)
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:

            async def answers() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{web}/?ip=127.0.0.2") as response:
                        return response.status == 200 and 'data-state="clean"' in (
                            await response.text()
                        )
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(answers, timeout=30)
            login = {"token": TOKEN, "name": "bob"}
            async with session.post(f"http://127.0.0.1:{web}/admin/login", data=login) as response:
                assert response.status == 200 and "logged in as bob" in await response.text()
        holders = [w for w in workers_of(process.pid) if _listens(w, web)]
        assert [w.cmdline()[-1] for w in holders] == ["0"]  # `--worker 0`, and it alone
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)


def _listens(worker, port: int) -> bool:
    return any(
        s.status == "LISTEN" and s.laddr.port == port for s in worker.net_connections(kind="tcp")
    )


def test_check_shows_the_pages(tmp_path, capsys) -> None:
    config = web_config(tmp_path, dns="127.0.0.1:53", backend=10025, web="127.0.0.1:8025")
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "web       127.0.0.1:8025, served by the gateway" in out
    assert "sender's page at http://gw.test:8025/" in out and "admin with the token in" in out
    assert "warning: listening on loopback, set web.public_url" in out
    assert "help url  http://gw.test:8025/" in out
