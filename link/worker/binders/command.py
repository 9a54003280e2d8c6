"""The `command` binder: the user's programs put the VIP in place (e.g. a cloud floating IP).

`{"activate": [argv], "deactivate": [argv], "ensure": [argv] or null, "timeout": s,
"ensure_interval": s}`. Programs come only from SCRIPTS_DIR and are checked again right before
every run (link.scripts: a program changed since the VIP was added is not run, a failed
attempt); they run without a shell, as SCRIPT_USER, in "/", with the agent's environment
(minus PASSWORD, HOME the user's) and LINK_* variables describing the VIP (`environment()`).
A non-zero exit, a timeout, a refused program or one that cannot start is a failed attempt,
retried with backoff
(`runner.ActionRunner`). `ensure`, while ACTIVATED, runs every `ensure_interval` seconds; when it
fails, `activate` runs again.

Run from the worker, which holds a gRPC channel: link.worker.programs starts them with
vfork+exec (no preexec_fn, no user=: setpriv switches user, see link.scripts), so the child runs
no Python and touches none of the worker's gRPC state.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import time
from typing import Any, Callable, Mapping

from link.config import Config
from link.scripts import HIDDEN_VARIABLES, ProgramPolicy, ScriptRefused
from link.vocabulary.binder_kinds import COMMAND
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import State
from link.worker.binders.runner import Action, ActionFailed, ActionRunner
from link.worker.programs import ProgramNotStarted, ProgramTimedOut, RunningProgram, run_program, summarize

logger = logging.getLogger(__name__)

def environment(base: Mapping[str, str], *, vip: str, vip_id: str, hostname: str, interface: str, action: str,
                state: str, reason: str, priority: int, attempt: int) -> dict[str, str]:
    """What a binder program finds in its environment (documented in the README)."""
    iface = ipaddress.ip_interface(vip)
    env = {k: v for k, v in base.items() if k not in HIDDEN_VARIABLES}
    env.update({
        "LINK_ACTION": action,  # activate, deactivate or ensure
        "LINK_VIP": vip,  # 198.51.100.50/32
        "LINK_VIP_ADDRESS": iface.ip.compressed,  # 198.51.100.50
        "LINK_VIP_PREFIXLEN": str(iface.network.prefixlen),
        "LINK_VIP_FAMILY": str(iface.version),  # 4 or 6
        "LINK_VIP_ID": vip_id,
        "LINK_HOSTNAME": hostname,
        "LINK_INTERFACE": interface,
        "LINK_STATE": state,  # ACTIVATED, STANDBY or FAILING: the state the VIP is entering
        "LINK_REASON": reason,
        "LINK_PRIORITY": str(priority),
        "LINK_ATTEMPT": str(attempt),  # 1 on the first try, then 2, 3... while retried
    })
    return env


class CommandBinder:
    kind = COMMAND.name
    announces = False  # the user's program owns how clients find the VIP

    def __init__(self, config: Config, spec: VipSpec, wake: Callable[[], None], priority: Callable[[], int], *,
                 base_env: Mapping[str, str] | None = None, runner_options: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, programs: ProgramPolicy | None = None) -> None:
        settings = COMMAND.values(spec.binder_settings)  # its schema: link.vocabulary.binder_kinds
        self.vip, self.vip_id = spec.ip, spec.id
        self.hostname, self.interface = config.hostname, config.interface
        self.argv = {name: list(settings[name]) for name in ("activate", "deactivate", "ensure") if settings[name]}
        self.timeout = float(settings["timeout"])
        self.ensure_interval = float(settings["ensure_interval"])
        self._priority = priority
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._clock = clock
        self._programs = ProgramPolicy.from_config(config) if programs is None else programs
        self._active = False  # the desired state: activate asked last
        self._next_ensure = 0.0
        self._running = RunningProgram()
        self.runner = ActionRunner(self._perform, wake, label=f"{self.vip}: command binder: ", **(runner_options or {}))

    @classmethod
    def from_spec(cls, config: Config, spec: VipSpec, wake: Callable[[], None], priority: Callable[[], int]) -> "CommandBinder":
        return cls(config, spec, wake, priority)

    # -- the worker's side ----------------------------------------------------------------
    def _action(self, name: str, state: str, reason: str) -> Action:
        return Action(name, state, reason, {"priority": self._priority()})

    def activate(self, reason: str = "") -> None:
        self._active = True
        self._next_ensure = self._clock() + self.ensure_interval
        self.runner.submit(self._action("activate", State.ACTIVATED.value, reason))

    def deactivate(self, state: str = State.STANDBY.value, reason: str = "") -> None:
        # Only a VIP this worker activated is deactivated: a host that boots as a standby
        # runs nothing (its deactivate could undo what the holder's activate did).
        if not self._active:
            return
        self._active = False
        self.runner.submit(self._action("deactivate", state, reason))

    def ensure(self) -> None:
        if not self._active or "ensure" not in self.argv or self._clock() < self._next_ensure:
            return
        if self.runner.submit_if_idle(self._action("ensure", State.ACTIVATED.value, "periodic ensure")):
            self._next_ensure = self._clock() + self.ensure_interval

    def next_due(self) -> float | None:
        return None  # the runner's thread keeps its own time

    def run_due(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return self.runner.status()

    def packets_sent(self) -> int:
        return 0  # the user's program announces what it moves, if anything

    def announce_once(self) -> None:
        pass  # announces is False: never asked

    def close(self, wait: float = 0.0) -> None:
        if not self.runner.close(wait):
            pid = self._running.kill()
            if pid is not None:
                logger.warning("%s: binder program %d still running at stop: killed", self.vip, pid)

    # -- the runner's thread ----------------------------------------------------------------
    def _perform(self, action: Action, attempt: int) -> None:
        argv = self.argv.get(action.name)
        if argv is None:
            return  # no such program configured (a missing ensure): nothing to do
        env = environment(
            self._base_env, vip=self.vip, vip_id=self.vip_id, hostname=self.hostname, interface=self.interface,
            action=action.name, state=action.state, reason=action.reason,
            priority=int(action.context.get("priority", 0)), attempt=attempt,
        )
        try:
            done = run_program(self._programs, argv, env, self.timeout, self._running)
        except ScriptRefused as exc:
            # The runner logs each attempt (with backoff) and binder_status.error shows it.
            raise ActionFailed(f"{action.name}: program refused, not run: {exc}") from None
        except (ProgramNotStarted, ProgramTimedOut) as exc:  # a timed-out program's group is killed already
            raise ActionFailed(f"{action.name} {exc}") from None
        if done.returncode != 0:
            detail = summarize(done.output)
            raise ActionFailed(f"{action.name} {done.how()}" + (f": {detail}" if detail else ""))
        if done.output.strip():
            logger.info("%s: %s said: %s", self.vip, action.name, summarize(done.output))
