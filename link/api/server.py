"""The API process: waitress threads serving the app, one Pipe to the supervisor shared by all.

Requests carry ids from a counter; one reader thread hands each answer to the request with
the same id, because answers come back in any order (a `delete` waits for its worker while
other requests are answered).
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, Callable, NoReturn

import setproctitle

import link.api.reserved
from link import logs
from link.api import http_server
from link.api.app import make_app
from link.config import Config
from link.vocabulary.protocol import (Answer, ApiListening, Done, Family, Message, ProtocolError, Refused, WirePeers, answer_id,
                                     decode, encode)

log = logging.getLogger(__name__)

# Longer than any answer the supervisor gives in normal operation (a `delete` waits for its
# worker to release the VIP, which is bounded by the etcd deadline), shorter than the HTTP
# timeouts of clients, so a stuck supervisor turns into a clear 503 rather than a hang.
REQUEST_TIMEOUT = 30.0
API_THREADS = 8
# waitress buffers a whole request before calling the app: this bounds what a client can make
# it buffer. The app refuses anything over 64 KiB with a JSON 413; waitress itself answers
# (JSON too, see http_server) only past this.
MAX_REQUEST_BYTES = 1024 * 1024

# Exit codes of the API process, read by the supervisor.
EXIT_OK = 0  # SIGTERM, or the supervisor closed the pipe
EXIT_CRASHED = 1
EXIT_CANNOT_LISTEN = 78  # EX_CONFIG: PORT or BIND_ADDRESS cannot be used; respawning will not help


class SupervisorClient:
    """Thread-safe request/answer over the API process's end of the supervisor Pipe."""

    def __init__(
        self,
        conn: Connection,
        *,
        timeout: float = REQUEST_TIMEOUT,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self._conn = conn
        self._timeout = timeout
        self._on_closed = on_closed
        self._ids = itertools.count(1)
        # Sending and bookkeeping have separate locks: the reader only ever takes the pending
        # lock, so it keeps draining answers even while a sender is blocked on a full pipe.
        self._send_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, Future[Answer]] = {}
        self._closed = False
        self._reader = threading.Thread(target=self._read_answers, name="link-api-pipe-reader", daemon=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        self._reader.start()

    def call(self, request: Message) -> Answer:
        """Send a request (link.vocabulary.protocol) and wait for its answer (Done or Refused).

        Raises TimeoutError when no answer comes within the timeout, ConnectionError when the
        supervisor is gone, ProtocolError when its answer is not one.
        """
        op = type(request).kind
        future: Future[Answer] = Future()
        with self._pending_lock:
            if self._closed:
                raise ConnectionError("the supervisor is gone")
            request_id = next(self._ids)
            self._pending[request_id] = future
        try:
            with self._send_lock:
                self._conn.send(encode(request, request_id))
        except OSError as exc:
            self._forget(request_id)
            raise ConnectionError(f"cannot send to the supervisor: {exc}") from exc
        except BaseException:
            self._forget(request_id)
            raise
        try:
            return future.result(timeout=self._timeout)
        except TimeoutError:
            # Whoever takes the request off the pending list settles it. If we do, no answer
            # came in time (one arriving later is dropped by the reader); if we cannot, the
            # reader took it an instant ago and is about to hand over the answer.
            if self._forget(request_id):
                raise TimeoutError(f"no answer to {op!r} within {self._timeout:g} s") from None
            return future.result()

    def _forget(self, request_id: int) -> bool:
        with self._pending_lock:
            return self._pending.pop(request_id, None) is not None

    def _read_answers(self) -> None:
        while True:
            try:
                answer = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception:
                # The message was read whole, so the stream is still in step: drop only it.
                log.exception("unreadable message from the supervisor, dropped")
                continue
            self._dispatch(answer)
        self._fail_pending()
        if self._on_closed is not None:
            self._on_closed()

    def _dispatch(self, wire: object) -> None:
        request_id = answer_id(wire)
        if request_id is None:
            log.warning("dropped a message without a request id from the supervisor: %.200r", wire)
            return
        with self._pending_lock:
            future = self._pending.pop(request_id, None)
        if future is None:
            log.info("dropped a late answer to request %d (it had timed out)", request_id)
            return
        try:
            answer = decode(wire, Family.ANSWER)
        except ProtocolError as exc:
            future.set_exception(exc)  # that request fails (500); the stream is still in step
            return
        assert isinstance(answer, (Done, Refused))
        future.set_result(answer)

    def _fail_pending(self) -> None:
        with self._pending_lock:
            self._closed = True
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(ConnectionError("the supervisor closed the connection"))


def _exit(code: int) -> NoReturn:
    """Leave the process now, without running the supervisor's code the fork left on our stack."""
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    log.info("stopped by signal %d", signum)
    _exit(EXIT_OK)


def _reset_signals() -> None:
    """Undo the supervisor's signal setup, which a forked child inherits."""
    try:
        # The supervisor's wakeup fd would otherwise be written to by signals sent to us.
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, _on_sigterm)
        # Ctrl-C hits the whole process group: the supervisor decides when the API stops.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for signum in (signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
    except ValueError:
        # Not the main thread, where signals cannot be set: the caller keeps its own.
        pass


def usable_addresses(addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses to listen on, less ::1 where this host has no IPv6 loopback (IPv6 disabled):
    the default pair 127.0.0.1 and ::1 must not stop an IPv4-only host. Any other address that
    cannot be bound stops the API (EXIT_CANNOT_LISTEN), as the administrator named it."""
    if "::1" not in addresses or len(addresses) == 1:
        return addresses
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        log.info("no IPv6 loopback here (%s): the API listens on %s only", exc.strerror or exc,
                 ", ".join(a for a in addresses if a != "::1"))
        return tuple(a for a in addresses if a != "::1")
    return addresses


def _tell_listening(client: SupervisorClient) -> None:
    try:
        client.call(ApiListening())
    except (ConnectionError, TimeoutError, ProtocolError) as exc:
        log.warning("could not tell the supervisor the API listens (systemd's READY waits): %s", exc)


def _tell_wire_peers(client: SupervisorClient, peers: list[dict[str, Any]]) -> None:
    """The peers' heartbeat endpoints, from the publishing thread to the supervisor (link.supervisor.wire_link)."""
    try:
        client.call(WirePeers(peers))
    except (ConnectionError, TimeoutError, ProtocolError) as exc:
        log.warning("could not give the supervisor the wire peers read from etcd: %s", exc)


def run_api(conn: Connection, config: Config, version: str) -> NoReturn:
    """Body of the API process: serve the API until SIGTERM or the supervisor goes away.

    Exits with EXIT_OK, EXIT_CANNOT_LISTEN (port or address unusable) or EXIT_CRASHED; never
    returns. `conn` is this process's end of the supervisor Pipe.
    """
    _reset_signals()
    logs.setup(config.logger_level, "api", fmt=config.logger_type)
    addresses = usable_addresses(config.bind_addresses)
    listen = " ".join(f"[{a}]:{config.port}" if ":" in a else f"{a}:{config.port}" for a in addresses)
    where = listen.replace(" ", ", ")
    setproctitle.setproctitle(f"link: api {listen}")

    def supervisor_gone() -> None:
        log.info("the supervisor closed the pipe, exiting")
        _exit(EXIT_OK)

    client = SupervisorClient(conn, on_closed=supervisor_gone)
    # Before any VIP is added: this host's addresses published for its peers (link.api.reserved).
    reserved = link.api.reserved.start(config, lambda peers: _tell_wire_peers(client, peers))
    app = make_app(client.call, user=config.user, password=config.password, version=version,
                   metrics_auth=config.metrics_auth, webhook_allowed_urls=config.webhook_allowed_urls,
                   reserved=reserved.check, scripts_dir=config.scripts_dir, script_user=config.script_user)
    try:
        # Not waitress.serve: serve() prints a banner on stdout and calls logging.basicConfig();
        # the agent has its own logging and says one line itself. http_server's LinkServer adds
        # request deadlines, per-peer connection pools and JSON errors to waitress's.
        server = http_server.create_server(
            app,
            listen=listen,
            threads=API_THREADS,
            ident="link",
            max_request_body_size=MAX_REQUEST_BYTES,
            clear_untrusted_proxy_headers=True,
            # poll(), not select(): select() fails past fd 1023.
            asyncore_use_poll=True,
        )
    except (OSError, ValueError) as exc:
        log.error("cannot listen on %s (PORT / BIND_ADDRESS): %s", where, exc)
        _exit(EXIT_CANNOT_LISTEN)
    client.start()
    # The sockets listen from here (connections wait in the backlog until run()): the
    # supervisor may tell systemd READY. From a thread, so that serving never waits for it.
    threading.Thread(target=_tell_listening, args=(client,), name="link-api-listening", daemon=True).start()
    log.info(
        "listening on %s (link %s, basic auth %s)",
        ", ".join(f"http://{a}" for a in listen.split()),
        version,
        "on" if config.auth_enabled else "off",
    )
    try:
        server.run()
    except BaseException:
        log.exception("the HTTP server crashed")
        _exit(EXIT_CRASHED)
    # run() returns only after SystemExit or KeyboardInterrupt, neither of which we send.
    _exit(EXIT_OK)
