"""`fleet serve --workers N`: N ingest processes sharing the device ports, the other roles in one more.

One process uses one core; the device listeners set ``SO_REUSEPORT`` (:mod:`fleet.ingest.listener`), so N
``fleet serve --role ingest`` processes can share every device port and the kernel spreads connections
over them. This supervisor runs them on one machine:

* **Once per machine, here:** the embedded PostgreSQL (when no database is configured; the children get
  its socket DSN and never start one of their own) and the migrations (children start with
  ``DB_MIGRATE_ON_START=0``). The other roles (api, sync, maintenance) run in *one* child, so periodic jobs
  (partitions, retention, backups) run once, not N times; they also take advisory locks in the database
  for deployments that run several such processes anyway.
* **Children:** ``ingest-1`` … ``ingest-N`` (``--role ingest``) and ``roles`` (everything else asked for).
  Each tells the supervisor when it is serving (a pipe, ``FLEET_READY_FD``). A child that exits on its own
  is restarted after a back-off (1 s doubling to 30 s; reset after a minute of good running).
* **Signals:** SIGTERM/SIGINT are forwarded to every child, which stop gracefully (an ingest child stops
  accepting, commits what it received and sends those ACKs, then closes its connections); the supervisor
  waits for them, stops the embedded PostgreSQL and exits 0. SIGHUP is forwarded (settings reload).
  SIGUSR2 replaces the ingest children one at a time - start the new one, wait until it listens, SIGTERM
  the old one - which is the zero-downtime upgrade of the ingest tier after installing a new version.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from fleet.db import Database
from fleet.db.server_record import remove_record, write_record
from fleet.errors import ConfigError, FleetError
from fleet.ops import systemd

if TYPE_CHECKING:
    from fleet.config import Settings

log = structlog.get_logger(__name__)

READY_FD_ENV = "FLEET_READY_FD"  # a child writes one line to this descriptor once it serves
SUPERVISED_ENV = "FLEET_SUPERVISOR_PID"  # set in children: the supervisor owns DATA_DIR/server.json
READY_TIMEOUT_SEC = 120.0
STOP_TIMEOUT_SEC = 30.0  # an ingest child's grace (10 s) plus the pool and bus closing, with room
BACKOFF_MIN_SEC = 1.0
BACKOFF_MAX_SEC = 30.0
PR_SET_PDEATHSIG = 1  # prctl(2)
STABLE_AFTER_SEC = 60.0  # a child that ran this long crashed afresh: its back-off restarts from the minimum


class ChildFailed(FleetError):
    """A child process exited before it was serving."""


def notify_ready() -> None:
    """Tell the supervisor (if any) that this process serves; called once by `fleet serve`."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except (OSError, ValueError):
        log.warning("supervisor_ready_notify_failed", fd=fd)


def supervised() -> bool:
    """True in a child of `fleet serve --workers`."""
    return SUPERVISED_ENV in os.environ


def stop_with_supervisor() -> None:
    """In a child: get SIGTERM (a graceful stop) when the supervisor dies, even by SIGKILL (Linux).

    Without it, a supervisor killed outright would leave its children serving, unsupervised, with the
    embedded PostgreSQL possibly gone.
    """
    supervisor = os.environ.get(SUPERVISED_ENV)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Child:
    """One supervised process slot (its process changes on restarts and rolling replacements)."""

    name: str
    roles: list[str]
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_MIN_SEC
    # Held while the slot's process is being replaced (crash restart or rolling restart), so the two
    # never race and leave an unsupervised process behind.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Supervisor:
    """Starts, watches and stops the children of one `fleet serve --workers N`."""

    def __init__(self, settings: Settings, roles: list[str], workers: int) -> None:
        if workers < 1:
            raise ConfigError("--workers must be at least 1")
        if "ingest" not in roles:
            raise ConfigError("--workers runs ingest processes: the roles must include ingest")
        self.settings = settings
        self.children = [Child(f"ingest-{i}", ["ingest"]) for i in range(1, workers + 1)]
        others = [role for role in roles if role != "ingest"]
        if others:
            self.children.append(Child("roles", others))
        self.env: dict[str, str] = {}
        self.stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._rolling: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.subprocess.Process] = set()  # replaced, stopping gracefully
        self._ready = False  # every child started once (SIGUSR2 is ignored before)

    # --- the whole run ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Prepare the database, start every child, supervise until SIGTERM/SIGINT, stop them all."""
        loop = asyncio.get_running_loop()
        db = Database(self.settings)
        await db.start(pool=False)  # embedded server (if any) and migrations, once for the machine
        record = write_record(self.settings)
        try:
            self.env = self._child_env(db)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
            loop.add_signal_handler(signal.SIGUSR2, self.rolling_restart)
            # Start in parallel (each waits for its ready line); a failure at start stops everything.
            results = await asyncio.gather(
                *(self._start(child) for child in self.children), return_exceptions=True
            )
            failed = [result for result in results if isinstance(result, BaseException)]
            if failed:
                await self._stop_all()
                raise failed[0]
            self._ready = True
            self._print_banner()
            notify_ready()  # a supervisor may itself be supervised (benchmarks, a service manager)
            systemd.notify(f"READY=1\nSTATUS=supervising {len(self.children)} processes")
            interval = systemd.watchdog_interval()
            if interval is not None:
                self._watchers.append(asyncio.create_task(self._feed_watchdog(interval), name="watchdog"))
            log.info("supervisor_ready", children={c.name: self._pid(c) for c in self.children})
            self._watchers += [
                asyncio.create_task(self._watch(child), name=f"watch:{child.name}") for child in self.children
            ]
            await self.stopping.wait()
            log.info("supervisor_stopping")
            systemd.notify("STOPPING=1")
            tasks = [*self._watchers, *([self._rolling] if self._rolling is not None else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_all()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
                loop.remove_signal_handler(signum)
            remove_record(record)
            await db.close()
        log.info("supervisor_stopped")

    def _child_env(self, db: Database) -> dict[str, str]:
        env = dict(os.environ)
        env[SUPERVISED_ENV] = str(os.getpid())
        # systemd talks to the supervisor (the unit's main process) only: READY, watchdog, STOPPING.
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        env["DB_MIGRATE_ON_START"] = "0"  # done above, once
        if self.settings.uses_embedded_db:
            # The children use the server this process started (a Unix socket under DATA_DIR/pg).
            assert db.owner_dsn is not None and db.app_dsn is not None
            env["DATABASE_URL"] = db.owner_dsn
            env["DATABASE_APP_URL"] = db.app_dsn
        return env

    def _print_banner(self) -> None:
        ingest = [c for c in self.children if c.roles == ["ingest"]]
        lines = [
            f"Fleet Server supervisor (pid {os.getpid()}): {len(ingest)} ingest processes sharing the device "
            f"ports (pids {', '.join(str(self._pid(c)) for c in ingest)})",
        ]
        lines += [
            f"  {c.name}: roles {', '.join(c.roles)} (pid {self._pid(c)})"
            for c in self.children
            if c not in ingest
        ]
        lines.append("  Stop with Ctrl+C or SIGTERM; SIGUSR2 replaces the ingest processes one by one.")
        print("\n".join(lines), flush=True)

    @staticmethod
    def _pid(child: Child) -> int | None:
        return child.proc.pid if child.proc is not None else None

    # --- one child ---------------------------------------------------------------------------------------
    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        """Start a process for ``child``'s roles and return it once it serves (ChildFailed otherwise)."""
        read_fd, write_fd = os.pipe()
        env = {**self.env, READY_FD_ENV: str(write_fd)}
        command = [sys.executable, "-m", "fleet", "serve", *(a for r in child.roles for a in ("--role", r))]
        try:
            proc = await asyncio.create_subprocess_exec(*command, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        try:
            ready = await self._wait_ready(read_fd, proc)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        finally:
            os.close(read_fd)
        if not ready:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise ChildFailed(f"{child.name} (pid {proc.pid}) exited before serving (code {proc.returncode})")
        log.info("supervisor_child_ready", child=child.name, pid=proc.pid, roles=child.roles)
        return proc

    @staticmethod
    async def _wait_ready(read_fd: int, proc: asyncio.subprocess.Process) -> bool:
        loop = asyncio.get_running_loop()
        line: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            if not line.done():
                try:
                    line.set_result(os.read(read_fd, 64))
                except OSError:
                    line.set_result(b"")

        loop.add_reader(read_fd, readable)
        try:
            # EOF (b"") means the child closed the pipe without saying ready: it exited.
            data = await asyncio.wait_for(line, READY_TIMEOUT_SEC)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(read_fd)
        return data.startswith(b"ready") and proc.returncode is None

    async def _start(self, child: Child) -> None:
        child.proc = await self._spawn(child)
        child.started_at = time.monotonic()

    async def _watch(self, child: Child) -> None:
        """Restart ``child`` whenever its process exits without being asked to (with a back-off)."""
        while True:
            proc = child.proc
            assert proc is not None
            code = await proc.wait()
            if self.stopping.is_set():
                return
            async with child.lock:
                if child.proc is not proc:
                    continue  # replaced on purpose (a rolling restart): watch the new one
                await self._restart(child, proc, code)

    async def _restart(self, child: Child, proc: asyncio.subprocess.Process, code: int) -> None:
        ran = time.monotonic() - child.started_at
        if ran > STABLE_AFTER_SEC:
            child.backoff = BACKOFF_MIN_SEC
        log.error(
            "supervisor_child_exited",
            child=child.name,
            pid=proc.pid,
            code=code,
            ran_s=round(ran, 1),
            restart_in_s=child.backoff,
        )
        await asyncio.sleep(child.backoff)
        child.backoff = min(child.backoff * 2, BACKOFF_MAX_SEC)
        try:
            await self._start(child)
            child.restarts += 1
        except (ChildFailed, OSError) as err:
            # child.proc stays the exited process: its wait() returns at once, the loop tries again.
            log.error("supervisor_child_restart_failed", child=child.name, error=str(err))

    async def _feed_watchdog(self, interval: float) -> None:
        """Ping systemd's watchdog while this loop runs (each child is watched by the supervisor itself)."""
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    # --- signals ---------------------------------------------------------------------------------------------
    def _forward(self, signum: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                child.proc.send_signal(signum)
        log.info("supervisor_signal_forwarded", signal=signal.Signals(signum).name)

    def rolling_restart(self) -> None:
        """Replace every ingest child, one at a time, by a fresh process (the installed code)."""
        if not self._ready:
            log.info("supervisor_rolling_restart_ignored", reason="still starting")
            return
        if self._rolling is not None and not self._rolling.done():
            log.info("supervisor_rolling_restart_busy")
            return
        self._rolling = asyncio.create_task(self._roll(), name="rolling-restart")

    async def _roll(self) -> None:
        log.info("supervisor_rolling_restart_started")
        for child in self.children:
            if child.roles != ["ingest"] or self.stopping.is_set():
                continue
            async with child.lock:
                if not await self._replace(child):
                    return  # the old processes keep serving
        log.info("supervisor_rolling_restart_done")

    async def _replace(self, child: Child) -> bool:
        """Start a new process for ``child`` next to the old one, then stop the old one gracefully."""
        old = child.proc
        try:
            new = await self._spawn(child)  # listening next to the old one (SO_REUSEPORT)
        except (ChildFailed, OSError) as err:
            log.error("supervisor_rolling_restart_failed", child=child.name, error=str(err))
            return False
        child.proc, child.started_at = new, time.monotonic()
        if old is not None and old.returncode is None:
            self._retiring.add(old)
            old.send_signal(signal.SIGTERM)  # stop accepting, commit, ACK, close: trackers move over
            try:
                await asyncio.wait_for(old.wait(), STOP_TIMEOUT_SEC)
            except TimeoutError:
                old.kill()
                await old.wait()
            # Not in `finally`: cancelled while waiting (SIGTERM to the supervisor), _stop_all waits for it.
            self._retiring.discard(old)
        log.info("supervisor_child_replaced", child=child.name, old_pid=old.pid if old else None, pid=new.pid)
        return True

    async def _stop_all(self) -> None:
        procs = [c.proc for c in self.children if c.proc is not None and c.proc.returncode is None]
        procs += [proc for proc in self._retiring if proc.returncode is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        if not procs:
            return
        _done, pending = await asyncio.wait(
            [asyncio.ensure_future(proc.wait()) for proc in procs], timeout=STOP_TIMEOUT_SEC
        )
        for proc in procs:
            if proc.returncode is None:
                log.warning("supervisor_child_killed", pid=proc.pid)
                proc.kill()
                await proc.wait()
        for task in pending:
            task.cancel()


async def supervise(settings: Settings, roles: list[str], workers: int) -> None:
    """Run `fleet serve --workers N` until SIGTERM/SIGINT."""
    await Supervisor(settings, roles, workers).run()
