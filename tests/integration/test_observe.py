"""Seeing what real agents do: /metrics, the events of a VIP, JSON logs, and logging that never
costs a lease even when nobody reads the agent's stderr."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import sys
import termios
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import link
from tests.lab import LAB_AGENT_ENV, lock_key, netns, procs, wait_until

pytestmark = pytest.mark.lab

VIP = "198.51.100.50/32"
COUNT = int(LAB_AGENT_ENV["ARP_GRATUITOUS_COUNT"])
KEEPALIVE = float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"])
F_SETPIPE_SZ = 1031


def scrape(lab, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = lab.host(name).api("GET", "/metrics")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain"), resp
    found = {}
    for family in text_string_to_metric_families(resp.body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def labels(vip_id: str, **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"id": vip_id, "ip": VIP, **more}.items()))


def client(lab, name: str, *args: str):
    """`link-client ARGS` inside host `name`'s namespace, talking to its own agent."""
    script = Path(sys.executable).parent / "link-client"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "link.cli.link_client"]
    return netns.exec_in(lab.host(name).ns, *argv, *args, timeout=30, check=False)


def test_metrics_of_real_agents(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP)
    holder = lab.wait_agreement(VIP, ids)
    standby = next(name for name in ids if name != holder)

    def holder_numbers():
        got = scrape(lab, holder)
        # Announcements go on after the transition; the worker sends its numbers every 2 s.
        return got if got[("link_vip_announcement_packets_total", labels(ids[holder]))] >= COUNT else None

    got = wait_until(holder_numbers, 10, 0.2, f"{holder}'s metrics to count {COUNT} announcement packets")
    mine = labels(ids[holder])
    assert got[("link_build_info", (("version", link.__version__),))] == 1
    assert got[("link_workers", ())] == 1
    assert got[("link_vip_state", labels(ids[holder], state="ACTIVATED"))] == 1
    assert got[("link_vip_state", labels(ids[holder], state="STANDBY"))] == 0
    assert got[("link_vip_transitions_total", labels(ids[holder], event="elected"))] >= 1
    assert got[("link_vip_seconds_since_transition", mine)] >= 0
    assert got[("link_vip_lease_grants_total", mine)] >= 1
    assert got[("link_vip_etcd_request_duration_seconds_count", labels(ids[holder], method="Range"))] >= 1
    assert got[("link_worker_respawns_total", mine)] == 0

    other = wait_until(lambda: (g := scrape(lab, standby))[("link_vip_lease_renewals_total", labels(ids[standby]))] > 0 and g,
                       10, 0.2, f"{standby}'s lease renewals to be counted")
    assert other[("link_vip_state", labels(ids[standby], state="STANDBY"))] == 1
    assert other[("link_vip_announcement_packets_total", labels(ids[standby]))] == 0


def test_events_tell_the_transitions_and_the_worker_respawn(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP)
    holder = lab.wait_agreement(VIP, ids)
    worker = lab.ip_object(holder, ids[holder])["worker"]["pid"]
    os.kill(worker, signal.SIGKILL)

    def respawned():
        events = lab.host(holder).api("GET", f"/ips/{ids[holder]}/events").body["events"]
        return events if any(e["event"] == "worker_respawned" for e in events) else None

    events = wait_until(respawned, 10, 0.1, "the respawn to be recorded")
    assert all(set(e) == {"time", "from", "to", "event", "reason", "source"} for e in events)
    first = events[0]
    assert (first["from"], first["to"], first["event"], first["source"]) == ("BOOTING", "ACTIVATED", "elected", "worker")
    assert first["reason"]
    crash = next(e for e in events if e["event"] == "worker_exited")
    assert crash["from"] == "ACTIVATED" and crash["source"] == "supervisor" and str(worker) in crash["reason"]
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)

    # A standby's events say who holds the lock.
    standby = next(name for name in ids if name != holder)
    done = client(lab, standby, "events", ids[standby])
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["TIME", "FROM", "TO", "EVENT", "REASON"]
    assert any("BOOTING" in row and "STANDBY" in row and "demoted" in row for row in rows), done.stdout
    as_json = json.loads(client(lab, standby, "events", ids[standby], "--json").stdout)
    assert as_json["events"][0]["to"] == "STANDBY"

    # Every transition is one log line naming the VIP.
    log = lab.host(holder).log_path.read_text()
    assert f"[worker {VIP}]" in log and "BOOTING -> ACTIVATED on elected" in log


@pytest.mark.hosts(1)
def test_json_logs(lab):
    host = lab.host(1)
    host.start_agent(LOGGER_TYPE="json").wait_ready()
    ids = lab.add_vip(VIP)
    lab.wait_agreement(VIP, ids)
    host.agent.stop()
    lines = [line for line in host.log_path.read_text().splitlines() if line and not line.startswith("=====")]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"supervisor", "api", f"worker {VIP}"} <= {e["role"] for e in entries}
    for entry in entries:
        assert {"time", "level", "role", "logger", "msg"} <= set(entry), entry
        assert ("vip" in entry) == entry["role"].startswith("worker "), entry
    assert any(e.get("vip") == VIP and "BOOTING -> ACTIVATED" in e["msg"] for e in entries)


def unread(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def holds_for(seconds: float, check, interval: float = 0.2) -> int:
    """Run `check` (which asserts) for `seconds`; the number of checks made."""
    deadline = time.monotonic() + seconds
    done = 0
    for _ in range(int(seconds / interval) + 2):
        check()
        done += 1
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return done


@pytest.mark.hosts(1)
@pytest.mark.lab_timeout(180)
def test_a_stalled_stderr_costs_log_lines_not_the_vip(lab):
    host = lab.host(1)
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)  # one page: a few dozen lines fill it
    try:
        host.start_agent(output=w, LOGGER_LEVEL="debug")
    finally:
        os.close(w)  # the agent has it; we only keep the reading end, and do not read
    host.agent.wait_ready()
    ids = lab.add_vip(VIP)
    lab.wait_agreement(VIP, ids)
    vip_id = ids["h1"]
    worker = lab.ip_object("h1", vip_id)["worker"]["pid"]
    lease = lab.etcd.lease(lock_key(VIP))
    assert lease

    # Each PATCH logs a line in the API, the supervisor and the worker: far more than the
    # pipe and the three buffers hold.
    def patch(_n: int) -> int:
        return host.api("PATCH", f"/ips/{vip_id}", {"healthchecks": []}, timeout=10).status

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(patch, range(800)))
    assert statuses == [200] * 800
    wait_until(lambda: unread(r) > 3000, 10, 0.1, "the pipe to be full")

    def still_held() -> None:
        assert host.has(VIP)
        assert lab.etcd.lease(lock_key(VIP)) == lease, "the lock moved to another lease"
        obj = lab.ip_object("h1", vip_id)
        assert obj["status"] == "ACTIVATED" and obj["worker"]["pid"] == worker, obj

    # Several lease periods with nobody reading: the worker keeps its lease all along.
    assert holds_for(5 * KEEPALIVE, still_held) >= 5
    assert unread(r) > 3000, "the pipe was read meanwhile: the test proves nothing"

    # The reader comes back: the lines kept flow, then the notice of those dropped.
    seen: list[bytes] = []
    stop = threading.Event()

    def drain() -> None:
        os.set_blocking(r, False)
        for _ in range(3000):  # bounded: 30 s at most
            try:
                chunk = os.read(r, 65536)
                if not chunk:
                    return
                seen.append(chunk)
            except BlockingIOError:
                if stop.is_set():
                    return
                time.sleep(0.01)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        notices = wait_until(lambda: [line for line in b"".join(seen).decode(errors="replace").splitlines()
                                      if "log lines dropped" in line and f"[worker {VIP}]" in line],
                             10, 0.1, "the worker's notice of dropped lines")
        print("\n".join(notices))
        still_held()
        host.agent.stop()
    finally:
        stop.set()
        reader.join(35)
        os.close(r)
    assert procs.alive(worker) is False
