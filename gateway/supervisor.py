"""`server.workers = N`: N gateway processes behind one supervisor.

Each worker is `onajimi run --worker` in its own process, binding every listen address
with SO_REUSEPORT: the kernel spreads connections across them, and a worker busy with a
large message never stalls the others. The supervisor

* checks the listen addresses first, so a port it may not bind is still one line, exit 2;
* leaves the web pages ([web]) to worker 0, after checking their port can be bound
  (runtime.Gateway.serves_web says why a worker and not the supervisor);
* serves the one metrics endpoint: prometheus_client's multiprocess mode sums what every
  worker recorded (each process writes its figures to files in a shared directory,
  which must be set before prometheus_client is imported anywhere);
* counts store records for the metrics (once, not once per worker);
* restarts a worker that dies (with back-off), but gives up with exit 2 when a fresh
  worker fails at start-up with status 2: that is configuration, not bad luck;
* forwards SIGHUP (every worker reloads) and SIGTERM (every worker drains and stops).

When to raise `workers`: one process handles about a core's worth of SMTP. Raise it to
the number of cores when the gateway's CPU is busy (the CPU figures of `make bench` or
top show it), and keep the state store shared (SQLite on one host, Redis across hosts).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import Settings
from gateway.errors import UserError
from gateway.listening import (
    BindError,
    check_listen_addresses,
    check_web_address,
    start_management,
)
from gateway.management import store_health

log = logging.getLogger("onajimi.supervisor")

RESTART_BACKOFF_MAX = 30.0
STARTUP_WINDOW = 5.0  # a worker failing within this many seconds of its start is "at start-up"
GRACE = 35.0  # workers get their 30 s drain and a little more


def die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies, even by SIGKILL, so no
    orphan keeps holding port 25 (Linux; elsewhere workers outlive a killed supervisor)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_command() -> list[str]:
    """A worker: this interpreter, this gateway package. `-P` keeps the working
    directory off sys.path: a directory named `gateway` where the supervisor was started
    (../shared/peers has one) shadowed the package, and every worker died at start."""
    return [sys.executable, "-P", "-m", "gateway"]


def worker_environment() -> dict[str, str]:
    """PYTHONPATH names where this gateway package is, first: a checkout run without
    installing still finds it, and nothing in the working directory comes before it."""
    home = str(Path(__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": home + (os.pathsep + inherited if inherited else "")}


class Supervisor:
    def __init__(self, settings: Settings, config_path: str, metrics_dir: str) -> None:
        self.settings = settings
        self.config_path = config_path
        self.metrics_dir = metrics_dir
        self.workers: dict[int, asyncio.subprocess.Process] = {}  # slot -> process
        self.started: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.stopping = False
        self.exit_status = 0

    async def _spawn(self, slot: int) -> None:
        process = await asyncio.create_subprocess_exec(
            *worker_command(),
            "run",
            "-c",
            self.config_path,
            "--worker",
            str(slot),
            preexec_fn=die_with_parent,
            env=worker_environment(),
        )
        self.workers[slot] = process
        self.started[slot] = time.monotonic()
        log.info("worker %d started (pid %d)", slot, process.pid)
        asyncio.get_running_loop().create_task(self._watch(slot, process))

    async def _watch(self, slot: int, process: asyncio.subprocess.Process) -> None:
        status = await process.wait()
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid)
        if self.stopping or self.workers.get(slot) is not process:
            return
        lived = time.monotonic() - self.started[slot]
        if status == 2 and lived < STARTUP_WINDOW:
            log.error("worker %d failed at start-up (status 2): stopping", slot)
            self.exit_status = 2
            self.stop_event.set()
            return
        delay = self.backoff.get(slot, 0.5) if lived < STARTUP_WINDOW else 0.5
        self.backoff[slot] = min(delay * 2, RESTART_BACKOFF_MAX)
        log.error(
            "worker %d (pid %d) exited with status %s; restarting in %.1f s",
            slot,
            process.pid,
            status,
            delay,
        )
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._spawn(slot)

    def _signal_workers(self, signum: int) -> None:
        for process in self.workers.values():
            if process.returncode is None:
                process.send_signal(signum)

    async def run(self) -> int:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        from gateway.metrics import Metrics
        from gateway.store import open_store

        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        store = open_store(self.settings.store.url, timeout=self.settings.store.timeout)
        await store.open()
        metrics = Metrics()  # the supervisor's own figures (store records) go to the files too
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)

        async def health() -> str | None:
            alive = sum(p.returncode is None for p in self.workers.values())
            if alive < self.settings.server.workers:
                return f"{alive} of {self.settings.server.workers} workers running"
            return await store_health(store)

        try:
            management = await start_management(
                self.settings.metrics.listen, lambda: generate_latest(registry), health
            )
        except BindError:
            await store.close()
            raise

        for slot in range(self.settings.server.workers):
            await self._spawn(slot)
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self._signal_workers, signal.SIGHUP)

        async def count_records() -> None:
            while True:
                try:
                    metrics.store_counts(await store.counts())
                except Exception as exc:  # the workers report store trouble themselves
                    log.debug("record count failed: %s", exc)
                await asyncio.sleep(30)

        counter = loop.create_task(count_records())
        await self.stop_event.wait()
        self.stopping = True
        log.info("stopping %d workers", len(self.workers))
        self._signal_workers(signal.SIGTERM)
        waits = [p.wait() for p in self.workers.values() if p.returncode is None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), GRACE)
        except TimeoutError:
            self._signal_workers(signal.SIGKILL)
        counter.cancel()
        if management is not None:
            await management.stop()
        await store.close()
        return self.exit_status


METRICS_DIR_PREFIX = "onajimi-metrics-"


def remove_stale_metrics_dirs() -> None:
    """Metrics directories of supervisors that died without cleaning up (SIGKILL, OOM).

    Each is named after its supervisor's pid; one whose process is gone is removed, so
    kills over the months do not pile up files in the temporary directory."""
    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = path.name[len(METRICS_DIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            continue  # alive, someone else's


def supervise(settings: Settings, config_path: str, run_loop) -> int:
    """Run the supervisor until SIGTERM; returns the exit status."""
    check_listen_addresses(settings)
    check_web_address(settings)
    remove_stale_metrics_dirs()
    metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")
    # Before anything imports prometheus_client, here and in every worker (inherited).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return run_loop(Supervisor(settings, config_path, metrics_dir).run())
    except UserError:
        raise
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
