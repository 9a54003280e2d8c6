"""waitress, made to hold under hostile clients (issue "Secure by default", points 9 and 15).

waitress stops accepting anyone once `connection_limit` (100) connections are open, and only
cuts a connection after `channel_timeout` (120 s) without a byte: 101 idle connections, or a
few that send a byte a minute, silence the API. Here instead:

- a connection must deliver its whole request (headers and body) within REQUEST_DEADLINE of
  being accepted (or, on a kept-alive connection, of the request's first byte), however
  slowly it trickles; between requests it may idle IDLE_TIMEOUT;
- connections are counted per pool: loopback peers have a pool of their own that the network
  cannot touch (the local `link-client` always gets in); remote peers are capped per address
  (per /64 for IPv6) and in total. A full pool makes room by closing its oldest connection
  that is not being answered (idle, or still trickling a request); only when every one is
  being answered is the newcomer refused. So a flood of idle connections, even from the
  caller's own address, costs a real request nothing but a connect;
- errors waitress answers itself (400, 413, 431, 500...) are JSON `{"error": ...}`, as the
  app's own, through the channel's `error_task_class` (no global patching), and a request
  line nobody can read is a 400 on both versions (`parser_class`).

Works on waitress 2.1.2 (Debian 12) and 3.x: it only relies on HTTPChannel.received,
del_channel, requests, request, creation_time, will_close, error_task_class, parser_class;
on HTTPRequestParser.parse_header and command; on BaseWSGIServer.readable,
maintenance, handle_accept, active_channels; and on ErrorTask's Task plumbing.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import time
from collections import OrderedDict
from typing import Any, Callable, cast

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from link.api.guard import peer_key
from link.api.validation import JSON_TYPE
from link.warn_throttle import WarningThrottle

log = logging.getLogger(__name__)

REQUEST_DEADLINE = 10  # s to deliver a whole request; link-client sends its own in one go
IDLE_TIMEOUT = 15  # s a kept-alive connection may wait between two requests
MAX_PER_PEER = 16  # connections at once from one remote address (IPv6: one /64)
MAX_REMOTE = 256  # connections at once from all remote peers
MAX_LOCAL = 128  # connections at once from loopback, a pool the network cannot fill
# Request headers of this API are a few hundred bytes; waitress's default allows 256 KiB.
MAX_HEADER_BYTES = 16 * 1024
# How often the deadlines are checked (waitress's default is every 30 s).
CHECK_EVERY = 1
REFUSAL_LOG_EVERY = 60.0  # s between two lines about connections closed or refused for room

# RFC 9110's token, as waitress 3 reads a method.
METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

LOCAL_POOL = "loopback"
REMOTE_POOL = "network"


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _detail(error: Any) -> str:
    """waitress's reason for an error, without what the client sent: a malformed header line
    is quoted back by waitress, and it may be an Authorization header."""
    text = str(getattr(error, "body", "") or "")
    text = text.split('"', 1)[0].split("\n", 1)[0].strip().rstrip(":")
    return text[:200]


class JsonErrorTask(ErrorTask):
    """The answer to a request waitress refused itself (or a crash it caught), as JSON."""

    def execute(self) -> None:
        # types-waitress types an ErrorTask's request as the Error; waitress hands it the
        # HTTPRequestParser whose parsing failed, and the Error is that parser's `error`.
        error = cast(HTTPRequestParser, self.request).error
        reason = str(getattr(error, "reason", "Internal Server Error"))
        detail = _detail(error)
        message = f"{reason.lower()}: {detail}" if detail else reason.lower()
        body = (json.dumps({"error": message}) + "\n").encode("utf-8")
        self.status = f"{getattr(error, 'code', 500)} {reason}"
        # A list in waitress (its own ErrorTask appends to it); a Sequence in types-waitress.
        headers = cast(list[tuple[str, str]], self.response_headers)
        headers.append(("Content-Type", JSON_TYPE))
        # The request stream cannot be trusted past a refused request: close after answering.
        close = getattr(self, "set_close_on_finish", None)  # waitress 3
        if callable(close):
            close()
        else:  # waitress 2.1: what its own ErrorTask does
            headers.append(("Connection", "close"))
            self.close_on_finish = True
        self.content_length = len(body)
        self.write(body)


class StrictParser(HTTPRequestParser):
    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        # waitress 2.1 hands a request line it could not read to the app, with an empty or
        # binary method (a TLS hello, say); 3.x refuses it with 400, as here.
        # str: waitress decodes the method (latin-1) before storing it; types-waitress says bytes.
        if not METHOD.fullmatch(cast(str, self.command)):
            raise ParsingError("Start line is invalid")


class Pools:
    """Who holds how many connections; used from the server's loop thread only."""

    def __init__(self, *, per_peer: int = MAX_PER_PEER, remote: int = MAX_REMOTE, local: int = MAX_LOCAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_peer, self.remote, self.local = per_peer, remote, local
        self._members: dict[str, OrderedDict[LinkChannel, None]] = {}
        self._throttle = WarningThrottle(REFUSAL_LOG_EVERY, clock)

    def count(self, pool: str) -> int:
        return len(self._members.get(pool, ()))

    def _cap(self, pool: str) -> int:
        return {LOCAL_POOL: self.local, REMOTE_POOL: self.remote}.get(pool, self.per_peer)

    def admit(self, address: str) -> tuple[str, ...] | None:
        """The pools a new connection from `address` joins, after making room in them; None
        when a pool is full of connections being answered (the connection is refused)."""
        pools = (LOCAL_POOL,) if is_loopback(address) else (peer_key(address), REMOTE_POOL)
        for pool in pools:
            members = self._members.get(pool)
            if members is None or len(members) < self._cap(pool):
                continue
            victim = next((c for c in members if not c.requests), None)
            if victim is None:
                self._note(f"refused a connection from {address}: the {len(members)} connections of pool "
                           f"{pool} are all being answered")
                return None
            self._note(f"closed an idle connection from {victim.peer} to make room for {address} "
                       f"(pool {pool} is full: {len(members)})")
            self.leave(victim)
            victim.will_close = True  # closed by the loop on its next turn
        return pools

    def join(self, channel: LinkChannel, pools: tuple[str, ...]) -> None:
        channel.pools = pools
        for pool in pools:
            self._members.setdefault(pool, OrderedDict())[channel] = None

    def leave(self, channel: LinkChannel) -> None:
        pools, channel.pools = channel.pools, ()
        for pool in pools:
            members = self._members.get(pool)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._members[pool]

    def _note(self, message: str) -> None:
        show, held_back = self._throttle.trouble()
        if show:
            more = f" ({held_back} more such since the last line)" if held_back else ""
            log.warning("%s%s", message, more)


class LinkChannel(HTTPChannel):
    error_task_class = JsonErrorTask
    parser_class = StrictParser
    pools: tuple[str, ...] = ()
    peer = "?"
    # time.time() (waitress's clock) since when the pending request is awaited: the accept for
    # a new connection, the first byte for a later one; None between requests.
    awaited_since: float | None = None

    def __init__(self, server: Any, sock: socket.socket, addr: Any, adj: Adjustments, map: Any = None) -> None:
        super().__init__(server, sock, addr, adj, map=map)
        self.peer = str(addr[0]) if isinstance(addr, tuple) and addr else "?"
        self.awaited_since = self.creation_time

    def received(self, data: bytes) -> bool:
        before = self.request
        result: bool = super().received(data)
        if self.request is None:
            self.awaited_since = None
        elif self.request is not before and (before is not None or self.awaited_since is None):
            self.awaited_since = time.time()
        return result

    def overdue(self, now: float, deadline: float) -> bool:
        """Still delivering a request that should be whole by now (not one being answered)."""
        return not self.requests and self.awaited_since is not None and now - self.awaited_since > deadline

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        pools = getattr(self.server, "pools", None)
        if pools is not None:
            pools.leave(self)


class LinkServer(TcpWSGIServer):
    """One listening socket; all of them share one Pools and one task dispatcher."""

    channel_class = LinkChannel
    request_deadline: float = REQUEST_DEADLINE
    # time.time() + cleanup_interval, as waitress sets it (types-waitress says int).
    next_channel_cleanup: float  # type: ignore[assignment]
    # Set by waitress's __init__s, left out of types-waitress: wasyncore.dispatcher's socket
    # map, and the address BaseWSGIServer listens on.
    _map: dict[int, Any]
    effective_host: str
    effective_port: int

    def __init__(self, *args: Any, pools: Pools, **kw: Any) -> None:
        self.pools = pools
        super().__init__(*args, **kw)

    def readable(self) -> bool:
        # waitress's readable() also stops accepting anyone past connection_limit, loopback
        # included: the pools decide instead, at accept time.
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting)

    def maintenance(self, now: float) -> None:
        # IDLE_TIMEOUT (channel_timeout) between requests. waitress passes time.time() (a
        # float) here itself; types-waitress says int.
        super().maintenance(now)  # type: ignore[arg-type]
        # waitress's {fd: channel} of this server (types-waitress types it as one channel).
        channels = cast(dict[int, HTTPChannel], self.active_channels)
        for channel in list(channels.values()):
            if isinstance(channel, LinkChannel) and not channel.will_close \
                    and channel.overdue(now, self.request_deadline):
                log.debug("closing a connection from %s: no whole request within %g s", channel.peer,
                          self.request_deadline)
                channel.will_close = True

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:
            if self.adj.log_socket_errors:
                self.logger.warning("server accept() threw an exception", exc_info=True)
            return
        addr = self.fix_addr(addr)
        pools = self.pools.admit(str(addr[0]))
        if pools is None:
            conn.close()
            return
        try:
            channel = self.channel_class(self, conn, addr, self.adj, map=self._map)
        except OSError:  # the peer reset it already
            conn.close()
            return
        self.pools.join(channel, pools)


def create_server(app: Callable[..., Any], *, listen: str, pools: Pools | None = None,
                  request_deadline: float = REQUEST_DEADLINE, **settings: Any) -> Any:
    """waitress.create_server's TCP part with LinkServer: an object with run() (and close()).

    `settings` are waitress adjustments; this module's timeouts and limits are the defaults.
    """
    settings = {
        "channel_timeout": IDLE_TIMEOUT,
        "cleanup_interval": CHECK_EVERY,
        "max_request_header_size": MAX_HEADER_BYTES,
        # Only checked by waitress's own readable(), which LinkServer replaces; set to the
        # real total for anyone reading the adjustments.
        "connection_limit": MAX_REMOTE + MAX_LOCAL,
        **settings,
    }
    adj = Adjustments(listen=listen, **settings)
    pools = pools if pools is not None else Pools()
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    servers = []
    try:
        for sockinfo in adj.listen:
            servers.append(LinkServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo,
                                      pools=pools))
            servers[-1].request_deadline = request_deadline
    except BaseException:
        for server in servers:
            server.close()
        dispatcher.shutdown()
        raise
    if len(servers) == 1:
        return servers[0]
    listening = [(s.effective_host, s.effective_port) for s in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)

