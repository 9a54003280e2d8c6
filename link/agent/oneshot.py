"""`link-agent associate IP` and `link-agent dissociate IP`: one change, then exit (exoip's -A/-D).

For scripts and recovery by hand: no etcd, no API, no state dir. Only INTERFACE and the ARP
settings (ARP_GRATUITOUS_COUNT, ARP_GRATUITOUS_INTERVAL) are read. `associate` binds the IP
on INTERFACE with netlink, as a worker does, then sends ARP_GRATUITOUS_COUNT announcements
ARP_GRATUITOUS_INTERVAL apart, the first at once (gratuitous ARP for IPv4, unsolicited
neighbour advertisements for IPv6); `dissociate` unbinds it. One line of output, and the exit
status says how it went:

    0  done (the line says whether the IP was bound/unbound already)
    1  failed (netlink refused, the announcements could not be sent...)
    2  usage or configuration error (a bad IP, INTERFACE missing or not an interface)

It does not take a lock in etcd: associating an IP that an agent elsewhere holds makes two
holders. It is meant for hosts where no agent runs for that IP, or to repair one by hand.
"""
from __future__ import annotations

import ipaddress
import logging
import sys
import time
from typing import TYPE_CHECKING, Callable, Mapping, TextIO

from link.config import ConfigError, OneShotConfig, load_oneshot
from link.vocabulary.vip import VipError, parse_vip

if TYPE_CHECKING:  # imported when used: pyroute2 and scapy are loaded only by the mode that needs them
    from link.adapters.announce import Announcer
    from link.adapters.netlink import AddressBinder

# (interface, vip) -> binder; (interface, vip, mac, count, interval) -> announcer: tests give fakes.
BinderFactory = Callable[[str, str], "AddressBinder"]
AnnouncerFactory = Callable[[str, str, str, int, float], "Announcer"]

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
MODES = ("associate", "dissociate")


class _Failed(Exception):
    pass


def _address_binder(ifname: str, vip: str) -> AddressBinder:
    from link.adapters.netlink import AddressBinder

    return AddressBinder(ifname, vip)


def _announcer(ifname: str, vip: str, mac: str, count: int, interval: float) -> Announcer:
    from link.adapters.announce import Announcer

    return Announcer(ifname, vip, mac, count, interval)


def _kind(vip: str) -> str:
    if ipaddress.ip_interface(vip).version == 4:
        return "gratuitous ARP announcement(s)"
    return "unsolicited neighbour advertisement(s)"


def run(mode: str, ip_text: str, env: Mapping[str, str] | None = None, *, out: TextIO | None = None,
        err: TextIO | None = None, binder_factory: BinderFactory = _address_binder,
        announcer_factory: AnnouncerFactory = _announcer,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Do `mode` for `ip_text`; print one line (stdout on success, stderr otherwise); the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if mode not in MODES:
        print(f"link-agent: unknown mode {mode!r} (use {' or '.join(MODES)})", file=err)
        return EXIT_USAGE
    try:
        vip = parse_vip(ip_text)
        config = load_oneshot(env)
    except (VipError, ConfigError) as exc:
        print(f"link-agent {mode}: {exc}", file=err)
        return EXIT_USAGE
    # The announcer's per-frame warnings would add lines: the one line below says it all.
    logger = logging.getLogger("link")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        line = (_associate if mode == "associate" else _dissociate)(vip, config, binder_factory, announcer_factory, sleep)
    except _Failed as exc:
        print(f"link-agent {mode} {vip}: {exc}", file=err)
        return EXIT_FAILED
    finally:
        logger.setLevel(previous)
    print(f"link-agent: {line}", file=out)
    return EXIT_DONE


def _open(vip: str, config: OneShotConfig, binder_factory: BinderFactory) -> AddressBinder:
    try:
        return binder_factory(config.interface, vip)
    except Exception as exc:  # the interface went away, netlink cannot be opened...
        raise _Failed(f"cannot use {config.interface} with netlink: {exc}") from None


def _associate(vip: str, config: OneShotConfig, binder_factory: BinderFactory, announcer_factory: AnnouncerFactory,
               sleep: Callable[[float], None]) -> str:
    binder = _open(vip, config, binder_factory)
    try:
        try:
            added = binder.bind()
        except Exception as exc:
            raise _Failed(f"netlink refused to add it on {config.interface}: {exc}") from None
        state = "bound now" if added else "it was already bound"
        count = config.arp_gratuitous_count
        if count == 0:
            return f"associated {vip} on {config.interface}: {state}; no announcement (ARP_GRATUITOUS_COUNT=0)"
        try:
            announcer = announcer_factory(config.interface, vip, binder.mac(), count, config.arp_gratuitous_interval)
        except Exception as exc:
            raise _Failed(f"{state} on {config.interface}, but it cannot be announced: {exc}") from None
        try:
            announcer.start()  # the first goes out now, the others `interval` apart
            for _ in range(count):  # bounded: one wait per announcement left
                due = announcer.next_due()
                if due is None:
                    break
                sleep(max(0.0, due - time.monotonic()))
                announcer.run_due()
            sent = announcer.sent
        finally:
            announcer.close()
        if sent < count:
            raise _Failed(f"{state} on {config.interface}, but only {sent} of {count} {_kind(vip)} could be sent")
        return f"associated {vip} on {config.interface}: {state}; {sent} {_kind(vip)} sent"
    finally:
        binder.close()


def _dissociate(vip: str, config: OneShotConfig, binder_factory: BinderFactory, announcer_factory: AnnouncerFactory,
                sleep: Callable[[float], None]) -> str:
    binder = _open(vip, config, binder_factory)
    try:
        try:
            removed = binder.unbind()
        except Exception as exc:
            raise _Failed(f"netlink refused to remove it from {config.interface}: {exc}") from None
    finally:
        binder.close()
    if removed:
        return f"dissociated {vip} from {config.interface}: unbound now"
    return f"dissociated {vip} from {config.interface}: it was not bound (nothing to do)"
