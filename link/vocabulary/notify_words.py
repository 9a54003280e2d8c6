"""The words of notify programs (keepalived's `notify`), spelled once: the state a program is
told the VIP goes to when its worker stops, and what became of each run (the `event` of a
`notify` report in `link-client events`, the `outcome` label of link_vip_notify_runs).

A leaf module: the standard library only.
"""
from __future__ import annotations

import enum

# Not a state of the VIP's table (link.vocabulary.vip_states): the worker stops (the VIP was
# deleted, or the agent stops) after unbinding it and giving its lock up, so this host
# releases the VIP; the notify program's last word for it.
RELEASED = "RELEASED"


class NotifyOutcome(str, enum.Enum):
    OK = "ok"  # exited 0
    FAILED = "failed"  # exited non-zero, was killed by a signal, or could not start
    TIMED_OUT = "timed_out"  # ran longer than NOTIFY_TIMEOUT: its process group was killed
    REFUSED = "refused"  # refused by SCRIPTS_DIR's rule right before the run (changed since): not run
    DROPPED = "dropped"  # never run: the backlog was full (the oldest waiting is dropped) or the worker stopped

    @property
    def event(self) -> str:
        """The event's name on the VIP (`link-client events`): `notify_failed`..."""
        return f"notify_{self.value}"
