"""The running gateway: settings in, listening sockets out, and everything in between.

`Gateway` assembles the policy, store, resolver, decider and relay configuration, binds
the listeners, runs the background chores, and owns the lifecycle:

    start()      open the store, build the policy, probe the backend, bind (errors: one line)
    reload()     SIGHUP: re-read config and lists; keep the old ones if the new do not load
    stop(grace)  SIGTERM: stop accepting, let sessions finish for `grace` seconds, close
    serve()      start, then wait for SIGTERM/SIGINT, reload on SIGHUP

Background chores: sweep expired store records, pick up dynamic allow/deny entries
(polling the store's generation number), re-learn the backend's EHLO keywords, count
store records for the metrics, write a heartbeat `onajimi status` can see, and check
that the store needs no operator (a SQLite file deleted under it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from gateway import __version__, logs
from gateway.config import Endpoint, Settings, load_settings
from gateway.decider import Decider, RcptDecision
from gateway.endpoint import Endpoint as ManagementEndpoint
from gateway.errors import ConfigError, StoreError, UserError
from gateway.metrics import Metrics
from gateway.policy.build import build_policy, dynamic_list
from gateway.policy.decision import Policy, Verdict
from gateway.policy.lists import ClientList, Role
from gateway.policy.net import NetSet
from gateway.relay.backend import BackendConfig, BackendError, Capabilities, probe_backend
from gateway.resolver.resolver import Resolver
from gateway.smtp.handler import Handler
from gateway.smtp.limits import ConnectionLimits
from gateway.smtp.protocol import GatewaySMTP
from gateway.smtp.state import SessionState, Transaction
from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.guard import GuardedStore

log = logging.getLogger("onajimi")

SWEEP_EVERY = 60.0
DYNAMIC_POLL_EVERY = 2.0
PROBE_EVERY = 300.0
COUNT_EVERY = 30.0
HEARTBEAT_EVERY = 10.0
STORE_CHECK_EVERY = 5.0
HEARTBEAT_PREFIX = "heartbeat:"


class BindError(UserError):
    """A listening address could not be bound (the message says which and why)."""


def _bind_reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (is another MTA or gateway listening there?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this host"
    if exc.errno == errno.EAFNOSUPPORT:
        return "IPv6 is not available on this host"
    return exc.strerror or str(exc)


def tls_context_for(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls.cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(settings.tls.cert), str(settings.tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{settings.source}: tls.cert / tls.key: cannot load: {exc}") from None
    return context


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
    ) -> None:
        self.own_logging = own_logging  # `onajimi run` owns the process's log setup
        self.worker = worker  # a worker of a supervisor: it serves metrics and counts records
        self.settings = settings
        self.clock = clock
        self.store = store
        self.resolver = resolver
        self.handler = Handler(self)
        self.metrics = Metrics()
        self.endpoint: ManagementEndpoint | None = None
        self.heartbeat_name = f"{HEARTBEAT_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.started = time.time()
        self.capabilities = Capabilities()
        self.sessions: set[GatewaySMTP] = set()
        self.limits = ConnectionLimits(
            settings.limits.max_connections,
            settings.limits.max_connections_per_client,
            settings.limits.stress_threshold,
        )
        self.stressed = False  # as last seen by load_changed
        self._dynamic = (ClientList(Role.ALLOW), ClientList(Role.DENY))
        self.policy: Policy  # current: static lists + dynamic entries
        self._dynamic_generation: int | None = None
        self._store_problem: str | None = None
        self._dynamic_expiry = math.inf
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._apply(settings)

    def _apply(self, settings: Settings) -> None:
        """Everything derived from settings (at start and at reload); raises ConfigError."""
        static = build_policy(settings)
        tls_context = tls_context_for(settings)
        proxy_trusted: NetSet[str] = NetSet()
        for network in settings.listen.proxy_trusted:
            proxy_trusted.add(network, str(network))
        self.settings = settings
        self._static_policy = static
        self.policy = static.with_dynamic(*self._dynamic)
        self.tls_context = tls_context
        self.proxy_trusted = proxy_trusted
        self.backend_config = BackendConfig.from_settings(settings)
        self.limits.reconfigure(
            settings.limits.max_connections,
            settings.limits.max_connections_per_client,
            settings.limits.stress_threshold,
        )
        if self.own_logging:
            logs.configure(settings.log.level, settings.log.format)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        inner = self.store or open_store(
            self.settings.store.url, clock=self.clock, timeout=self.settings.store.timeout
        )
        await inner.open()
        self.store = GuardedStore(
            inner, on_failure=self.store_failed, on_recovery=self.store_recovered
        )
        if self.resolver is None:
            self.resolver = Resolver.from_settings(
                self.settings.dns, observe=self.metrics.dns_seconds.observe
            )
        self.decider = Decider(lambda: self.policy, self.store, self.resolver, clock=self.clock)
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
        await self._heartbeat()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(SWEEP_EVERY, self._sweep)),
            loop.create_task(self._every(DYNAMIC_POLL_EVERY, self._refresh_dynamic)),
            loop.create_task(self._every(PROBE_EVERY, self._probe)),
            loop.create_task(self._every(HEARTBEAT_EVERY, self._heartbeat)),
            loop.create_task(self._every(STORE_CHECK_EVERY, self._check_store)),
        ]
        if self.worker is None:  # a supervisor does these for its workers
            await self._start_endpoint()
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

    async def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        endpoints = self.settings.listen.addresses
        failures: list[tuple[Endpoint, OSError]] = []
        for endpoint in endpoints:
            try:
                server = await loop.create_server(
                    lambda: GatewaySMTP(self),
                    host=endpoint.host,
                    port=endpoint.port,
                    reuse_address=True,
                    reuse_port=self.settings.server.workers > 1 or None,
                    backlog=1024,
                )
            except OSError as exc:
                failures.append((endpoint, exc))
                continue
            self._servers.append(server)
        for endpoint, exc in failures:
            unavailable_v6 = endpoint.host == "::" and exc.errno in (
                errno.EAFNOSUPPORT,
                errno.EADDRNOTAVAIL,
            )
            if unavailable_v6 and self._servers:
                log.warning("listen.addresses: %s skipped: %s", endpoint, _bind_reason(exc))
                continue
            for server in self._servers:
                server.close()
            raise BindError(f"listen.addresses: cannot listen on {endpoint}: {_bind_reason(exc)}")

    async def _start_endpoint(self) -> None:
        listen = self.settings.metrics.listen
        if listen is None:
            return
        endpoint = ManagementEndpoint(self.metrics.exposition, self.health)
        try:
            await endpoint.start(listen.host, listen.port)
        except OSError as exc:
            for server in self._servers:
                server.close()
            raise BindError(
                f"metrics.listen: cannot listen on {listen}: {_bind_reason(exc)}"
            ) from None
        self.endpoint = endpoint

    async def health(self) -> str | None:
        """None when the store answers; else what is wrong (for /healthz)."""
        try:
            await self.store.generation()
        except StoreError as exc:
            return str(exc)
        return await self.store.check()

    async def _check_store(self) -> None:
        """Say it once when the store needs the operator (a SQLite file deleted, say)."""
        problem = await self.store.check()
        if problem is not None and problem != self._store_problem:
            log.error("%s", problem)
        self._store_problem = problem

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
            self._apply(settings)
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
        for session in list(self.sessions):
            transport = session.transport
            if transport is not None and not transport.is_closing():
                transport.write(
                    f"421 4.3.2 {self.settings.listen.hostname} shutting down\r\n".encode()
                )
                transport.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.endpoint is not None:
            await self.endpoint.stop()
        if self.store is not None and self._servers:
            # A heartbeat that expires now: status stops reporting this gateway at once.
            with contextlib.suppress(StoreError):
                await self._heartbeat(ttl=0)
        for server in self._servers:
            server.close()
            await server.wait_closed()
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

    # -- sessions -----------------------------------------------------------------------
    def session_started(self, server: GatewaySMTP) -> None:
        self.sessions.add(server)
        self.metrics.connections.inc()
        self.metrics.sessions_active.inc()

    def session_ended(self, server: GatewaySMTP) -> None:
        if server in self.sessions:
            self.sessions.discard(server)
            self.metrics.sessions_active.dec()
        state = server.state
        if state.counted and state.address is not None:
            self.limits.release(state.address)
            state.counted = False
            self.load_changed()
        if state.backend is not None:  # the client vanished: abandon the backend transaction
            state.backend.abort()
            state.backend = None
        for task in (state.assessment_task, state.snapshot_task):
            if task is not None and not task.done():
                task.cancel()

    # -- limits and stress (smtp/limits.py) ---------------------------------------------
    def command_timeout(self) -> float:
        limits = self.settings.limits
        return limits.stress_command_timeout if self.stressed else limits.command_timeout

    def junk_limit(self) -> int:
        limits = self.settings.limits
        return limits.stress_junk_commands if self.stressed else limits.junk_commands

    def load_changed(self) -> None:
        """A session was admitted or released: stress begins or ends here. When it
        begins, every open session's deadline moves in too: idle connections are what
        stress is about, and they send no command that would move it."""
        stressed = self.limits.stressed
        if stressed == self.stressed:
            return
        self.stressed = stressed
        limits = self.settings.limits
        if stressed:
            log.warning(
                "under stress: %d of %d connections in use; command timeout %gs, "
                "junk command limit %d until the load drops",
                self.limits.active,
                limits.max_connections,
                limits.stress_command_timeout,
                limits.stress_junk_commands,
            )
            for session in self.sessions:
                session.shorten_timeout(limits.stress_command_timeout)
        else:
            log.info(
                "stress over: %d of %d connections in use",
                self.limits.active,
                limits.max_connections,
            )

    def limit_reached(self, state: SessionState, limit: str) -> None:
        """A session refused or ended by a limit (the label of onajimi_limit_refusals_total)."""
        self.metrics.limit_refusals.labels(limit).inc()
        self.event("limit", state, limit=limit)

    async def refresh_familiar(self, keys: set[str]) -> None:
        # A refresh lost to an outage costs nothing but an earlier expiry.
        with contextlib.suppress(StoreError):
            await self.decider.delivered(keys)

    # -- log lines ----------------------------------------------------------------------
    def decision(
        self,
        state: SessionState,
        verdict: Verdict,
        *,
        sender: str | None = None,
        recipient: str | None = None,
        decision: RcptDecision | None = None,
    ) -> None:
        assessment = state.assessment
        step = decision.step if decision is not None else None
        fresh = step is not None and not decision.repeated
        self.metrics.decision(verdict.action, verdict.reason, step.retry if fresh else None)
        logs.emit(
            logs.decision_log,
            "decision",
            {
                "session": state.id,
                "client": state.address_text,
                "ptr": assessment.ptr if assessment is not None else "",
                "helo": state.helo,
                "from": _angle(sender),
                "to": _angle(recipient),
                "action": verdict.action.value,
                "reason": verdict.reason.value,
                "key": (decision.key if decision is not None and decision.key else None)
                or (assessment.client_key if assessment is not None else ""),
                "attempt": step.attempt if step is not None else "",
                # How a deferred attempt was judged, and the count the penalty box goes by.
                "kind": step.kind.value if step is not None and step.kind else "",
                "early": step.early if step is not None and step.kind else "",
                "detail": verdict.detail,
            },
        )

    def relayed(
        self,
        state: SessionState,
        transaction: Transaction,
        envelope,
        result: str,
        reply: str,
        seconds: float | None,
    ) -> None:
        self.metrics.relayed(result, seconds)
        recipients = envelope.rcpt_tos
        assessment = state.assessment
        logs.emit(
            logs.relay_log,
            "relay",
            {
                "session": state.id,
                "id": transaction.id,
                "client": state.address_text,
                "ptr": assessment.ptr if assessment is not None else "",
                "helo": state.helo,
                "from": _angle(transaction.sender),
                "to": ",".join(f"<{r}>" for r in recipients[:5])
                + ("..." if len(recipients) > 5 else ""),
                "rcpts": len(recipients),
                "size": len(envelope.original_content or b""),
                "result": result,
                "reply": reply.replace("\r\n", " / "),
                "seconds": "" if seconds is None else f"{seconds:.3f}",
            },
        )

    def event(self, name: str, state: SessionState, **fields: Any) -> None:
        logs.emit(logs.log, name, {"session": state.id, "client": state.address_text, **fields})

    def backend_failed(self, state: SessionState, exc: BackendError) -> None:
        log.warning("session %s: %s", state.id, exc)

    def store_failed(self, exc: StoreError) -> None:
        """From the store guard, at most once per retry interval while the store is down."""
        self.metrics.store_errors.inc()
        self.metrics.store_up.set(0)
        action = "pass" if self.settings.store.on_error == "pass" else "tempfail (451 4.3.0)"
        log.error("state store unavailable (%s); clients who need it: %s", exc, action)

    def store_recovered(self) -> None:
        self.metrics.store_up.set(1)
        log.warning("state store reachable again: normal decisions resume")


def _angle(address: str | None) -> str | None:
    if address is None:
        return None
    return address if address == "<>" else f"<{address}>"
