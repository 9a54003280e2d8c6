"""The supervisor's OS and process calls, behind one object so unit tests can fake them.

Forking follows one rule: the child closes every pipe end that belongs to the supervisor or
to its siblings, so that a worker sees EOF the moment the supervisor dies, and resets the
signal handlers it inherited before running its own body.
"""
from __future__ import annotations

import logging
import os
import signal
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Callable, Iterable, Protocol

from link import logs
from link.config import Config
from link.adapters.netlink import remove_address
from link.vocabulary.vip import VipSpec

logger = logging.getLogger(__name__)

_RESET_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2)


class ProcessOps(Protocol):
    def spawn_worker(self, spec: VipSpec) -> tuple[int, Connection]: ...

    def spawn_api(self) -> tuple[int, Connection]: ...

    def reap(self) -> list[tuple[int, int]]:
        """Exited children as (pid, exit code; -N when killed by signal N)."""

    def kill(self, pid: int, sig: int) -> None: ...

    def remove_address(self, vip: str) -> bool: ...


class RealOps:
    def __init__(self, config: Config, open_fds: Callable[[], Iterable[int]], version: str) -> None:
        self.config = config
        self._open_fds = open_fds
        self.version = version

    def _fork(self, body: Callable[[Connection, int], None]) -> tuple[int, Connection]:
        parent_end, child_end = Pipe(duplex=True)
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            try:
                signal.set_wakeup_fd(-1)
                for sig in _RESET_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                parent_end.close()
                for fd in self._open_fds():
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                body(child_end, parent_pid)
            except BaseException:
                # The child's own logging is not set up yet when an early step fails: say why
                # here, or the supervisor only sees "exited with 1".
                logger.exception("child process %d failed to start", os.getpid())
            finally:
                logs.flush()  # the line above goes through a writer thread once logging is set up
                os._exit(1)  # body never returns; this is the safety net
        child_end.close()
        return pid, parent_end

    def spawn_worker(self, spec: VipSpec) -> tuple[int, Connection]:
        from link.worker.entry import worker_main  # the one import of link.worker here: the fork entry point

        return self._fork(lambda conn, ppid: worker_main(self.config, spec, conn, ppid))

    def spawn_api(self) -> tuple[int, Connection]:
        from link.api.server import run_api

        def body(conn: Connection, ppid: int) -> None:
            run_api(conn, self.config, self.version)
            os._exit(0)

        return self._fork(body)

    def reap(self) -> list[tuple[int, int]]:
        exited = []
        for _ in range(10000):  # bounded: never more children than that
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            exited.append((pid, os.waitstatus_to_exitcode(status)))
        return exited

    def kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def remove_address(self, vip: str) -> bool:
        try:
            return remove_address(self.config.interface, vip)
        except Exception as exc:  # netlink refusing must not take the supervisor down
            logger.error("could not remove %s from %s: %s", vip, self.config.interface, exc)
            return False
