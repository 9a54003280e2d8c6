"""Notify programs in the lab (keepalived's `notify`): one lab of 2 hosts for the module, the
real agents running a real program from a SCRIPTS_DIR of the test's own, as SCRIPT_USER
(nobody). The program appends its arguments to a log of its host's; each test asserts the
transitions the log shows, in order: a failing check (ACTIVATED -> FAILING -> STANDBY, the
other host STANDBY -> ACTIVATED), a release (the VIP deleted: ACTIVATED -> RELEASED) and a
failover (the holder's agent killed: the other host STANDBY -> ACTIVATED). The first two name
the VIP's own `notify`, the last the agent's NOTIFY; and a program that exits 3 is an event of
the VIP and a counter. No timing is asserted: the waits are bounds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from link.vocabulary.notify_words import RELEASED
from tests.conftest import module_lab, scripts_dir_unavailable
from tests.lab import Lab, wait_until
from tests.lab.scripts import ScriptsDir, ScriptsDirUnavailable

pytestmark = pytest.mark.lab

INTERVAL = "200ms"  # HEALTH_CHECK_INTERVAL
FAIL_COUNT = "2"
LOG_WAIT = 15.0  # bound on a program's line reaching the log (the programs run off the election's path)

# host, VIP, old, new, reason: one line per run; the reason is last (it has spaces).
PROGRAM = 'printf "%s %s %s %s\\n" "$2" "$3" "$4" "$5" >> "{out}/$1.log"\n'


@pytest.fixture(scope="module")
def nlab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    try:
        scripts = ScriptsDir()
    except ScriptsDirUnavailable as exc:
        scripts_dir_unavailable(exc)
    try:
        with module_lab(request, hosts=2) as lab:
            scripts.add("notify", PROGRAM.format(out=scripts.out))
            scripts.add("healthy", 'test ! -e "$1"\n')
            for host in lab.hosts:  # the agent's NOTIFY names the host: each host logs to its own file
                host.start_agent(SCRIPTS_DIR=str(scripts.path), NOTIFY=f"{scripts.path / 'notify'} {host.name}",
                                 NOTIFY_TIMEOUT="5s", HEALTH_CHECK_INTERVAL=INTERVAL,
                                 FAIL_COUNT_BEFORE_FAILOVER=FAIL_COUNT)
            for host in lab.hosts:
                assert host.agent is not None
                host.agent.wait_ready(30.0)
            lab.scripts = scripts  # type: ignore[attr-defined]
            yield lab
    finally:
        scripts.close()


def transitions(lab: Lab, host: str, vip: str) -> list[tuple[str, str, str]]:
    """(old, new, reason) of each run of `host`'s program for `vip`, in the order they ran."""
    log = Path(lab.scripts.out) / f"{host}.log"  # type: ignore[attr-defined]
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        got_vip, old, new, reason = line.split(" ", 3)
        if got_vip == vip:
            found.append((old, new, reason))
    return found


def settled(lab: Lab, host: str, vip: str, state: str) -> int:
    """Wait until `host`'s log says `vip` went to `state` last, from BOOTING through an unbroken
    chain (each run's old state is the last one's new state); the number of runs so far."""
    def ready() -> int | None:
        runs = transitions(lab, host, vip)
        if not runs or runs[-1][1] != state:
            return None
        return len(runs)
    count = wait_until(ready, LOG_WAIT, 0.05, f"{host}'s notify log to reach {state} for {vip}")
    runs = transitions(lab, host, vip)
    assert runs[0][0] == "BOOTING" and all(a[1] == b[0] for a, b in zip(runs, runs[1:])), runs
    assert all(reason for _, _, reason in runs), runs  # each run got the worker's sentence
    return count


def runs_after(lab: Lab, host: str, vip: str, since: int, count: int) -> list[tuple[str, str]]:
    """The (old, new) of `host`'s runs for `vip` after the first `since`, once there are `count`."""
    wait_until(lambda: len(transitions(lab, host, vip)) >= since + count, LOG_WAIT, 0.05,
               f"{count} more notify runs on {host} for {vip}")
    return [(old, new) for old, new, _ in transitions(lab, host, vip)[since:]]


def add(lab: Lab, vip: str, own: bool = True, checks: bool = False) -> dict[str, str]:
    """The VIP on both hosts, with its own `notify` (the same program, its host as argument)
    or the agent's NOTIFY; with `checks`, a flag file per host that must not exist."""
    scripts = lab.scripts  # type: ignore[attr-defined]
    ids = {}
    for host in lab.hosts:
        body: dict = {"ip": vip}
        if own:
            body["notify"] = [str(scripts.path / "notify"), host.name]
        if checks:
            body["checks"] = [{"type": "EXEC", "command": [str(scripts.path / "healthy"),
                                                           str(scripts.out / f"{host.name}-{vip.split('/')[0]}")]}]
        resp = host.api("POST", "/ips", body)
        assert resp.status == 201, resp
        assert resp.body["notify"] == body.get("notify", []), resp.body
        ids[host.name] = resp.body["id"]
    return ids


def test_a_failing_check_shows_activated_failing_standby_and_the_other_host_takes_over(nlab: Lab) -> None:
    vip = "198.51.100.71/32"
    ids = add(nlab, vip, checks=True)
    holder = nlab.wait_agreement(vip, ids)
    other = next(name for name in ids if name != holder)
    before = {holder: settled(nlab, holder, vip, "ACTIVATED"), other: settled(nlab, other, vip, "STANDBY")}

    flag = Path(nlab.scripts.out) / f"{holder}-{vip.split('/')[0]}"  # type: ignore[attr-defined]
    flag.touch()
    assert runs_after(nlab, holder, vip, before[holder], 1) == [("ACTIVATED", "FAILING")]
    assert runs_after(nlab, other, vip, before[other], 1) == [("STANDBY", "ACTIVATED")]
    flag.unlink()
    assert runs_after(nlab, holder, vip, before[holder], 2) == [("ACTIVATED", "FAILING"), ("FAILING", "STANDBY")]
    assert nlab.wait_agreement(vip, ids) == other
    reasons = [reason for _, _, reason in transitions(nlab, holder, vip)[before[holder]:]]
    assert "health check" in reasons[0], reasons  # the sentence the worker logged
    for name, vip_id in ids.items():  # every run went well: no notify event on the VIP
        events = nlab.host(name).api("GET", f"/ips/{vip_id}/events").body["events"]
        assert not [e for e in events if e["event"].startswith("notify_")], events
        nlab.host(name).api("DELETE", f"/ips/{vip_id}")


def test_a_deleted_vip_is_released_and_the_other_host_takes_it(nlab: Lab) -> None:
    vip = "198.51.100.72/32"
    ids = add(nlab, vip)
    holder = nlab.wait_agreement(vip, ids)
    other = next(name for name in ids if name != holder)
    before = {holder: settled(nlab, holder, vip, "ACTIVATED"), other: settled(nlab, other, vip, "STANDBY")}

    assert nlab.host(holder).api("DELETE", f"/ips/{ids[holder]}").status == 204
    assert runs_after(nlab, holder, vip, before[holder], 1) == [("ACTIVATED", RELEASED)]
    assert transitions(nlab, holder, vip)[-1][2] == "stopping: asked by the supervisor"
    assert runs_after(nlab, other, vip, before[other], 1) == [("STANDBY", "ACTIVATED")]
    assert nlab.host(other).api("DELETE", f"/ips/{ids[other]}").status == 204
    assert runs_after(nlab, other, vip, before[other], 2) == [("STANDBY", "ACTIVATED"), ("ACTIVATED", RELEASED)]


def test_a_failing_program_is_an_event_of_the_vip_and_a_counter(nlab: Lab) -> None:
    vip = "198.51.100.74/32"
    host = nlab.hosts[0]
    program = nlab.scripts.add("fails", 'echo "cannot page anyone" >&2\nexit 3\n')  # type: ignore[attr-defined]
    resp = host.api("POST", "/ips", {"ip": vip, "notify": [program]})
    assert resp.status == 201, resp
    vip_id = resp.body["id"]

    def failed() -> list[dict]:
        events = host.api("GET", f"/ips/{vip_id}/events").body["events"]
        return [e for e in events if e["event"] == "notify_failed"]
    event = wait_until(failed, LOG_WAIT, 0.1, "a notify_failed event")[0]
    assert f"notify program {program} (BOOTING -> " in event["reason"], event
    assert "exited 3: cannot page anyone" in event["reason"], event
    text = host.api("GET", "/metrics").body
    assert isinstance(text, str), text
    assert f'link_vip_notify_runs_total{{id="{vip_id}",ip="{vip}",outcome="failed"}}' in text
    assert host.api("DELETE", f"/ips/{vip_id}").status == 204


def test_the_agents_notify_sees_the_failover_when_the_holders_agent_dies(nlab: Lab) -> None:
    """Last in the module: it kills an agent."""
    vip = "198.51.100.73/32"
    ids = add(nlab, vip, own=False)  # no notify of its own: the agent's NOTIFY runs
    holder = nlab.wait_agreement(vip, ids)
    other = next(name for name in ids if name != holder)
    settled(nlab, holder, vip, "ACTIVATED")
    before = settled(nlab, other, vip, "STANDBY")

    agent = nlab.host(holder).agent
    assert agent is not None
    agent.kill()  # the whole tree at once, as a host losing power: nothing of it reacts
    nlab.wait_agreement(vip, {other: ids[other]}, timeout=15.0, dead=[holder])
    assert runs_after(nlab, other, vip, before, 1) == [("STANDBY", "ACTIVATED")]
