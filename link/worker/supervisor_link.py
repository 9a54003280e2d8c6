"""The worker's end of its pipe to the supervisor: the commands it reads (link.vocabulary.protocol's
supervisor → worker family), each handed to the worker's handler for it, and the reports it
sends. An object the Worker holds; it knows the pipe and the protocol, nothing of a VIP.

Whatever goes wrong on the pipe means the supervisor is gone: `on_gone` says so once per
failure (the worker then releases its VIP and exits).
"""
from __future__ import annotations

import logging
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Mapping

from link.vocabulary import protocol
from link.vocabulary.protocol import Heartbeat, Message, ProtocolError

logger = logging.getLogger(__name__)

GONE = "the supervisor is gone"


class SupervisorChannel:
    def __init__(self, conn: Connection, handlers: Mapping[type[Message], Callable[[Any], Message | None]],
                 on_gone: Callable[[str], None]) -> None:
        """`handlers`: one per command; what a handler returns (an answer) is sent back."""
        self.conn = conn
        self._dispatch = protocol.Dispatcher(protocol.Family.COMMAND, handlers)
        self._on_gone = on_gone
        self.sent_at = time.monotonic()  # the last message up: the supervisor's sign of life

    def fileno(self) -> int:
        return self.conn.fileno()  # the worker's selector waits on the pipe

    def read(self) -> None:
        """Handle every command waiting on the pipe."""
        try:
            while self.conn.poll():
                wire = self.conn.recv()
                try:
                    command = protocol.decode(wire, protocol.Family.COMMAND)
                except ProtocolError as exc:
                    # Read whole, so the stream is still in step: drop only this message.
                    logger.error("dropped a message from the supervisor: %s", exc)
                    continue
                answer = self._dispatch(command)
                if answer is not None:
                    self.send(answer)
        except (EOFError, OSError):
            self._on_gone(GONE)

    def send(self, report: Message) -> None:
        try:
            self.conn.send(protocol.encode(report))
        except OSError:  # BrokenPipeError among them
            self._on_gone(GONE)
        self.sent_at = time.monotonic()

    def heartbeat(self, every: float) -> None:
        """Say "alive" if nothing went up for `every` seconds: the supervisor replaces a worker
        it hears nothing from (link.supervisor.lifecycle). Called from the loop's tick, so an
        idle worker wakes no more often than it did, and a busy one sends no extra message."""
        if time.monotonic() - self.sent_at >= every:
            self.send(Heartbeat())
