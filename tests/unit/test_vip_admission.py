"""Issue 14, points 4, 10 and 13: what a new VIP may not be or call, and what a binder's error
never shows. Fakes only at the seams: the supervisor (pipe), etcd (EtcdPort), netlink and DNS
(the functions ReservedAddresses is given), and a real socket on 127.0.0.1 for the HTTP answers."""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading

import pytest

from link.api import make_app
from link.api.agents_directory import HOSTS_PREFIX, HOSTS_TTL, HostsDirectory, decode_addresses, hosts_key
from link.api.reserved import HostAddress, ReservedAddresses, own_addresses
from link.api.admission import check_webhook_allowed
from link.api.validation import ApiError, parse_add_body
from link.checks import run_check
from link.config import load
from link.vocabulary.vip import (
    VipError,
    VipSpec,
    address_of,
    candidate_key,
    candidates_prefix_of_address,
    lock_key,
    lock_prefix_of_address,
    parse_vip,
    same_address_as,
)
from link.worker.binders.runner import Action, ActionFailed
from link.worker.binders.webhook import WebhookBinder, post
from tests.unit.api_fakes import FakeSupervisor, wsgi_request
from tests.unit.fake_etcd import FakeEtcd

SECRET = "an-example-secret-0123456789"
VIP = "198.51.100.50/32"
JSON_HEADERS = {"Content-Type": "application/json"}
HOOK = {"ip": VIP, "binder": "webhook", "webhook": {"url": "https://hooks.example.net/link", "secret": SECRET}}


def config(**env: str):
    return load({"INTERFACE": "lo", "HOSTNAME": "h1", "ETCD_HOSTS": "http://198.51.100.1:2379", **env})


# ------------------------------------------------------------------------------ point 4
def test_without_webhook_allowed_urls_a_webhook_binder_is_refused_naming_the_setting():
    request = parse_add_body(json.dumps(HOOK).encode())
    with pytest.raises(ApiError) as exc:
        check_webhook_allowed(request, ())
    assert exc.value.status == 400 and "WEBHOOK_ALLOWED_URLS=https://hooks.example.net:443" in str(exc.value)


def test_a_url_off_the_list_is_refused_naming_the_list_and_one_on_it_passes():
    request = parse_add_body(json.dumps(HOOK).encode())
    allowed = config(WEBHOOK_ALLOWED_URLS="https://hooks.example.net:8443,http://198.51.100.100").webhook_allowed_urls
    with pytest.raises(ApiError) as exc:
        check_webhook_allowed(request, allowed)
    assert exc.value.status == 400
    assert "https://hooks.example.net:443 is not on WEBHOOK_ALLOWED_URLS (https://hooks.example.net:8443" in str(exc.value)
    check_webhook_allowed(request, config(WEBHOOK_ALLOWED_URLS="https://HOOKS.example.net").webhook_allowed_urls)
    check_webhook_allowed(parse_add_body(json.dumps({"ip": VIP}).encode()), ())  # no webhook: nothing to allow


def test_the_api_refuses_a_webhook_vip_before_the_supervisor_hears_of_it():
    sup = FakeSupervisor()
    app = make_app(sup, version="1")
    res = wsgi_request(app, "POST", "/ips", HOOK, JSON_HEADERS)
    assert res.status == 400 and "WEBHOOK_ALLOWED_URLS" in res.json()["error"]
    assert not [r for r in sup.requests if r["op"] == "add"]
    allowed = make_app(sup, version="1", webhook_allowed_urls=("https://hooks.example.net:443",))
    assert wsgi_request(allowed, "POST", "/ips", HOOK, JSON_HEADERS).status == 201


def test_the_worker_refuses_to_call_a_url_no_longer_allowed(receiver_socket):
    """The VIP was kept in STATE_DIR while WEBHOOK_ALLOWED_URLS changed: no POST, a clear error."""
    port, seen = receiver_socket(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    url = f"http://127.0.0.1:{port}/hook"
    spec = VipSpec(id="vip-1", ip=VIP, binder="webhook", binder_settings={"url": url, "secret": SECRET, "timeout": 1.0})
    binder = WebhookBinder(config(WEBHOOK_ALLOWED_URLS="http://127.0.0.1:1"), spec, lambda: None)
    try:
        with pytest.raises(ActionFailed) as exc:
            binder._perform(Action("activate", "ACTIVATED", "elected"), 1)
        assert f"http://127.0.0.1:{port} is not on WEBHOOK_ALLOWED_URLS (http://127.0.0.1:1)" in str(exc.value)
        assert seen == []  # never connected
        allowed = WebhookBinder(config(WEBHOOK_ALLOWED_URLS=f"http://127.0.0.1:{port}"), spec, lambda: None)
        try:
            allowed._perform(Action("activate", "ACTIVATED", "elected"), 1)
        finally:
            allowed.close()
        assert len(seen) == 1
    finally:
        binder.close()


# ------------------------------------------------------------------------------ point 13
@pytest.fixture
def receiver_socket():
    """A raw TCP server on 127.0.0.1 that answers `answer` to each connection (and records it)."""
    servers = []

    def start(answer: bytes) -> tuple[int, list[bytes]]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(5)
        seen: list[bytes] = []

        def serve() -> None:
            for _ in range(8):  # bounded: a test makes a few requests at most
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.settimeout(2)
                    try:
                        seen.append(conn.recv(65536))
                        conn.sendall(answer)
                    except OSError:
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        servers.append((listener, thread))
        return listener.getsockname()[1], seen

    yield start
    for listener, thread in servers:
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        listener.close()
        thread.join(5)


LEAK = b"etcd-root-password=hunter2"


@pytest.mark.parametrize("answer, shown", [
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s" % (len(LEAK), LEAK), "answered 500"),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(LEAK), LEAK), "answered 404"),
    (LEAK + b"\r\n\r\n", "the answer is not HTTP (BadStatusLine)"),  # a service that is not HTTP
])
def test_a_webhook_error_shows_the_status_never_the_body(receiver_socket, answer, shown):
    port, _ = receiver_socket(answer)
    with pytest.raises(ActionFailed) as exc:
        post(f"http://127.0.0.1:{port}/hook", SECRET, b"{}", 2.0)
    assert shown in str(exc.value) and b"hunter2" not in str(exc.value).encode()


def test_a_redirect_is_a_failure_and_is_not_followed(receiver_socket):
    port, seen = receiver_socket(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ActionFailed) as exc:
        post(f"http://127.0.0.1:{port}/hook", SECRET, b"{}", 2.0)
    assert "answered 307: redirects are not followed" in str(exc.value) and len(seen) == 1


@pytest.mark.parametrize("answer, shown", [
    (b"HTTP/1.1 503 Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(LEAK), LEAK), "status 503"),
    (LEAK + b"\r\n\r\n", "the answer is not HTTP (BadStatusLine)"),
])
def test_an_http_check_shows_the_status_never_the_body(receiver_socket, answer, shown):
    port, _ = receiver_socket(answer)
    result = run_check({"type": "HTTP", "url": f"http://127.0.0.1:{port}/", "expect_status": 200}, 2.0)
    assert not result.ok and shown in result.detail and "hunter2" not in result.detail


# ------------------------------------------------------------------------------ point 10
def reserved(addresses=(), etcd: FakeEtcd | None = None, resolved=None, **env: str) -> ReservedAddresses:
    conf = config(**env)
    directory = None
    if etcd is not None:
        directory = HostsDirectory(etcd.client(), "h1", lambda: ["198.51.100.11"])
    names = resolved or {}
    return ReservedAddresses(conf, directory, addresses=lambda: list(addresses),
                             resolver=lambda host: names.get(host, {host} if host[0].isdigit() else set()))


def refused(guard: ReservedAddresses, vip: str, managed: set[str] = frozenset()) -> str:
    with pytest.raises(ApiError) as exc:
        guard.check(vip, lambda: set(managed))
    assert exc.value.status == 409
    return str(exc.value)


def test_the_hosts_own_addresses_are_refused_on_any_interface_both_families():
    guard = reserved([HostAddress("198.51.100.11", "eth1", None), HostAddress("2001:db8::11", "eth1", None),
                      HostAddress("203.0.113.7", "eth0", 86400)])  # a DHCP address: a long lifetime
    assert "already an address of this host (on eth1" in refused(guard, "198.51.100.11/24")
    assert "on eth1" in refused(guard, "2001:db8::11/128")
    assert "on eth0" in refused(guard, "203.0.113.7/32")
    guard.check("198.51.100.50/32", lambda: set())  # an address nobody has


def test_an_address_link_put_there_is_a_duplicate_or_a_retry_never_refused_for_good():
    lease = config().lease_ttl
    guard = reserved([HostAddress("198.51.100.50", "eth1", lease)])
    guard.check(VIP, lambda: {VIP})  # this agent's own VIP: the supervisor answers 409 duplicate
    message = refused(guard, VIP)
    assert "retry after KEEPALIVE_INTERVAL" in message and "goes away by itself" in message


def test_the_etcd_endpoints_addresses_are_refused_names_resolved():
    assert "address of etcd (ETCD_HOSTS http://198.51.100.1:2379)" in refused(reserved(), "198.51.100.1/32")
    named = reserved(resolved={"etcd.example.net": {"203.0.113.5"}}, ETCD_HOSTS="https://etcd.example.net:2379")
    assert "address of etcd" in refused(named, "203.0.113.5/32")


def test_the_peers_published_addresses_are_refused_and_etcd_down_does_not_block_an_add():
    etcd = FakeEtcd()
    peer = HostsDirectory(etcd.client(), "h2", lambda: ["198.51.100.12", "2001:db8::12"])
    peer.publish_once()
    assert json.loads(etcd.keys[hosts_key("h2")].value) == {"addresses": ["198.51.100.12", "2001:db8::12"]}
    assert etcd.leases[etcd.keys[hosts_key("h2")].lease] == HOSTS_TTL
    guard = reserved(etcd=etcd)
    assert "address of the peer h2" in refused(guard, "198.51.100.12/32")
    assert "address of the peer h2" in refused(guard, "2001:db8::12/128")
    # A key without a lease (anyone with etcd access) is not a peer; nor is a malformed value.
    etcd.put_raw(HOSTS_PREFIX + "mallory", json.dumps({"addresses": ["198.51.100.60"]}))
    guard.check("198.51.100.60/32", lambda: set())
    etcd.down = True
    guard.check("198.51.100.12/32", lambda: set())  # availability first: the other checks were made


def test_the_published_key_follows_the_addresses_and_comes_back_after_its_lease_expired():
    etcd = FakeEtcd()
    current = ["198.51.100.12"]
    peer = HostsDirectory(etcd.client(), "h2", lambda: list(current))
    peer.publish_once()
    current.append("198.51.100.13")
    peer.publish_once()
    assert json.loads(etcd.keys[hosts_key("h2")].value)["addresses"] == ["198.51.100.12", "198.51.100.13"]
    etcd.expire(etcd.keys[hosts_key("h2")].lease)  # etcd was unreachable longer than the lease
    peer.publish_once()
    assert json.loads(etcd.keys[hosts_key("h2")].value)["addresses"] == ["198.51.100.12", "198.51.100.13"]


def test_what_a_host_publishes_leaves_out_link_vips_other_interfaces_and_loopback():
    addresses = [HostAddress("198.51.100.12", "eth1", None), HostAddress("198.51.100.50", "eth1", 2),
                 HostAddress("127.0.0.1", "lo", None), HostAddress("203.0.113.9", "eth0", None)]
    assert own_addresses(addresses, "eth1", 2) == ["198.51.100.12"]


@pytest.mark.parametrize("value", ["", "{", "[]", '{"addresses": "198.51.100.12"}', '{"addresses": [1e400, null, "x"]}',
                                   "\udcff", '{"addresses": [' + "[" * 5000 + "]" * 5000 + "]}"])
def test_a_malformed_published_value_is_no_address_and_never_raises(value):
    assert decode_addresses(value) == []


def test_the_api_asks_the_reserved_check_before_the_supervisor_with_the_vips_it_manages():
    sup = FakeSupervisor()
    lease = config().lease_ttl
    guard = reserved([HostAddress("198.51.100.11", "eth1", None), HostAddress("198.51.100.50", "eth1", lease)])
    app = make_app(sup, version="1", reserved=guard.check)
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.11/24"}, JSON_HEADERS)
    assert res.status == 409 and "already an address of this host" in res.json()["error"]
    res = wsgi_request(app, "POST", "/ips", {"ip": VIP}, JSON_HEADERS)  # link's, but not this agent's
    assert res.status == 409 and "retry after KEEPALIVE_INTERVAL" in res.json()["error"]
    assert not [r for r in sup.requests if r["op"] == "add"]
    sup.ips["vip-1"] = {"id": "vip-1", "ip": VIP}  # now it is this agent's: the supervisor decides (duplicate)
    wsgi_request(app, "POST", "/ips", {"ip": VIP}, JSON_HEADERS)
    assert [r["ip"] for r in sup.requests if r["op"] == "add"] == [VIP]


# ------------------------------------------------------------------------------ one address, one VIP
def test_address_of_is_the_one_notion_of_the_same_vip_whatever_the_prefix():
    assert address_of("198.51.100.5/32") == address_of("198.51.100.5/24") == ipaddress.ip_address("198.51.100.5")
    assert address_of("2001:db8::5/64") == address_of("2001:db8::5/128")
    assert address_of("198.51.100.5/32") != address_of("198.51.100.50/32")
    # What the supervisor's duplicate test on add calls (link/supervisor/requests.py, RequestHandlers.add_ip).
    assert same_address_as("198.51.100.5/32", ["198.51.100.50/32", "198.51.100.5/24"]) == "198.51.100.5/24"
    assert same_address_as("198.51.100.5/32", ["198.51.100.50/32", "2001:db8::5/128"]) is None
    assert same_address_as("198.51.100.5/32", ["None", "", "198.51.100.5/32"]) == "198.51.100.5/32"
    assert lock_prefix_of_address("198.51.100.5/24") == "/link/default/198.51.100.5_"
    assert candidates_prefix_of_address("2001:db8::5/64") == "/link/ips/2001:db8::5_"


def test_this_agents_vip_under_another_prefix_is_refused_and_the_same_one_left_to_the_supervisor():
    guard = reserved()
    assert "this agent's VIP 198.51.100.5/24" in refused(guard, "198.51.100.5/32", {"198.51.100.5/24"})
    assert "this agent's VIP 2001:db8::5/64" in refused(guard, "2001:db8::5/128", {"2001:db8::5/64"})
    guard.check("198.51.100.5/24", lambda: {"198.51.100.5/24"})  # the same VIP: "duplicate" is the supervisor's
    guard.check("198.51.100.5/32", lambda: {"198.51.100.50/32"})


def test_a_lock_or_a_leased_candidate_of_the_address_under_another_prefix_in_etcd_is_refused():
    etcd = FakeEtcd()
    guard = reserved(etcd=etcd)
    lease, _ = etcd.client().grant_lease(30)
    # Another host's VIP 198.51.100.5/24: its lock, with no lease (it still gets bound: taken over).
    etcd.put_raw(lock_key("198.51.100.5/24"), "h2")
    message = refused(guard, "198.51.100.5/32")
    assert "/link/default/198.51.100.5_24, held by h2" in message and "use that prefix length" in message
    guard.check("198.51.100.5/24", lambda: set())  # the same VIP on another host: what link is for
    guard.check("198.51.100.50/32", lambda: set())  # .5_ is not .50_
    etcd.keys.clear()
    etcd.put_raw(candidate_key("2001:db8::5/64", "h3"), "{}", lease)
    assert "/link/ips/2001:db8::5_64/h3, h3 competes for it" in refused(guard, "2001:db8::5/128")
    etcd.keys.clear()
    etcd.put_raw(candidate_key("2001:db8::5/64", "mallory"), "{}")  # no lease: anyone's, not a host's
    etcd.put_raw("/link/default/2001:db8::5_junk", "x")  # not a VIP's key
    guard.check("2001:db8::5/128", lambda: set())


def test_a_peers_name_read_from_etcd_is_escaped_in_the_409():
    etcd = FakeEtcd()
    lease, _ = etcd.client().grant_lease(30)
    etcd.put_raw(HOSTS_PREFIX + "h2\n<script>\x1b[2J", json.dumps({"addresses": ["198.51.100.12"]}), lease)
    message = refused(reserved(etcd=etcd), "198.51.100.12/32")
    assert "\n" not in message and "\x1b" not in message and "'h2\\n<script>\\x1b[2J'" in message
    etcd.put_raw(lock_key("198.51.100.13/24"), "h9\r\nforged")
    message = refused(reserved(etcd=etcd), "198.51.100.13/32")
    assert "\r" not in message and "\n" not in message and "'h9\\r\\nforged'" in message


# ------------------------------------------------------------------------------ etcd's names
def test_etcds_name_is_resolved_at_start_and_its_last_addresses_kept_with_one_warning_per_outage(caplog):
    caplog.set_level(logging.INFO, logger="link.api.reserved")
    answers = {"etcd.example.net": {"203.0.113.5"}}
    calls = []

    def resolver(host: str) -> set[str]:
        calls.append(host)
        return set(answers.get(host, ()))

    guard = ReservedAddresses(config(ETCD_HOSTS="https://etcd.example.net:2379"), None, addresses=lambda: [],
                              resolver=resolver)
    guard.endpoints.current()  # what start() runs in a thread
    assert calls == ["etcd.example.net"]
    answers.clear()  # DNS goes down
    for _ in range(3):
        assert "address of etcd" in refused(guard, "203.0.113.5/32")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "last known addresses (203.0.113.5)" in warnings[0].getMessage()
    answers["etcd.example.net"] = {"203.0.113.6"}  # back, moved
    guard.check("203.0.113.5/32", lambda: set())
    assert "address of etcd" in refused(guard, "203.0.113.6/32")
    assert any("resolves again" in r.getMessage() for r in caplog.records)
    answers.clear()
    refused(guard, "203.0.113.6/32")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # a second outage, a second line


def test_a_name_never_resolved_says_so_once_and_the_add_goes_on(caplog):
    caplog.set_level(logging.INFO, logger="link.api.reserved")
    guard = ReservedAddresses(config(ETCD_HOSTS="https://etcd.example.net:2379"), None, addresses=lambda: [],
                              resolver=lambda host: set())
    guard.check("203.0.113.5/32", lambda: set())
    guard.check("203.0.113.6/32", lambda: set())
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "etcd.example.net (ETCD_HOSTS) does not resolve" in warning and "none known" in warning


# ------------------------------------------------------------------------------ not a host's address
@pytest.mark.parametrize("ip, words", [
    ("::ffff:198.51.100.11", "IPv4-mapped"),
    ("::ffff:127.0.0.1/128", "IPv4-mapped"),
    ("::198.51.100.11", "IPv4-compatible"),
    ("::2/128", "IPv4-compatible"),
    ("255.255.255.255", "240.0.0.0/4"),
    ("240.0.0.1/32", "240.0.0.0/4"),
    ("0.1.2.3/32", "0.0.0.0/8"),
    ("127.0.0.2/32", "loopback"),
    ("::1", "loopback"),
    ("224.0.0.18", "multicast"),
    ("ff02::12", "multicast"),
    ("::/128", "unspecified"),
    ("fe80::1%eth0/64", "a zone (%...)"),
    ("fe80::1%\udcff", "a zone (%...)"),
])
def test_addresses_that_are_no_hosts_unicast_address_are_refused_with_400_naming_why(ip, words):
    with pytest.raises(VipError) as exc:
        parse_vip(ip)
    assert words in str(exc.value)
    sup = FakeSupervisor()
    res = wsgi_request(make_app(sup, version="1"), "POST", "/ips", {"ip": ip}, JSON_HEADERS)
    assert res.status == 400 and words in res.json()["error"]
    assert not [r for r in sup.requests if r["op"] == "add"]


@pytest.mark.parametrize("ip", ["169.254.1.1/16", "fe80::5/64", "2001:db8::ffff:c633:640b/64", "198.51.100.11/24"])
def test_link_local_and_ordinary_addresses_stay_accepted_as_linkv2_takes_them(ip):
    assert parse_vip(ip) == ip
