"""ETCD_HOSTS with three members (one dies: no transition) and etcd over TLS."""
from __future__ import annotations

import pytest

from tests.integration.test_health import holds_for
from tests.lab import wait_until
from tests.lab.checks import BoundWatch
from tests.lab.etcd_members import Cluster, TlsMember

pytestmark = pytest.mark.lab

VIP = "198.51.100.80/32"


def snapshot(lab, ids):
    """What could change in a transition: each host's status, its last transition time, holder."""
    return {name: (o["status"], o["since"], o["holder"]) for name, o in lab.ip_objects(ids).items()}


@pytest.mark.lab_timeout(90)
def test_losing_one_member_of_three_causes_no_transition(lab):
    cluster = Cluster(lab).start()
    try:
        # link's defaults (2 s lease, 3 retries); the first member is the one agents talk to first.
        lab.start_agents(ETCD_HOSTS=cluster.urls, KEEPALIVE_INTERVAL="2s")
        ids = lab.add_vip(VIP)
        holder = lab.wait_agreement(VIP, ids, lab_etcd=False)
        before = snapshot(lab, ids)
        with BoundWatch(lab, VIP) as watch:
            cluster.members[0].kill()
            holds_for(lambda: snapshot(lab, ids) == before, 6.0, interval=0.2, what="no host changes state")
        assert {b for _, b in watch.samples} == {(holder,)}, watch.history()
    finally:
        cluster.stop()


def test_etcd_over_tls_with_client_certificates(lab):
    member = TlsMember(lab).start_healthy()
    try:
        certs = member.certs
        tls_env = {"ETCD_HOSTS": member.url, "ETCD_CACERT": str(certs["ca.pem"]),
                   "ETCD_TLS_CERT": str(certs["client.pem"]), "ETCD_TLS_KEY": str(certs["client.key"])}
        lab.start_agents(lab.hosts[:2], **tls_env)
        ids = lab.add_vip(VIP, lab.hosts[:2])
        holder = lab.wait_agreement(VIP, ids, lab_etcd=False)
        assert holder in ("h1", "h2")

        # A wrong CA: the agent says so plainly and in the same words each time.
        wrong = lab.host(3).start_agent(**{**tls_env, "ETCD_CACERT": str(certs["other-ca.pem"]), "FAULT_POLICY": "keep"})
        wrong.wait_ready(30)
        lab.add_vip(VIP, [lab.host(3)])
        wait_until(lambda: "TLS handshake with etcd failed" in lab.host(3).log_path.read_text(errors="replace"), 10,
                   what="a clear TLS error in h3's log")
        assert lab.bound(VIP) == [holder]
    finally:
        member.stop()


def test_a_missing_certificate_file_is_a_clear_startup_error(lab):
    agent = lab.host(1).start_agent(ETCD_HOSTS="https://198.51.100.5:2379", ETCD_CACERT=str(lab.workdir / "nope.pem"))
    wait_until(lambda: not agent.running(), 10, what="the agent to refuse to start")
    assert agent.proc.returncode == 2
    log = lab.host(1).log_path.read_text(errors="replace")
    assert "ETCD_CACERT=" in log and "not a readable file" in log
