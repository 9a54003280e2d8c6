"""`link-agent associate|dissociate IP`: argument handling and exit statuses, netlink faked."""
from __future__ import annotations

import errno
import io

import pytest

from link.agent import link_agent as agent
from link.agent import oneshot

ENV = {"INTERFACE": "lo", "ARP_GRATUITOUS_COUNT": "3", "ARP_GRATUITOUS_INTERVAL": "200ms",
       "ETCD_HOSTS": "this is not an etcd URL"}  # a broken etcd setting must not matter


class FakeBinder:
    bound: set[str] = set()
    refuse: OSError | None = None

    def __init__(self, ifname: str, vip: str) -> None:
        self.ifname, self.vip, self.closed = ifname, vip, False
        FakeBinder.last = self

    def bind(self) -> bool:
        if FakeBinder.refuse is not None:
            raise FakeBinder.refuse
        added = self.vip not in FakeBinder.bound
        FakeBinder.bound.add(self.vip)
        return added

    def unbind(self) -> bool:
        if FakeBinder.refuse is not None:
            raise FakeBinder.refuse
        was = self.vip in FakeBinder.bound
        FakeBinder.bound.discard(self.vip)
        return was

    def mac(self) -> str:
        return "02:00:00:00:01:01"

    def close(self) -> None:
        self.closed = True


class FakeAnnouncer:
    """The real Announcer's timing logic, frames counted instead of sent."""

    fail_sends = False

    def __init__(self, ifname, vip, mac, count, interval) -> None:
        self.count, self.interval, self.sent, self.closed = count, interval, 0, False
        self.left, self.due, self.clock = 0, 0.0, 0.0
        FakeAnnouncer.last = self

    def start(self) -> None:
        self.left, self.due = self.count, self.clock
        self.run_due()

    def next_due(self):
        return self.due if self.left else None

    def run_due(self) -> None:
        while self.left and self.clock >= self.due:
            if not FakeAnnouncer.fail_sends:
                self.sent += 1
            self.left -= 1
            self.due = self.clock + self.interval

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def fresh():
    FakeBinder.bound, FakeBinder.refuse, FakeAnnouncer.fail_sends = set(), None, False
    yield


def call(mode: str, ip: str, env=None):
    out, err, sleeps = io.StringIO(), io.StringIO(), []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        FakeAnnouncer.last.clock = FakeAnnouncer.last.due  # time passes until the next one is due

    code = oneshot.run(mode, ip, ENV if env is None else env, out=out, err=err, binder_factory=FakeBinder,
                       announcer_factory=FakeAnnouncer, sleep=sleep)
    return code, out.getvalue(), err.getvalue(), sleeps


def test_associate_binds_announces_count_times_and_says_so_in_one_line():
    code, out, err, sleeps = call("associate", "198.51.100.95")
    assert code == 0 and err == ""
    assert out.count("\n") == 1 and "associated 198.51.100.95/32 on lo: bound now; 3 gratuitous ARP" in out
    assert FakeBinder.bound == {"198.51.100.95/32"} and FakeAnnouncer.last.sent == 3
    assert len(sleeps) == 2  # the first at once, then two waits
    assert FakeBinder.last.closed and FakeAnnouncer.last.closed


def test_associate_again_says_it_was_already_bound_and_announces_again():
    call("associate", "198.51.100.95/32")
    code, out, _, _ = call("associate", "198.51.100.95/32")
    assert code == 0 and "it was already bound; 3 gratuitous ARP" in out


def test_ipv6_is_announced_with_neighbour_advertisements():
    code, out, _, _ = call("associate", "2001:db8::95")
    assert code == 0 and "2001:db8::95/128" in out and "unsolicited neighbour advertisement" in out


def test_no_announcement_when_the_count_is_zero():
    code, out, _, _ = call("associate", "198.51.100.95", {**ENV, "ARP_GRATUITOUS_COUNT": "0"})
    assert code == 0 and "no announcement" in out


def test_dissociate_says_whether_it_was_bound():
    call("associate", "198.51.100.95")
    code, out, err, _ = call("dissociate", "198.51.100.95")
    assert (code, err) == (0, "") and "dissociated 198.51.100.95/32 from lo: unbound now" in out
    code, out, _, _ = call("dissociate", "198.51.100.95")
    assert code == 0 and "it was not bound (nothing to do)" in out


@pytest.mark.parametrize("mode", ["associate", "dissociate"])
def test_netlink_refusing_is_a_failure_with_status_1(mode):
    FakeBinder.refuse = OSError(errno.EACCES, "Permission denied")
    code, out, err, _ = call(mode, "198.51.100.95")
    assert code == 1 and out == "" and err.count("\n") == 1 and "netlink refused" in err and "Permission denied" in err


def test_announcements_that_cannot_be_sent_are_a_failure():
    FakeAnnouncer.fail_sends = True
    code, _, err, _ = call("associate", "198.51.100.95")
    assert code == 1 and "bound now on lo, but only 0 of 3" in err


@pytest.mark.parametrize("ip", ["x", "198.51.100.0/24", "224.0.0.1", "", "198.51.100.300"])
def test_a_bad_ip_is_a_usage_error(ip):
    code, out, err, _ = call("associate", ip)
    assert code == 2 and out == "" and err.startswith("link-agent associate: ip")
    assert FakeBinder.bound == set()


@pytest.mark.parametrize("env, words", [
    ({}, "INTERFACE is required"),
    ({"INTERFACE": "no-such-if0"}, "no such network interface"),
    ({"INTERFACE": "lo", "ARP_GRATUITOUS_COUNT": "many"}, "ARP_GRATUITOUS_COUNT"),
    ({"INTERFACE": "lo", "ARP_GRATUITOUS_INTERVAL": "soon"}, "ARP_GRATUITOUS_INTERVAL"),
])
def test_configuration_errors_are_status_2(env, words):
    code, _, err, _ = call("dissociate", "198.51.100.95", env)
    assert code == 2 and words in err


def test_the_agent_dispatches_the_modes(monkeypatch):
    seen = []
    monkeypatch.setattr(oneshot, "run", lambda mode, ip: seen.append((mode, ip)) or 0)
    assert agent.main(["associate", "198.51.100.95/32"]) == 0
    assert agent.main(["dissociate", "2001:db8::95"]) == 0
    assert seen == [("associate", "198.51.100.95/32"), ("dissociate", "2001:db8::95")]


@pytest.mark.parametrize("argv", [["associate"], ["dissociate"], ["associate", "a", "b"], ["attach", "198.51.100.95"]])
def test_the_agent_refuses_bad_usage_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        agent.main(argv)
    assert exc.value.code == 2 and "usage: link-agent" in capsys.readouterr().err


def test_a_bad_ip_through_the_agent_is_status_2(monkeypatch, capsys):
    monkeypatch.setenv("INTERFACE", "lo")
    assert agent.main(["associate", "not-an-ip"]) == 2
    assert "not an IPv4 or IPv6 address" in capsys.readouterr().err


def test_help_documents_the_modes(capsys):
    with pytest.raises(SystemExit) as exc:
        agent.main(["--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    assert "associate IP" in text and "dissociate IP" in text and "exit status: 0 done" in text


def test_plain_link_agent_still_runs_the_agent(monkeypatch, capsys):
    # No mode: the agent's own start-up (here stopped at its configuration check).
    monkeypatch.delenv("INTERFACE", raising=False)
    assert agent.main([]) == 2
    assert "INTERFACE is required" in capsys.readouterr().err
