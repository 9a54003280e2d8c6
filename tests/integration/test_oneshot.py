"""`link-agent associate|dissociate IP` in the lab: no agent, no etcd, one change and exit."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.lab import IFACE, LAB_AGENT_ENV, agent_command, netns, wait_until

pytestmark = pytest.mark.lab

VIP = "198.51.100.95/32"
ADDRESS = VIP.split("/")[0]


def oneshot(host, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The agent's one-shot mode inside the host's namespace (as a script on that host would run it)."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
        "INTERFACE": IFACE,
        "ARP_GRATUITOUS_COUNT": LAB_AGENT_ENV["ARP_GRATUITOUS_COUNT"],
        "ARP_GRATUITOUS_INTERVAL": LAB_AGENT_ENV["ARP_GRATUITOUS_INTERVAL"],
        "ETCD_HOSTS": "http://198.51.100.1:1",  # nobody listens there: a one-shot never asks etcd
        **env,
    }
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run(["ip", "netns", "exec", host.ns, *agent_command(), *args], env=environment,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def one_line(proc: subprocess.CompletedProcess, stream: str = "stdout") -> str:
    text = getattr(proc, stream)
    assert text.count("\n") == 1 and text.endswith("\n"), (proc.returncode, proc.stdout, proc.stderr)
    return text.strip()


def test_associate_binds_and_announces_then_dissociate_unbinds(lab):
    h1 = lab.host(1)
    cap = lab.capture("oneshot-arp")

    done = oneshot(h1, "associate", VIP)
    assert done.returncode == 0, done
    line = one_line(done)
    assert line == f"link-agent: associated {VIP} on {IFACE}: bound now; 3 gratuitous ARP announcement(s) sent", line
    assert done.stderr == ""
    assert h1.has(VIP) and lab.bound(VIP) == ["h1"]
    # Three announcements, each a request and a reply from h1's MAC, 200 ms apart, the first at once.
    seen = wait_until(lambda: a if len(a := cap.announcements(ADDRESS, mac=h1.mac)) >= 6 else None, 5,
                      what="the six announcement frames")
    requests = [a for a in seen if a.is_gratuitous_request(ADDRESS)]
    assert len(requests) == 3 and len([a for a in seen if a.is_gratuitous_reply(ADDRESS)]) == 3, seen
    spread = requests[-1].time - requests[0].time
    assert 0.3 <= spread <= 1.5, spread
    assert lab.neigh(VIP) == h1.mac  # the client learnt where the IP is

    again = oneshot(h1, "associate", VIP)
    assert again.returncode == 0 and "it was already bound; 3 gratuitous ARP" in one_line(again)

    gone = oneshot(h1, "dissociate", VIP)
    assert gone.returncode == 0 and one_line(gone) == f"link-agent: dissociated {VIP} from {IFACE}: unbound now"
    assert not h1.has(VIP)
    nothing = oneshot(h1, "dissociate", ADDRESS)  # a bare address means /32
    assert nothing.returncode == 0 and "it was not bound (nothing to do)" in one_line(nothing)


def test_ipv6_is_bound_without_dad_and_unbound(lab):
    h1 = lab.host(1)
    done = oneshot(h1, "associate", "2001:db8::95")
    assert done.returncode == 0 and "2001:db8::95/128" in one_line(done) and "neighbour advertisement" in done.stdout
    assert h1.has("2001:db8::95/128")
    assert oneshot(h1, "dissociate", "2001:db8::95/128").returncode == 0 and not h1.has("2001:db8::95/128")


def test_exit_statuses_of_errors(lab):
    h2 = lab.host(2)
    bad_ip = oneshot(h2, "associate", "198.51.100.300")
    assert bad_ip.returncode == 2 and "not an IPv4 or IPv6 address" in one_line(bad_ip, "stderr") and bad_ip.stdout == ""
    network = oneshot(h2, "associate", "198.51.100.0/24")
    assert network.returncode == 2 and "network address" in network.stderr
    no_interface = oneshot(h2, "associate", VIP, INTERFACE=None)
    assert no_interface.returncode == 2 and "INTERFACE is required" in one_line(no_interface, "stderr")
    wrong_interface = oneshot(h2, "dissociate", VIP, INTERFACE="eth9")
    assert wrong_interface.returncode == 2 and "no such network interface" in wrong_interface.stderr
    usage = oneshot(h2, "associate")
    assert usage.returncode == 2 and "usage: link-agent" in usage.stderr

    # Netlink refusing: an IPv6 address on an interface where IPv6 is off.
    netns.exec_in(h2.ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{IFACE}.disable_ipv6=1")
    refused = oneshot(h2, "associate", "2001:db8::96")
    assert refused.returncode == 1, refused
    assert "netlink refused to add it on eth1" in one_line(refused, "stderr") and refused.stdout == ""
    assert lab.bound(VIP) == [] and not h2.has("2001:db8::96/128")
