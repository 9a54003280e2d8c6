"""The supervisor's main loop (after gunicorn's Arbiter): single-threaded, no etcd client.

Signal handlers only enqueue the signal and poke a wakeup pipe; the loop waits on the pipes
of the API process and the workers plus that wakeup fd, runs each signal's handler, reaps
with waitpid(-1, WNOHANG) and respawns dead workers with jittered backoff, or marks them FATAL, and replaces hung ones
(link.supervisor.lifecycle: a worker process's life, its states in worker_states.py).
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, cast

from setproctitle import setproctitle

from link import logs, probe_budget
from link.vocabulary import protocol
from link.config import Config, ConfigError
from link.vocabulary.protocol import (BinderReport, BootFailed, CandidatesDone, ClaimReport, FailoverDone, Heartbeat, Message,
                           MetricsReport, NotifyReport, StateReport, WireReport)
from link.supervisor import lifecycle, observe, reload
from link.supervisor.boot_gate import BootGate
from link.supervisor.lifecycle import Watchdog
from link.supervisor.ops import ProcessOps
from link.supervisor.records import VipRecord
from link.supervisor.requests import RequestHandlers
from link.supervisor.sd_notify import Notifier
from link.supervisor.store import VipStore
from link.supervisor.systemd import SystemdLink
from link.supervisor.wire_link import WireLink
from link.supervisor.worker_states import WorkerEvent, WorkerState

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # workers that have not released their VIP by then are killed
API_BOOT_WINDOW = 3.0  # an API process dying sooner than this cannot serve: stop the agent
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class Arbiter:
    def __init__(self, config: Config, store: VipStore, ops: ProcessOps, clock: Callable[[], float] = time.monotonic,
                 env_file: str | None = None, notifier: Notifier | None = None,
                 open_wire: Callable[[Callable[[VipRecord, Message], bool]], WireLink] | None = None) -> None:
        self.config = config
        self.env_file = env_file
        self.priority = config.priority  # the host's; SIGUSR1/SIGUSR2 shift it, SIGHUP rereads it
        self.log_level = config.logger_level
        self.store = store
        self.ops = ops
        self.clock = clock
        self.vips: dict[str, VipRecord] = {}
        self.by_pid: dict[int, VipRecord] = {}
        self.api_pid: int | None = None
        self.api_conn: Connection | None = None
        self.api_started = 0.0
        self.signals: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = 0
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        # One selector for the supervisor's life, each pipe registered while it is open, with
        # its VIP record as the key's data: hundreds of workers each report every few
        # seconds, and rebuilding a selector over every pipe on each wake-up (what
        # multiprocessing's wait() does) made the supervisor's cost grow with the square of
        # the VIP count.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # Before any fork: takes NOTIFY_SOCKET out of the environment children inherit.
        self.systemd = SystemdLink(notifier or Notifier.from_environ(), config.fault_policy, clock)
        self.requests = RequestHandlers(self)  # the API process's requests (link.supervisor.requests)
        self.watchdog = Watchdog(ops, config.lease_ttl, clock)  # replaces hung workers
        # Every start waits its turn here: a bounded rate, a bounded number booting (link.supervisor.boot_gate).
        self.gate = BootGate(config.boot_concurrency, config.boot_rate, clock, self.vips, self._fork_worker)
        # The heartbeat between agents (link.supervisor.wire_link): opened at boot, in this loop.
        self._open_wire = open_wire
        self.wire: WireLink | None = None
        self._on_report = protocol.Dispatcher(protocol.Family.REPORT, {
            StateReport: self._state_report, BinderReport: observe.binder_report, MetricsReport: observe.metrics_report,
            BootFailed: observe.boot_failed, CandidatesDone: self.requests.candidates_done,
            FailoverDone: self.requests.failover_done,
            Heartbeat: lambda report, record: None,  # _worker_message noted that the worker is alive
            ClaimReport: observe.claim_report, NotifyReport: observe.notify_report,
            WireReport: lambda report, record: self.wire.report(report, record) if self.wire else None,
        })
        self._on_signal: dict[int, Callable[[], None]] = {
            signal.SIGTERM: lambda: self.begin_stop("SIGTERM"),
            signal.SIGINT: lambda: self.begin_stop("SIGINT"),
            signal.SIGCHLD: lambda: None,  # reaping happens on every loop turn
            signal.SIGHUP: self._reload_told,
            signal.SIGUSR1: lambda: self.set_priority(self.priority - 1, "SIGUSR1 (promote)"),
            signal.SIGUSR2: lambda: self.set_priority(self.priority + 1, "SIGUSR2 (demote)"),
        }

    # -- file descriptors a child must close ------------------------------------------------
    def open_fds(self) -> list[int]:
        fds = [self._wake_r, self._wake_w] + ([self.wire.fileno()] if self.wire is not None else [])
        conns = [r.conn for r in self.vips.values()] + [self.api_conn]
        fds += [c.fileno() for c in conns if c is not None and not c.closed]
        return fds

    # -- signals ----------------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w)  # the loop wakes even between our handler's runs
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._enqueue_signal)

    def _enqueue_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _reload_told(self) -> None:
        """SIGHUP, with systemd told (RELOADING=1, then READY=1 once done, whatever the outcome)."""
        self.systemd.reloading()
        try:
            self._reload()
        finally:
            self.systemd.reloaded()

    def _reload(self) -> None:
        """SIGHUP: the env file read again for what may change live (log level, priority)."""
        if not self.env_file:
            logger.warning("SIGHUP: no --env-file given, nothing to reload")
            return
        try:
            new = reload.reread(self.env_file, self.config)
        except ConfigError as exc:
            logger.error("SIGHUP: %s; keeping the running settings", exc)
            return
        if new.logger_level != self.log_level:
            logger.info("SIGHUP: LOGGER_LEVEL %s -> %s", self.log_level, new.logger_level)
            self.log_level = new.logger_level
            logs.set_level(new.logger_level)
            self._broadcast(protocol.LogLevel(new.logger_level))
        self.set_priority(new.priority, f"SIGHUP ({self.env_file})")

    def set_priority(self, priority: int, why: str) -> None:
        priority = max(0, min(255, priority))
        if priority == self.priority:
            logger.info("%s: priority stays %d", why, priority)
            return
        logger.info("%s: host priority %d -> %d (lowest wins)", why, self.priority, priority)
        self.priority = priority
        self._broadcast(protocol.Priority(priority))

    def _broadcast(self, message: Message) -> None:
        for record in self.vips.values():
            self.send(record, message)

    # -- pipes ------------------------------------------------------------------------------
    def send(self, record: VipRecord, command: Message) -> bool:
        if record.conn is None or record.conn.closed:
            return False
        try:
            record.conn.send(protocol.encode(command))
        except OSError:
            return False
        return True

    def answer(self, reply: protocol.Answer) -> None:
        if self.api_conn is None or self.api_conn.closed:
            return
        try:
            self.api_conn.send(protocol.encode(reply))
        except OSError:
            logger.warning("could not answer the API process (it is gone)")

    def stop_worker(self, record: VipRecord) -> None:
        if not self.send(record, protocol.Stop()) and record.pid is not None:
            self.ops.kill(record.pid, signal.SIGTERM)

    # -- start ------------------------------------------------------------------------------
    def boot(self) -> None:
        stored = self.store.load()
        if self._open_wire is not None:
            self.wire = self._open_wire(self.send)
            self._selector.register(self.wire.fileno(), selectors.EVENT_READ, None)
        now = time.time()
        for spec in stored:
            self.vips[spec.id] = VipRecord(spec=spec, since=now)
        # A previous run killed with SIGKILL leaves its VIPs on the interface: drop them before
        # anyone else binds them. Workers bind again whatever this host wins.
        for record in self.vips.values():
            if self.ops.remove_address(record.ip):
                logger.warning("removed %s left on %s by a previous run", record.ip, self.config.interface)
        self.spawn_api()
        self.systemd.booting(self.vips)
        for record in self.vips.values():
            self.spawn_worker(record)
        logger.info("link supervisor started as %s on %s with %d VIP(s)", self.config.hostname, self.config.interface, len(self.vips))
        self.vips_changed()

    def vips_changed(self) -> None:
        probe_budget.set_vips(len(self.vips))  # the workers' probe periods follow (link.probe_budget)
        setproctitle(f"link: supervisor {self.config.hostname} on {self.config.interface} ({len(self.vips)} vips)")

    def _watch(self, conn: Connection, record: VipRecord | None) -> None:
        self._selector.register(conn, selectors.EVENT_READ, record)

    def _close(self, conn: Connection | None) -> None:
        """Stop watching a pipe, then close it (in that order: a closed pipe has no fd)."""
        if conn is None or conn.closed:
            return
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def spawn_api(self) -> None:
        self.api_pid, self.api_conn = self.ops.spawn_api()
        self.api_started = self.clock()
        self._watch(self.api_conn, None)

    def spawn_worker(self, record: VipRecord) -> None:
        """Start the VIP's worker when the boot gate lets it: QUEUED until then, in order of arrival."""
        record.respawn_at = None
        if lifecycle.change(record, WorkerEvent.QUEUE, f"waiting to start ({len(self.gate.queue)} ahead)"):
            self.gate.add(record)
            self.gate.pump(self.stopping)

    def _fork_worker(self, record: VipRecord) -> None:
        record.pid, record.conn = self.ops.spawn_worker(record.spec)
        self._watch(record.conn, record)
        record.started_at = self.clock()
        record.heard_at = record.respawn_at = record.kill_at = record.boot_error = None
        self.by_pid[record.pid] = record
        started = f"worker {record.pid} started" + (f" (restart {record.restarts})" if record.restarts else "")
        lifecycle.change(record, WorkerEvent.SPAWNED, started, note="worker_respawned" if record.restarts else None)
        # What signals changed since start-up: the worker was built from the start-up config.
        if self.priority != self.config.priority:
            self.send(record, protocol.Priority(self.priority))
        if self.log_level != self.config.logger_level:
            self.send(record, protocol.LogLevel(self.log_level))

    # -- loop -------------------------------------------------------------------------------
    def run(self) -> int:
        self.install_signals()
        self.boot()
        for _ in iter(int, 1):  # until stopped; every wait below is bounded
            if not self.turn():
                break
        if self.wire is not None:
            self.wire.close()  # writes the replay marks to STATE_DIR (link.supervisor.wire_link)
        return self.exit_code

    def turn(self, max_wait: float = 1.0) -> bool:
        """One pass of the loop; False once the agent is done."""
        ready = [key for key, _ in self._selector.select(self._timeout(max_wait))]
        if any(key.fileobj == self._wake_r for key in ready):
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        wire_fd = self.wire.fileno() if self.wire is not None else None
        if self.wire is not None and any(key.fileobj == wire_fd for key in ready):
            self.wire.read()
        while self.signals:
            self._on_signal[self.signals.pop(0)]()
        # Worker reports first, so that API answers in the same turn reflect them.
        pipes = [key for key in ready if key.fileobj not in (self._wake_r, wire_fd)]
        for key in sorted(pipes, key=lambda k: k.fileobj is self.api_conn):
            # Every key but the wake pipe's is a Connection: the API's or a worker's (_watch).
            self._read(cast(Connection, key.fileobj), key.data)
        for pid, code in self.ops.reap():
            self.child_exited(pid, code)
        self.respawn_due()
        self.gate.pump(self.stopping)
        self.watchdog.check(self.vips.values())
        if self.wire is not None and not self.stopping:
            self.wire.tick()
        self.systemd.tick(self.vips)  # READY, STATUS, and the watchdog's ping only while the loop turns
        logs.pump()  # lines kept back while stderr was full (the supervisor never waits for it)
        return self.check_stop()

    def _timeout(self, max_wait: float) -> float:
        now = self.clock()
        times = [at for r in self.by_respawn() if (at := r.respawn_at) is not None]
        if (gate_due := self.gate.next_due()) is not None:
            times.append(gate_due)
        if self.stopping:
            times.append(self.stop_deadline)
        elif self.wire is not None:
            times.append(self.wire.next_due())
        soonest = min(times, default=now + max_wait)
        return max(0.0, min(max_wait, soonest - now))

    def _read(self, conn: Connection, record: VipRecord | None) -> None:
        for _ in range(1000):  # bounded drain; the rest waits for the next turn
            try:
                if conn.closed or not conn.poll():
                    return
                message = conn.recv()
            except (EOFError, OSError):
                self._close(conn)  # the process is gone; reaping tells how it ended
                return
            if conn is self.api_conn:
                self.requests.handle(message)
            elif record is not None and record.conn is conn:
                self._worker_message(record, message)

    # -- workers ----------------------------------------------------------------------------
    def _worker_message(self, record: VipRecord, wire: object) -> None:
        try:
            report = protocol.decode(wire, protocol.Family.REPORT)
        except protocol.ProtocolError as exc:
            logger.error("%s: dropped a message from worker %s: %s", record.ip, record.pid, exc)
            return
        record.heard_at = self.clock()  # any message says the worker is alive (the hung watchdog)
        self._on_report(report, record)

    def _state_report(self, report: StateReport, record: VipRecord) -> None:
        observe.state_report(report, record)
        self.gate.booted(record)  # out of BOOTING: its boot slot goes to the next VIP
        self.systemd.worker_booted(record.id)  # its first report: booted

    def api_listening(self) -> None:
        self.systemd.api_listening()

    def wire_peers(self, endpoints: list[dict[str, Any]]) -> None:
        if self.wire is not None:
            self.wire.set_peers(endpoints)

    def wire_metrics(self) -> dict[str, Any] | None:
        return self.wire.metrics() if self.wire is not None else None

    def child_exited(self, pid: int, code: int) -> None:
        if pid == self.api_pid:
            self._api_exited(code)
            return
        record = self.by_pid.pop(pid, None)
        if record is None:
            return
        self._close(record.conn)
        record.pid, record.conn = None, None
        self.gate.gone(record)
        if self.wire is not None:
            self.wire.forget(record)
        observe.worker_gone(record)
        self.requests.worker_gone(record)
        # Whatever the worker left on the interface goes: a killed worker cannot unbind.
        if self.ops.remove_address(record.ip) and code != 0:
            logger.warning("removed %s left bound by dead worker %d", record.ip, pid)
        if self.stopping:  # whatever exits now was told to stop (or would have been)
            lifecycle.change(record, WorkerEvent.STOP, "the agent is stopping")
        if record.worker_state is WorkerState.STOPPING:
            lifecycle.change(record, WorkerEvent.EXITED, f"worker {pid} exited with {code} as told")
            if record.delete_waiters:
                self.requests.finish_delete(record)
            return
        lifecycle.crashed(record, pid, code, self.clock())  # BACKOFF, or FATAL

    def by_respawn(self) -> list[VipRecord]:
        """The records waiting to be respawned (few: usually none)."""
        return [r for r in self.vips.values() if r.respawn_at is not None]

    def respawn_due(self) -> None:
        if self.stopping:
            return
        now = self.clock()
        for record in self.by_respawn():
            if record.respawn_at is not None and now >= record.respawn_at:
                if record.worker_state is WorkerState.FATAL:
                    logger.warning("%s: retrying the worker that failed to boot %d times", record.ip, record.boot_failures)
                    observe.add_event(record, record.status, "worker_fatal_retry",
                                      f"retrying after {record.boot_failures} failed boots ({record.error})")
                self.spawn_worker(record)

    def _api_exited(self, code: int) -> None:
        self._close(self.api_conn)
        self.api_pid, self.api_conn = None, None
        if self.stopping:
            return
        if self.clock() - self.api_started < API_BOOT_WINDOW:
            logger.error("the API process exited with %d at start (port %d busy?): stopping the agent", code, self.config.port)
            self.exit_code = 1
            self.begin_stop("the API could not start")
            return
        logger.warning("the API process exited with %d; restarting it", code)
        self.spawn_api()

    # -- stopping ---------------------------------------------------------------------------
    def begin_stop(self, why: str) -> None:
        if self.stopping:
            return
        logger.info("stopping (%s): releasing %d VIP(s)", why, len(self.vips))
        self.stopping = True
        self.systemd.stopping()
        self.stop_deadline = self.clock() + STOP_TIMEOUT
        if self.api_pid is not None:
            self.ops.kill(self.api_pid, signal.SIGTERM)
        for record in self.vips.values():
            record.respawn_at = None
            if lifecycle.change(record, WorkerEvent.STOP, f"the agent is stopping ({why})") and record.pid is not None:
                self.stop_worker(record)

    def check_stop(self) -> bool:
        """True while the agent should keep running."""
        if not self.stopping:
            return True
        alive = [(r, r.pid) for r in self.vips.values() if r.pid is not None]
        if self.clock() >= self.stop_deadline:
            for record, pid in alive:
                logger.error("%s: worker %d did not stop in %.0fs, killing it", record.ip, pid, STOP_TIMEOUT)
                self.ops.kill(pid, signal.SIGKILL)
                self.ops.remove_address(record.ip)
            if self.api_pid is not None:
                self.ops.kill(self.api_pid, signal.SIGKILL)
            return False
        return bool(alive) or self.api_pid is not None
