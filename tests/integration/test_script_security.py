"""Programs in the lab (issue 14, points 2 and 3): an agent runs only programs of its SCRIPTS_DIR
that only root can change, checked when a VIP is added or changed and again before every run,
and runs them as SCRIPT_USER (nobody when the agent is root and it is unset).

Every refused program would leave a marker file if it ran; the tests look for it, after a
positive control proved that accepted programs do run in the same window.
"""
from __future__ import annotations

import json
import os
import pwd
import subprocess

import pytest

from tests.lab import wait_until
from tests.lab.lab import agent_command

pytestmark = pytest.mark.lab

VIP = "198.51.100.71/32"
OTHER_VIP = "198.51.100.72/32"
INTERVAL = 0.2


def count(path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def failed_rounds(host) -> int:
    """Failed health-check rounds of the host's VIPs, as its /metrics counts them."""
    text = host.api("GET", "/metrics").body
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in str(text).splitlines()
               if line.startswith("link_vip_health_checks_total{") and 'outcome="fail"' in line)


def more_failed_rounds(host, rounds: int) -> None:
    """Wait until the agent has counted `rounds` more failed rounds (workers report every 5 s)."""
    start = failed_rounds(host)
    wait_until(lambda: failed_rounds(host) >= start + rounds, 20, what=f"{rounds} more failed rounds")


def log_lines(host, words: str) -> list[str]:
    return [line for line in host.log_path.read_text(errors="replace").splitlines() if words in line]


@pytest.mark.hosts(1)
def test_programs_outside_the_rules_are_refused_with_400_and_never_run(lab, scripts):
    h1 = lab.host(1)
    lab.start_agents(SCRIPTS_DIR=str(scripts.path), HEALTH_CHECK_INTERVAL=f"{int(INTERVAL * 1000)}ms")
    marker = scripts.out / "marker"
    touch = f"touch {marker}\n"
    elsewhere = scripts.root / "elsewhere"  # root's, 0755, but not SCRIPTS_DIR
    elsewhere.mkdir(mode=0o755)
    outside = elsewhere / "touch"
    outside.write_text("#!/bin/sh\n" + touch)
    outside.chmod(0o755)
    open_program = scripts.add("open", touch, mode=0o757)  # anyone may rewrite it
    (scripts.path / "escape").symlink_to(outside)
    escape = str(scripts.path / "escape")
    cases = [
        (["/bin/sh", "-c", f"touch {marker}"], "'/bin/sh'", "is not inside SCRIPTS_DIR"),
        ([str(outside)], repr(str(outside)), "is not inside SCRIPTS_DIR"),
        ([open_program], repr(open_program), "is writable by group or others (mode 0757)"),
        ([escape], f"{escape!r} (resolved to {str(outside)!r})", "is not inside SCRIPTS_DIR"),
    ]
    for argv, shown, rule in cases:
        resp = h1.api("POST", "/ips", {"ip": VIP, "checks": [{"type": "EXEC", "command": argv}]})
        assert resp.status == 400, resp
        assert resp.body["error"].startswith(f"checks[0].command[0] {shown} ") and rule in resp.body["error"], resp.body
        resp = h1.api("POST", "/ips", {"ip": VIP, "binder": "command",
                                       "command": {"activate": argv, "deactivate": [scripts.add("noop", "exit 0\n")]}})
        assert resp.status == 400, resp
        assert resp.body["error"].startswith(f"command.activate[0] {shown} ") and rule in resp.body["error"], resp.body
    assert h1.api("GET", "/ips").body["ips"] == []

    # Changing the checks of a VIP: the same rules, and the VIP keeps its old checks.
    ran = scripts.out / "ran"
    good = [scripts.add("good", f"echo ran >> {ran}\n")]
    resp = h1.api("POST", "/ips", {"ip": VIP, "checks": [{"type": "EXEC", "command": good}]})
    assert resp.status == 201, resp
    vip_id = resp.body["id"]
    for argv, shown, rule in cases:
        resp = h1.api("PATCH", f"/ips/{vip_id}", {"healthchecks": [{"type": "EXEC", "command": argv}]})
        assert resp.status == 400 and rule in resp.body["error"], resp
    assert lab.ip_object(h1.name, vip_id)["checks"] == [{"type": "EXEC", "command": good}]
    # Positive control: the accepted check runs, round after round, in the same window.
    wait_until(lambda: count(ran) >= 5, 10, what="five rounds of the accepted check")
    assert not marker.exists(), "a refused program ran"


@pytest.mark.hosts(1)
def test_an_exec_check_changed_after_it_was_added_is_not_run_and_the_log_says_why(lab, scripts):
    h1 = lab.host(1)
    lab.start_agents(SCRIPTS_DIR=str(scripts.path), HEALTH_CHECK_INTERVAL=f"{int(INTERVAL * 1000)}ms",
                     FAIL_COUNT_BEFORE_FAILOVER="2")
    runs = scripts.out / "runs"
    program = scripts.add("check", f"echo ran >> {runs}\n")
    resp = h1.api("POST", "/ips", {"ip": VIP, "checks": [{"type": "EXEC", "command": [program, "--quick"]}]})
    assert resp.status == 201, resp
    vip_id = resp.body["id"]
    wait_until(lambda: lab.ip_object(h1.name, vip_id)["status"] == "ACTIVATED" and count(runs) >= 2, 15,
               what="the VIP held, its check passing")

    os.chmod(program, 0o757)  # now anyone could rewrite it: not run any more
    wait_until(lambda: lab.ip_object(h1.name, vip_id)["status"] == "FAILING", 10, what="the check to fail")
    before = count(runs)
    rule = f"program refused, not run: {program!r} is writable by group or others (mode 0757)"
    wait_until(lambda: log_lines(h1, rule), 5, what="the log line saying why")
    # Rounds counted by the agent itself (its metrics): two more, and the lines of this change
    # are all written; then ten more: still failing, never run, and nothing more said.
    more_failed_rounds(h1, 2)
    said = len(log_lines(h1, rule))  # the refusal, the failed rounds up to the count, the transition
    more_failed_rounds(h1, 10)
    assert count(runs) == before, "the program ran after it became writable by others"
    assert len(log_lines(h1, rule)) == said, log_lines(h1, rule)
    assert len([line for line in log_lines(h1, rule) if " link.scripts: " in line]) == 1
    assert lab.ip_object(h1.name, vip_id)["status"] == "FAILING"

    # Replaced by a symlink out of the directory: not run either, and said (a new reason).
    marker = scripts.out / "marker"
    outside = scripts.root / "outside"
    outside.write_text(f"#!/bin/sh\ntouch {marker}\n")
    outside.chmod(0o755)
    os.unlink(program)
    os.symlink(outside, program)
    wait_until(lambda: log_lines(h1, f"{program!r} (resolved to {str(outside)!r}) is not inside SCRIPTS_DIR"), 5,
               what="the log line for the symlink")
    more_failed_rounds(h1, 5)
    assert not marker.exists() and count(runs) == before

    # Put right: accepted again, runs again, the VIP is held again.
    os.unlink(program)
    scripts.add("check", f"echo ran >> {runs}\n")
    wait_until(lambda: count(runs) > before and lab.ip_object(h1.name, vip_id)["status"] == "ACTIVATED", 15,
               what="the check to run and pass again")
    assert log_lines(h1, "program accepted again")


@pytest.mark.hosts(1)
def test_a_binder_program_changed_after_it_was_added_is_not_run(lab, scripts):
    h1 = lab.host(1)
    lab.start_agents(SCRIPTS_DIR=str(scripts.path))
    runs, allow = scripts.out / "runs", scripts.out / "allow"
    activate = scripts.add("activate", f"echo ran >> {runs}\ntest -e {allow} || exit 3\n")
    command = {"activate": [activate], "deactivate": [scripts.add("deactivate", "exit 0\n")]}
    resp = h1.api("POST", "/ips", {"ip": VIP, "binder": "command", "command": command})
    assert resp.status == 201, resp
    vip_id = resp.body["id"]

    def status() -> dict:
        return lab.ip_object(h1.name, vip_id)["binder_status"]

    wait_until(lambda: status()["error"] and status()["error"].startswith("activate exited 3"), 15,
               what="a first activate that failed")
    os.chmod(activate, 0o777)
    refused = f"activate: program refused, not run: {activate!r} is writable by group or others (mode 0777)"
    first = wait_until(lambda: status()["error"] == refused and status()["attempts"], 10, what="a refused attempt")
    before = count(runs)
    allow.touch()  # it would succeed now, if it ran
    wait_until(lambda: status()["attempts"] >= first + 2, 20, what="two more refused attempts")
    assert status()["error"] == refused and not status()["ok"] and count(runs) == before
    assert log_lines(h1, refused)
    os.chmod(activate, 0o755)
    wait_until(lambda: status()["ok"], 40, 0.1, what="the activate to run and succeed")
    assert count(runs) == before + 1


@pytest.mark.hosts(2)
def test_programs_run_as_nobody_by_default_and_as_script_user_when_set(lab, scripts):
    h1, h2 = lab.host(1), lab.host(2)
    other = pwd.getpwnam("daemon")  # exists on Debian: a user other than root and nobody
    nobody = pwd.getpwnam("nobody")
    # What the program tells: its uid, gids, HOME, working directory, and whether it saw PASSWORD.
    whoami = scripts.add("whoami", f'echo "$(id -u) $(id -g) $(id -G | wc -w) $HOME $(pwd) ${{PASSWORD:-none}}" '
                                   f'> {scripts.out}/$1.$2\n')
    lab.start_agents([h1], SCRIPTS_DIR=str(scripts.path), PASSWORD="lab-api-password")
    lab.start_agents([h2], SCRIPTS_DIR=str(scripts.path), SCRIPT_USER="daemon")
    for host in (h1, h2):
        resp = host.api("POST", "/ips", {"ip": VIP, "checks": [{"type": "EXEC", "command": [whoami, "check", host.name]}]})
        assert resp.status == 201, resp
        command = {"activate": [whoami, "activate", host.name], "deactivate": [scripts.add("noop", "exit 0\n")]}
        resp = host.api("POST", "/ips", {"ip": OTHER_VIP, "binder": "command", "command": command})
        assert resp.status == 201, resp
    wait_until(lambda: all((scripts.out / f"check.{h.name}").exists() for h in (h1, h2)), 15, what="both checks to run")
    holder = wait_until(lambda: next((h for h in (h1, h2) if (scripts.out / f"activate.{h.name}").exists()), None), 15,
                        what="the command binder's holder to run activate")
    expected = {h1.name: f"{nobody.pw_uid} {nobody.pw_gid} 1 / / none",
                h2.name: f"{other.pw_uid} {other.pw_gid} 1 {other.pw_dir} / none"}
    for host in (h1, h2):
        assert (scripts.out / f"check.{host.name}").read_text().strip() == expected[host.name]
    assert (scripts.out / f"activate.{holder.name}").read_text().strip() == expected[holder.name]


VIP_ID = "vip-3f0c2a41-6d1e-4b7a-9c55-2e8d1f0a7b63"
OTHER_ID = "vip-3f0c2a41-6d1e-4b7a-9c55-2e8d1f0a7b64"


@pytest.mark.hosts(1)
def test_a_system_scripts_dir_stops_the_agent_and_kept_vips_refused_programs_are_said_at_start(lab, scripts):
    h1 = lab.host(1)
    for directory in ("/usr", "/bin", "/"):  # /bin/sh would be a program API users could run with -c
        done = subprocess.run(["ip", "netns", "exec", h1.ns, *agent_command()],
                              env=lab.agent_env_for(h1, {"SCRIPTS_DIR": directory}), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (directory, done)
        assert f"SCRIPTS_DIR {directory!r}" in done.stderr and "put no shell or interpreter" in done.stderr, done.stderr

    # An upgrade from a version without SCRIPTS_DIR: the kept VIPs' programs are refused now, said
    # at start (one line per VIP and field), before anything ran.
    open_program = scripts.add("open", "exit 0\n", mode=0o777)
    fine = scripts.add("fine", "exit 0\n")
    kept = [{"id": VIP_ID, "ip": VIP, "checks": [{"type": "EXEC", "command": ["/usr/local/bin/check-db", "--quick"]}]},
            {"id": OTHER_ID, "ip": OTHER_VIP, "binder": "command",
             "command": {"activate": [open_program], "deactivate": [fine]}}]
    (h1.state_dir / "vips.json").write_text(json.dumps({"version": 1, "vips": kept}))
    lab.start_agents(SCRIPTS_DIR=str(scripts.path))
    lines = [line for line in h1.log_path.read_text(errors="replace").splitlines() if "it will not run" in line]
    assert len(lines) == 2, lines
    assert (f"{VIP} ({VIP_ID}): checks[0].command[0] '/usr/local/bin/check-db' is not inside SCRIPTS_DIR "
            f"{scripts.path}") in lines[0] and "WARNING" in lines[0].upper()
    assert f"{OTHER_VIP} ({OTHER_ID}): command.activate[0] {open_program!r} is writable by group or others" in lines[1]
    assert not log_lines(h1, "does not exist: no program")
