"""How a VIP is put in place on the host that wins it: pluggable binders, one per VIP.

* `arp` (`ArpBinder`): the VIP on INTERFACE with netlink, with a lifetime of one lease that
  is refreshed every tick, announced with gratuitous ARP (IPv4) or unsolicited NA (IPv6);
  put back if someone removes it while ACTIVATED.
* `command` (`CommandBinder`): the user's programs run on activate, deactivate and
  periodically while active (ensure), e.g. to move a cloud provider's floating IP.
* `webhook` (`WebhookBinder`): a signed HTTP POST on each activation and deactivation.

The worker's state machine calls `activate()` on entering ACTIVATED, `deactivate()` on leaving
it, `ensure()` on every cycle while ACTIVATED, `run_due()` when `next_due()` says so, and
`close()` at the end. `status()` is what the API shows as `binder_status`, `packets_sent()`
what the metrics count as announcement frames. The command and
webhook binders run their actions on a thread of their own (`runner.ActionRunner`): none of
these calls waits on the user's program or web server.

Each kind is one module here named after it (`<kind>.py`, its class declaring `kind`), found
by `implementation()` with no list to extend; its settings are its entry in
link.vocabulary.binder_kinds.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol

from link.config import Config
from link.vocabulary import binder_kinds
from link.vocabulary.vip import VipSpec


class Binder(Protocol):
    kind: str
    # Whether the binder puts the VIP on INTERFACE and announces it there: then the worker's
    # claim guard (link.worker.claim_guard) watches the LAN for other claimants and answers
    # them with `announce_once()`. False for a binder whose program moves the VIP elsewhere.
    announces: bool

    def announce_once(self) -> None:
        """One more announcement of the VIP, left as it is (nothing when not held here)."""

    def activate(self, reason: str) -> None:
        """Put the VIP in place here (entering ACTIVATED, or asserting it again after an etcd outage)."""

    def deactivate(self, state: str, reason: str) -> None:
        """Take it away from here (entering STANDBY or FAILING, or stopping)."""

    def ensure(self) -> None:
        """Called on each election cycle while ACTIVATED: put the VIP back if it went away."""

    def next_due(self) -> float | None:
        """When `run_due()` has something to do (time.monotonic()), or None."""

    def run_due(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """{"ok", "action", "error", "attempts", "since"}: the last action's outcome."""

    def packets_sent(self) -> int:
        """Announcement frames sent so far (gratuitous ARP, unsolicited NA); 0 for a binder that sends none."""

    def close(self, wait: float = 0.0) -> None:
        """Let a pending action have one last attempt (at most `wait` seconds), then release everything."""


# What the worker is given to make its binder at boot: (wake, priority) -> Binder, the two
# callables being make_binder's; link.worker.entry binds the config and the spec.
BinderFactory = Callable[[Callable[[], None], Callable[[], int]], Binder]


class Implementation(Protocol):
    """A binder class: its kind (link.vocabulary.binder_kinds) and how it is built for a VIP."""

    kind: str

    @classmethod
    def from_spec(cls, config: Config, spec: VipSpec, wake: Callable[[], None], priority: Callable[[], int]) -> Binder: ...


def implementation(kind: str) -> type[Implementation]:
    """The class of binder `kind`, found by convention: the module `link.worker.binders.<kind>`
    declares one class whose `kind` is that name. Imported on first use (importlib caches it),
    so that importing this package (the Binder protocol) loads no binder's libraries, and a
    new kind needs no line here: its schema in link.vocabulary.binder_kinds, its module."""
    module_name = f"{__name__}.{kind}"
    module = importlib.import_module(module_name)
    found = [cls for cls in vars(module).values()
             if isinstance(cls, type) and cls.__module__ == module_name and getattr(cls, "kind", None) == kind]
    if len(found) != 1:
        raise LookupError(f"{module_name} declares {len(found)} classes with kind = {kind!r}; a binder module declares one")
    cls: type[Implementation] = found[0]
    return cls


def implementations() -> dict[str, type[Implementation]]:
    """Every binder class by kind, for each kind link.vocabulary.binder_kinds defines."""
    return {kind: implementation(kind) for kind in binder_kinds.KINDS}


def make_binder(config: Config, spec: VipSpec, wake: Callable[[], None], priority: Callable[[], int]) -> Binder:
    """The binder `spec` asks for. `wake` tells the worker's loop the status changed;
    `priority` gives the VIP's current priority (for the command's environment)."""
    return implementation(spec.binder).from_spec(config, spec, wake, priority)
