"""The host's probe budget: CLAIM_PROBE_RATE probe frames per second for all its VIPs at once.

Every VIP a host holds is probed ("who is at the VIP?", link.adapters.capture) so that a silent
claimant is found, and during an etcd outage each standby probes the VIPs it might take
(link.worker.wire_policy). One probe per VIP every 2 s is 500 broadcast ARP per second at 1000
VIPs: switches rate-limit ARP per port (Cisco's dynamic ARP inspection: 15 pps, then the port
is err-disabled) and storm control drops broadcasts. So the period of each VIP's probe is
stretched to `max(base, VIPs on this host / CLAIM_PROBE_RATE)`, and each VIP starts at a random
phase of its period: the host as a whole sends at most CLAIM_PROBE_RATE probes per second,
spread over time. The count is of the VIPs this agent runs a worker for (held or standby),
not of those it holds: one worker does not know what the others hold, and the larger count
only stretches the period more (a bound, never an excess).

The supervisor writes the count (`set_vips`) into one shared anonymous page made before any
worker is forked, so every worker reads the current count (`vips`) without a message:
a VIP added later stretches the others' period at their next probe.
"""
from __future__ import annotations

import mmap
import random
import struct
from typing import Callable

DEFAULT_RATE = 20.0  # probe frames per second for the whole host (CLAIM_PROBE_RATE)
MIN_RATE, MAX_RATE = 1.0, 1000.0

_COUNT = struct.Struct("=q")
# MAP_SHARED | MAP_ANONYMOUS (mmap's default flags with fileno -1): a page the forked workers
# share with the supervisor. Made when this module is imported, which the supervisor does
# before its first fork (link.supervisor.arbiter imports it).
_shared = mmap.mmap(-1, mmap.PAGESIZE)


def set_vips(count: int) -> None:
    """The supervisor: how many VIPs this host runs a worker for now."""
    _COUNT.pack_into(_shared, 0, max(0, count))


def vips() -> int:
    """The count the supervisor last wrote; 1 when none was (a worker run alone, a unit test)."""
    count: int = _COUNT.unpack_from(_shared, 0)[0]
    return max(1, count)


def probe_period(base: float, rate: float, count: Callable[[], int] = vips) -> float:
    """The period of one VIP's probe: `base` (the period wanted for one VIP) unless the host's
    budget asks for longer."""
    return max(base, count() / rate)


def first_delay(period: float, draw: Callable[[], float] = random.random) -> float:
    """When a VIP's first probe goes, from now: a random phase of its period, so that the
    probes of VIPs that start together (a host booting, an etcd outage) do not go together."""
    return draw() * period
