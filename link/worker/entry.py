"""The worker process's entry point, the one name the supervisor imports from link.worker
(link.supervisor.ops, in the forked child): set the process up, boot the VIP, run, leave.

`build_worker` is the one place the Worker's seams get their real parts (the gRPC etcd
adapter, the binder the VIP asks for, the monotonic clock, the link watch of TRACK_INTERFACES);
unit tests give it fakes.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Callable, NoReturn

from setproctitle import setproctitle

from link import logs
from link.config import Config
from link.vocabulary.exit_codes import WORKER_BOOT_FAILED, WORKER_OK
from link.vocabulary.protocol import BootFailed
from link.vocabulary.vip import VipSpec
from link.adapters.carrier import LinkWatch
from link.worker.binders import Binder, make_binder
from link.etcd.grpc_client import GrpcEtcd
from link.worker.main import Worker

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, so the VIP is released.

    The pipe's EOF says the same thing; this covers a worker busy in a long etcd call.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def build_worker(config: Config, spec: VipSpec, conn: Connection) -> Worker:
    """The Worker with its real parts. Connects to nothing: the etcd channel connects on its
    first call (start_election), the binder is made by boot()."""

    def binder(wake: Callable[[], None], priority: Callable[[], int]) -> Binder:
        return make_binder(config, spec, wake, priority)

    worker = Worker(config, spec, conn, etcd=GrpcEtcd.from_config(config), binder=binder, clock=time.monotonic,
                    links=LinkWatch)
    worker.claims.probe_rate = config.claim_probe_rate  # the host's probe budget (link.probe_budget)
    return worker


def worker_main(config: Config, spec: VipSpec, conn: Connection, parent_pid: int) -> NoReturn:
    """Entry point in the forked child; never returns."""
    code = WORKER_OK
    vip = spec.ip
    try:
        logs.setup(config.logger_level, f"worker {vip}", fmt=config.logger_type, vip=vip)
        setproctitle(f"link: vip {vip} BOOTING")
        worker = build_worker(config, spec, conn)
        signal.signal(signal.SIGTERM, lambda *_: worker.request_stop("SIGTERM"))
        # Ctrl-C reaches the whole process group: the supervisor orders the hand-over.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent_pid)
        try:
            worker.boot()
        except Exception as exc:
            logger.error("%s: cannot put the VIP in place on this host: %s", vip, exc)
            worker.link.send(BootFailed(str(exc)))
            worker.shutdown()
            code = WORKER_BOOT_FAILED
        else:
            try:
                worker.start_election()
                worker.run()
            finally:
                worker.shutdown()
    except BaseException:
        logger.exception("worker for %s crashed", vip)
        code = 1
    finally:
        logging.shutdown()
    os._exit(code)
