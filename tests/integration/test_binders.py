"""Binders in the lab: a `command` binder's programs follow the VIP from host to host, a
`webhook` binder posts signed changes to a receiver inside the lab, failures are retried and
shown in the API's `binder_status`."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import CLIENT_IP, GiveUp, lock_key, procs, wait_until
from tests.lab import http as lab_http

pytestmark = pytest.mark.lab

VIP = "198.51.100.97/32"
SECRET = "lab-webhook-secret-5f2a9c3e1b7d"
RECEIVER_PORT = 8089
RECEIVER = Path(__file__).resolve().parent.parent / "lab" / "webhook_receiver.py"


def runs(directory: Path, action: str) -> list[tuple[str, str]]:
    """(host, state) of each run of `action`, one file per run, oldest first."""
    found = []
    for path in sorted(directory.glob(f"{action}.*"), key=lambda p: p.stat().st_mtime_ns):
        state, host = path.read_text().split()
        found.append((host, state))
    return found


def command_scripts(scripts, directory: Path) -> dict:
    """activate and deactivate in the agents' SCRIPTS_DIR; they run as nobody (the agents run as
    root without SCRIPT_USER) and record each run in `directory`, which nobody may write to."""
    directory.mkdir()
    directory.chmod(0o1777)
    # One file per run: mktemp makes a new one each time ($LINK_ACTION.<host>.XXXXXX).
    record = 'echo "$LINK_STATE $LINK_HOSTNAME" > "$(mktemp "%s/$LINK_ACTION.$LINK_HOSTNAME.XXXXXX")"\n' % directory
    return {"activate": [scripts.add("activate", record)], "deactivate": [scripts.add("deactivate", record)]}


def add(lab, body: dict, hosts=None) -> dict[str, str]:
    ids = {}
    for host in hosts or lab.running_hosts():
        resp = host.api("POST", "/ips", body)
        assert resp.status == 201, resp
        ids[host.name] = resp.body["id"]
    return ids


def agreed_holder(lab, ids: dict[str, str]) -> str | None:
    """The holder when every host agrees (API states and holder, etcd's lock); nothing is
    bound on the interfaces: these binders do not use them."""
    objects = lab.ip_objects(ids)
    active = [name for name, obj in objects.items() if obj["status"] == "ACTIVATED"]
    if len(active) != 1:
        return None
    holder = active[0]
    if any(obj["status"] != "STANDBY" for name, obj in objects.items() if name != holder):
        return None
    if any(obj["holder"] != holder for obj in objects.values()) or lab.etcd.get(lock_key(VIP)) != holder:
        return None
    return holder


def test_a_command_binder_runs_activate_on_the_holder_and_follows_it(lab, scripts):
    directory = scripts.out / "command-binder"
    command = command_scripts(scripts, directory)
    lab.start_agents(SCRIPTS_DIR=str(scripts.path))
    ids = add(lab, {"ip": VIP, "binder": "command", "command": command})
    holder = wait_until(lambda: agreed_holder(lab, ids), 15, 0.05, "one agreed holder")
    wait_until(lambda: runs(directory, "activate") == [(holder, "ACTIVATED")], 10, what=f"{holder} to run activate")
    assert runs(directory, "deactivate") == [] and lab.bound(VIP) == []  # nothing on the interfaces
    shown = lab.ip_object(holder, ids[holder])
    assert shown["binder"] == "command" and shown["command"]["activate"] == command["activate"]
    assert shown["command"]["timeout"] == 10 and shown["command"]["ensure"] is None
    assert shown["binder_status"]["ok"] and shown["binder_status"]["action"] == "activate"

    lab.host(holder).agent.stop()
    rest = {name: vip_id for name, vip_id in ids.items() if name != holder}
    new = wait_until(lambda: agreed_holder(lab, rest), 15, 0.05, "a new agreed holder")
    assert new != holder
    wait_until(lambda: runs(directory, "activate") == [(holder, "ACTIVATED"), (new, "ACTIVATED")], 10,
               what=f"{new} to run activate")
    # The old holder ran deactivate as it stopped, before it gave up the lock.
    assert runs(directory, "deactivate") == [(holder, "STANDBY")]
    first_deactivate = min(p.stat().st_mtime_ns for p in directory.glob("deactivate.*"))
    second_activate = max(p.stat().st_mtime_ns for p in directory.glob("activate.*"))
    assert first_deactivate <= second_activate
    status = lab.ip_object(new, ids[new])["binder_status"]
    assert status["ok"] and status["action"] == "activate" and status["attempts"] == 1, status


def test_a_failing_activate_is_retried_and_shown_in_binder_status(lab, scripts):
    allow = scripts.out / "allow"
    command = {
        "activate": [scripts.add("activate.sh", f'test -e {allow} && exit 0\necho "no floating IP for $LINK_VIP (try $LINK_ATTEMPT)"\nexit 3\n')],
        "deactivate": [scripts.add("deactivate.sh", "exit 0\n")],
    }
    h1 = lab.host(1)
    lab.start_agents([h1], SCRIPTS_DIR=str(scripts.path))
    [vip_id] = add(lab, {"ip": VIP, "binder": "command", "command": command}).values()

    def failing_three_times():
        obj = lab.ip_object("h1", vip_id)
        status = obj["binder_status"]
        return obj if not status["ok"] and status["attempts"] >= 3 else None

    obj = wait_until(failing_three_times, 15, 0.05, "three failed attempts in binder_status")
    status = obj["binder_status"]
    assert obj["status"] == "ACTIVATED"  # the election is not held back by its binder
    assert status["action"] == "activate" and status["since"]
    assert status["error"].startswith(f"activate exited 3: no floating IP for {VIP} (try "), status
    allow.touch()
    wait_until(lambda: lab.ip_object("h1", vip_id)["binder_status"]["ok"], 40, 0.1, "the activate to succeed at last")
    listed = h1.api("GET", "/ips").body["ips"][0]
    assert listed["binder_status"]["ok"] and listed["binder_status"]["action"] == "activate"


class Receiver:
    """The webhook receiver script, inside the client namespace, stopped by PID."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.log = lab.workdir / "webhook.jsonl"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Receiver":
        with open(self.lab.workdir / "webhook.stderr", "wb") as err:
            self.proc = subprocess.Popen(
                # -I: the script's directory (tests/lab, with its own http.py) is not on sys.path.
                ["ip", "netns", "exec", self.lab.client_ns, sys.executable, "-I", str(RECEIVER), CLIENT_IP, str(RECEIVER_PORT),
                 str(self.log)],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WEBHOOK_SECRET": SECRET},
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise GiveUp(f"the receiver exited with {self.proc.returncode}")
            return lab_http.request(self.lab.client_ns, CLIENT_IP, RECEIVER_PORT, "GET", "/", timeout=1).status == 200

        wait_until(ready, 10, 0.05, "the webhook receiver to listen")
        return self

    def entries(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.log.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def accepted(self) -> list[tuple[str, str]]:
        return [(e["payload"]["hostname"], e["payload"]["status"]) for e in self.entries() if e["accepted"]]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            procs.terminate([self.proc.pid], grace=2.0)
        if self.proc is not None:
            self.proc.wait(5)


def signed_post(lab, body: bytes, timestamp: int, secret: str = SECRET, signature: str | None = None):
    sig = signature or "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return lab_http.request(lab.client_ns, CLIENT_IP, RECEIVER_PORT, "POST", "/hook", raw=body, timeout=5,
                            headers={"Content-Type": "application/json", "X-Link-Timestamp": str(timestamp),
                                     "X-Link-Signature": sig})


@pytest.mark.hosts(2)
def test_a_webhook_binder_posts_signed_changes_to_a_receiver_in_the_lab(lab):
    receiver = Receiver(lab)
    try:
        receiver.start()
        lab.start_agents(WEBHOOK_ALLOWED_URLS=f"http://{CLIENT_IP}:{RECEIVER_PORT}")  # none: webhook binders refused
        url = f"http://{CLIENT_IP}:{RECEIVER_PORT}/hook"
        ids = add(lab, {"ip": VIP, "binder": "webhook", "webhook": {"url": url, "secret": SECRET}})
        holder = wait_until(lambda: agreed_holder(lab, ids), 15, 0.05, "one agreed holder")
        wait_until(lambda: receiver.accepted() == [(holder, "ACTIVATED")], 10, what=f"a signed ACTIVATED from {holder}")
        [entry] = receiver.entries()
        assert entry["payload"] == {"endpoint_id": ids[holder], "ip": VIP, "status": "ACTIVATED", "hostname": holder}
        assert entry["from"] == lab.host(holder).ip and entry["path"] == "/hook"
        shown = lab.ip_object(holder, ids[holder])
        assert shown["webhook"] == {"url": url, "secret": "***", "timeout": 5}, shown
        assert shown["binder_status"]["ok"] and shown["binder_status"]["action"] == "activate"

        # A hand-over: the old holder says STANDBY, the new one ACTIVATED.
        other = next(name for name in ids if name != holder)
        assert lab.host(holder).api("POST", f"/ips/{ids[holder]}/failover").status == 204
        wait_until(lambda: sorted(receiver.accepted()[1:]) == sorted([(holder, "STANDBY"), (other, "ACTIVATED")]), 10,
                   what="STANDBY and ACTIVATED after the hand-over")
        assert wait_until(lambda: agreed_holder(lab, ids), 15, 0.05, "the new holder") == other

        # The receiver's check refuses what link did not sign, and old requests.
        body = json.dumps({"endpoint_id": "x", "ip": VIP, "status": "ACTIVATED", "hostname": "mallory"}).encode()
        now = int(time.time())
        assert signed_post(lab, body, now, signature="sha256=" + "0" * 64).status == 401
        assert signed_post(lab, body, now, secret="not-the-shared-secret").status == 401
        assert signed_post(lab, body, now - 600).status == 401  # a replay of an old request
        refused = [e["why"] for e in receiver.entries() if not e["accepted"]]
        assert refused == ["bad signature", "bad signature", "timestamp too old (replay?)"]
        assert all(host != "mallory" for host, _ in receiver.accepted())
        assert signed_post(lab, body, now).status == 204  # and accepts a good one: the check is not a wall
    finally:
        receiver.stop()
    for host in lab.hosts:  # the secret is never logged
        assert SECRET not in host.log_path.read_text(), host.name
