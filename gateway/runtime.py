"""The running gateway: settings in, listening sockets out, and everything in between.

`Gateway` assembles the policy, store, resolver, decider and relay configuration into
the `Services` the SMTP sessions use (smtp/services.py), binds the listeners, runs the
background chores, and owns the lifecycle. It holds no session rules (smtp/session.py)
and writes no session log lines (observer.py):

    start()      open the store, build the policy, probe the backend, bind (errors: one line)
    reload()     SIGHUP: re-read config and lists; keep the old ones if the new do not load
    stop(grace)  SIGTERM: stop accepting, let sessions finish for `grace` seconds, close
    serve()      start, then wait for SIGTERM/SIGINT, reload on SIGHUP

Background chores: sweep expired store records, pick up dynamic allow/deny entries
(polling the store's generation number), re-learn the backend's EHLO keywords, count
store records for the metrics, write a heartbeat `onajimi status` can see, and check
that the store needs no operator (a SQLite file deleted under it).

At start, the host's default gateways are read once (/proc/net/route and ipv6_route):
the sessions count the connections each opens, and a warning says when one of them is
the client of too many (Docker's userland proxy or a NAT: smtp/masquerade.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from gateway import __version__, logs
from gateway.assembly import build_policy, dynamic_list, session_rules_from
from gateway.config import BackendSettings, Settings, load_settings
from gateway.decider import Decider
from gateway.errors import ConfigError, StoreError, StoreUnusable, UserError
from gateway.listening import listen_smtp, start_management
from gateway.management import ManagementServer, store_health
from gateway.metrics import Metrics
from gateway.observer import Observer
from gateway.policy import replies
from gateway.policy.decision import Policy
from gateway.policy.lists import ClientList, Role
from gateway.policy.net import IPAddress, NetSet
from gateway.policy.vocabulary import OnError
from gateway.relay.backend import BackendConfig, Capabilities, probe_backend
from gateway.relay.pool import BackendPool
from gateway.resolver.resolver import Resolver
from gateway.smtp.limits import ConnectionLimits, TarpitSlots
from gateway.smtp.masquerade import MasqueradeWatch, default_gateways
from gateway.smtp.server import GatewaySMTP
from gateway.smtp.services import OpenSessions, Services
from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.guard import GuardedStore
from gateway.tls import Certificate, SelfSignedError, certificate_for, server_context
from gateway.web.app import WebServer
from gateway.web.context import Backing
from gateway.web.recent import RecentDecisions

log = logging.getLogger("onajimi")

SWEEP_EVERY = 60.0
DYNAMIC_POLL_EVERY = 2.0
PROBE_EVERY = 300.0
COUNT_EVERY = 30.0
HEARTBEAT_EVERY = 10.0
STORE_CHECK_EVERY = 5.0
CERTIFICATE_CHECK_EVERY = 10.0
HEARTBEAT_PREFIX = "heartbeat:"
ROUTE_FILES = ("/proc/net/route", "/proc/net/ipv6_route")


def read_default_gateways(paths: Sequence[str] = ROUTE_FILES) -> list[IPAddress]:
    """This host's (or container's) default-route next hops; none where the files are
    missing or unreadable (off Linux): then nothing is watched."""
    texts = []
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as file:
                texts.append(file.read())
        except OSError:
            texts.append("")
    return default_gateways(*texts)


def tls_for(settings: Settings) -> tuple[ssl.SSLContext | None, Certificate | None]:
    """The STARTTLS context and the files behind it; (None, None) with tls.mode = "off"."""
    tls = settings.tls
    if tls.mode == "off":
        return None, None
    assert tls.self_signed_dir is not None or tls.cert is not None  # config checks it
    try:
        certificate = certificate_for(
            tls.cert, tls.key, settings.listen.hostname, tls.self_signed_dir, settings.source
        )
    except SelfSignedError as exc:
        # Mail keeps flowing as before STARTTLS was on by default (an upgrade must not
        # stop a gateway); a certificate the operator configured is a hard error instead.
        log.error("%s; STARTTLS is not offered", exc)
        return None, None
    return server_context(certificate.cert, certificate.key, settings.source), certificate


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
        resolver: Resolver | None = None,
        own_logging: bool = False,
        worker: int | None = None,
        default_gateways: Sequence[IPAddress] | None = None,
    ) -> None:
        self.own_logging = own_logging  # `onajimi run` owns the process's log setup
        self.worker = worker  # a worker of a supervisor: it serves metrics and counts records
        self.settings = settings
        self.clock = clock
        self.store = store
        self.resolver = resolver
        self.metrics = Metrics()
        self.observer = Observer(self.metrics)
        self.endpoint: ManagementServer | None = None
        self.web: WebServer | None = None  # the pages, when this process serves them
        if self.serves_web:
            self.observer.recent = RecentDecisions(settings.web.recent_decisions, clock)
        self.heartbeat_name = f"{HEARTBEAT_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.started = time.time()
        self.capabilities = Capabilities()
        self.backend_pool: BackendPool | None = None  # backend.reuse
        self.limits = ConnectionLimits(settings.limits)
        self.sessions = OpenSessions(self.limits, self.observer)
        self.tarpit = TarpitSlots(settings.tarpit.max_sessions)
        self.decider: Decider | None = None  # at start(), once the store is open
        # The host's default gateways (None: read at start), and the watch on them.
        self.default_gateways = default_gateways
        self.masquerade: MasqueradeWatch | None = None
        self.services: Services | None = None  # at start(); rebuilt by reload
        self._dynamic = (ClientList(Role.ALLOW), ClientList(Role.DENY))
        self.policy: Policy  # current: static lists + dynamic entries
        self._dynamic_generation: int | None = None
        self._store_problem: str | None = None
        self._tls_problem: tuple | None = None  # the files' stamp that failed to load
        self._dynamic_expiry = math.inf
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._apply(settings)

    @property
    def serves_web(self) -> bool:
        """[web] is on and this process serves it: the only one, or worker 0 of several.
        One worker, not the supervisor: the pages need what a gateway has (the policy with
        its dynamic entries, the Decider and its DNS cache, the decisions as they are made,
        SIGHUP), and the supervisor keeps worker 0 running. Without SO_REUSEPORT on the
        web port, exactly one process can bind it."""
        return self.settings.web.listen is not None and self.worker in (None, 0)

    def _apply(self, settings: Settings) -> None:
        """Everything derived from settings (at start and at reload); raises ConfigError."""
        static = build_policy(settings)
        tls_context, certificate = tls_for(settings)
        proxy_trusted: NetSet[str] | None = None
        if settings.listen.proxy_protocol:
            proxy_trusted = NetSet()
            for network in settings.listen.proxy_trusted:
                proxy_trusted.add(network, str(network))
        before = self.settings.backend
        self.settings = settings
        self._static_policy = static
        self.policy = static.with_dynamic(*self._dynamic)
        self.tls_context = tls_context
        self.certificate = certificate
        self.proxy_trusted = proxy_trusted
        self.backend_config = BackendConfig.from_settings(settings)
        self._keep_backend_connections(before)
        self.limits.reconfigure(settings.limits)
        self.tarpit.limit = settings.tarpit.max_sessions
        self.observer.on_error = OnError(settings.store.on_error)
        if self.decider is not None:
            self.services = self._services()
        if self.own_logging:
            logs.configure(settings.log.level, settings.log.format)

    def _keep_backend_connections(self, before: BackendSettings) -> None:
        """backend.reuse: the pool of idle connections, emptied when it goes off or any
        other backend setting changes (what it keeps may lead to the old backend)."""
        pool, reuse = self.backend_pool, self.settings.backend
        kept = ("reuse_idle", "reuse_max")
        changed = any(
            getattr(before, f.name) != getattr(reuse, f.name)
            for f in fields(reuse)
            if f.name not in kept
        )
        if pool is not None and (not reuse.reuse or changed):
            pool.close()
            pool = None
        if reuse.reuse:
            pool = pool or BackendPool(reuse.reuse_idle, reuse.reuse_max)
            pool.idle_seconds, pool.size = reuse.reuse_idle, reuse.reuse_max
        self.backend_pool = pool

    def _services(self) -> Services:
        settings = self.settings
        assert self.decider is not None
        return Services(
            policy=lambda: self.policy,
            rules=session_rules_from(settings),
            decider=self.decider,
            limits=self.limits,
            sessions=self.sessions,
            observer=self.observer,
            backend=self.backend_config,
            capabilities=self.capabilities,
            tls_context=self.tls_context,
            proxy_trusted=self.proxy_trusted,
            max_message_size=settings.limits.max_message_size,
            clock=self.clock,
            pregreet_ttl=settings.pregreet.ttl,
            auth=settings.auth.mode == "auto",
            tarpit=self.tarpit,
            backend_pool=self.backend_pool,
            masquerade=self.masquerade,
        )

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        inner = self.store or open_store(
            self.settings.store.url, clock=self.clock, timeout=self.settings.store.timeout
        )
        unreachable: StoreError | None = None
        try:
            await inner.open()
        except StoreError as exc:
            if not inner.remote or isinstance(exc, StoreUnusable):
                raise  # a file that cannot be opened, a wrong password: the operator acts
            unreachable = exc
        self.store = GuardedStore(
            inner, on_failure=self.store_failed, on_recovery=self.store_recovered
        )
        if unreachable is not None:
            # A front door opens and answers per store.on_error (as when the store goes
            # away later) rather than leaving port 25 closed; the store is tried again
            # every few seconds and used as soon as it answers.
            log.warning(
                "%s; starting without it: store.on_error = %s until it answers",
                unreachable,
                self.settings.store.on_error,
            )
            self.store.start_down(unreachable)
        if self.resolver is None:
            self.resolver = Resolver.from_settings(
                self.settings.dns, observe=self.metrics.dns_seconds.observe
            )
        self.decider = Decider(lambda: self.policy, self.store, self.resolver, clock=self.clock)
        self._watch_default_gateways()
        self.services = self._services()
        with contextlib.suppress(StoreError):  # unreachable: the chore tries again
            await self._refresh_dynamic()
        why = await probe_backend(self.backend_config, self.capabilities)
        if why is not None:
            log.warning(
                "backend %s:%s not answering (%s): clients get 451 4.4.1 until it is back",
                self.settings.backend.host,
                self.settings.backend.port,
                why,
            )
        await self._bind()
        with contextlib.suppress(StoreError):
            await self._heartbeat()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(SWEEP_EVERY, self._sweep)),
            loop.create_task(self._every(DYNAMIC_POLL_EVERY, self._refresh_dynamic)),
            loop.create_task(self._every(PROBE_EVERY, self._probe)),
            loop.create_task(self._every(HEARTBEAT_EVERY, self._heartbeat)),
            loop.create_task(self._every(STORE_CHECK_EVERY, self._check_store)),
            loop.create_task(self._every(CERTIFICATE_CHECK_EVERY, self._check_certificate)),
        ]
        if self.serves_web:
            await self._start_web()
        if self.worker is None:  # a supervisor does these for its workers
            await self._start_endpoint()
            with contextlib.suppress(StoreError):
                await self._count_records()
            self._tasks.append(loop.create_task(self._every(COUNT_EVERY, self._count_records)))
        log.info(
            "onajimi%s listening on %s as %s, relaying to %s:%s, store %s",
            "" if self.worker is None else f" worker {self.worker}",
            ", ".join(self.bound),
            self.settings.listen.hostname,
            self.settings.backend.host,
            self.settings.backend.port,
            self.store.describe(),
        )

    def _watch_default_gateways(self) -> None:
        """Read the default gateways once (the same in a container as anywhere else)."""
        if self.default_gateways is None:
            self.default_gateways = read_default_gateways()
        watch = MasqueradeWatch(self.default_gateways, self.clock)
        self.masquerade = watch if watch.gateways else None  # none: nothing to count
        if watch.gateways:
            log.debug(
                "watching for clients masqueraded by the default gateway %s",
                ", ".join(map(str, watch.gateways)),
            )

    async def _bind(self) -> None:
        self._servers = await listen_smtp(
            self.settings.listen.addresses,
            self._new_session,
            reuse_port=self.settings.server.workers > 1,
        )

    def _new_session(self) -> GatewaySMTP:
        assert self.services is not None
        return GatewaySMTP(self.services)

    async def _start_endpoint(self) -> None:
        try:
            self.endpoint = await start_management(
                self.settings.metrics.listen, self.metrics.exposition, self.health
            )
        except UserError:
            for server in self._servers:
                server.close()
            raise

    async def _start_web(self) -> None:
        """The sender's and administrator's pages on web.listen (BindError: one line)."""
        assert self.settings.web.listen is not None and self.observer.recent is not None
        backing = Backing(
            settings=lambda: self.settings,
            decider=lambda: self.decider,
            store=lambda: self.store,
            recent=self.observer.recent,
            entries_changed=self._entries_changed,
            clock=self.clock,
            worker=self.worker,
        )
        try:
            self.web = WebServer(backing)
            await self.web.start(self.settings.web.listen)
        except UserError:
            self.web = None
            for server in self._servers:
                server.close()
            raise

    async def _entries_changed(self) -> None:
        """The admin page changed an entry: this process uses it from the next session
        (others on the store see the generation change within DYNAMIC_POLL_EVERY)."""
        await self._refresh_dynamic()

    async def health(self) -> str | None:
        """None when the store answers; else what is wrong (for /healthz)."""
        return await store_health(self.store)

    async def _check_store(self) -> None:
        """Say it once when the store needs the operator (a SQLite file deleted, say)."""
        problem = await self.store.check()
        if problem is not None and problem != self._store_problem:
            log.error("%s", problem)
        self._store_problem = problem

    async def _check_certificate(self) -> None:
        """certbot (or any ACME client) renewed the files: new sessions get them, sessions
        already encrypted keep what they have. Files that do not load yet (half written)
        keep the old context, and are tried again at the next check."""
        certificate = self.certificate
        if certificate is None or certificate.self_signed or not certificate.changed():
            return
        try:
            context, certificate = tls_for(self.settings)
        except ConfigError as exc:
            if self._tls_problem != certificate.stamp:  # said once, until they load
                log.error("tls: the certificate files changed but do not load: %s", exc)
                self._tls_problem = certificate.stamp
            return
        self._tls_problem = None
        self.tls_context, self.certificate = context, certificate
        self.services = self._services()
        log.info("tls: %s changed: new sessions get it", certificate.cert)

    async def _count_records(self) -> None:
        self.metrics.store_counts(await self.store.counts())

    async def _heartbeat(self, ttl: float = 3 * HEARTBEAT_EVERY) -> None:
        """Tell `onajimi status` (anywhere this store is seen) that this gateway is alive."""
        beat = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "listen": self.bound,
            "started": self.started,
            "sessions": len(self.sessions),
        }
        await self.store.set_meta(self.heartbeat_name, json.dumps(beat), ttl=ttl)

    @property
    def bound(self) -> list[str]:
        """Every listening address as HOST:PORT (with the real port when 0 was asked)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    async def _every(self, seconds: float, chore: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await chore()
            except StoreError:
                pass  # the store guard has logged and counted it
            except Exception:
                log.exception("background chore %s failed", getattr(chore, "__name__", chore))

    async def _sweep(self) -> None:
        while await self.store.sweep(limit=1000) == 1000:
            await asyncio.sleep(0)  # let sessions run between batches

    async def _probe(self) -> None:
        why = await probe_backend(self.backend_config, self.capabilities)
        if why is not None:
            log.warning("backend probe failed: %s", why)

    async def _refresh_dynamic(self) -> None:
        """Pick up `onajimi allow|deny` changes (and entries that expired)."""
        generation = await self.store.generation()
        if generation == self._dynamic_generation and self.clock() < self._dynamic_expiry:
            return
        allow = await self.store.entries(Role.ALLOW.value)
        deny = await self.store.entries(Role.DENY.value)
        self._dynamic = (
            dynamic_list([(e.text, e.comment) for e in allow], Role.ALLOW),
            dynamic_list([(e.text, e.comment) for e in deny], Role.DENY),
        )
        self.policy = self._static_policy.with_dynamic(*self._dynamic)
        expiries = [e.expires for e in (*allow, *deny) if e.expires is not None]
        self._dynamic_expiry = min(expiries, default=math.inf)
        if self._dynamic_generation is not None:
            log.info("dynamic lists reloaded: %d allow, %d deny", len(allow), len(deny))
        self._dynamic_generation = generation

    def reload(self, config_path: str) -> bool:
        """SIGHUP: a configuration that no longer loads keeps the old one running."""
        try:
            settings = load_settings(config_path)
            old = self.settings
            for key in ("listen", "store", "server"):
                if getattr(settings, key) != getattr(old, key):
                    log.warning("reload: [%s] changes need a restart; keeping the old values", key)
            if settings.web.listen != old.web.listen:
                log.warning("reload: web.listen changes need a restart; the pages stay as they are")
            self._apply(settings)
            if self.web is not None:
                self.web.reload(settings)
        except UserError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return False
        self._dynamic_generation = None  # rebuild dynamic entries on top of the new lists
        asyncio.get_running_loop().create_task(self._refresh_dynamic())
        log.info("configuration reloaded from %s", config_path)
        return True

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting; sessions get `grace` seconds to finish; then close everything."""
        for server in self._servers:
            server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        goodbye = f"{replies.shutting_down(self.settings.listen.hostname)}\r\n".encode()
        for session in self.sessions:
            transport = session.transport
            if transport is not None and not transport.is_closing():
                transport.write(goodbye)
                transport.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.endpoint is not None:
            await self.endpoint.stop()
        if self.web is not None:
            await self.web.stop()
        if self.store is not None and self._servers:
            # A heartbeat that expires now: status stops reporting this gateway at once.
            with contextlib.suppress(StoreError):
                await self._heartbeat(ttl=0)
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self.backend_pool is not None:
            self.backend_pool.close()
        if self.resolver is not None:
            self.resolver.close()
        if self.store is not None:
            await self.store.close()
        self._stopped.set()

    async def serve(self, config_path: str) -> None:
        """Run until SIGTERM/SIGINT; SIGHUP reloads."""
        try:
            await self.start()
        except BaseException:
            await self.stop(grace=0)
            raise
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload, config_path)
        await stopping.wait()
        log.info("stopping: no new connections; %d sessions get up to 30 s", len(self.sessions))
        await self.stop(grace=30.0)

    # -- for the store guard -------------------------------------------------------------
    def store_failed(self, exc: StoreError) -> None:
        self.observer.store_failed(exc)

    def store_recovered(self) -> None:
        self.observer.store_recovered()
