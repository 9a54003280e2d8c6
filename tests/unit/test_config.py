import os

import pytest

from link.config import ConfigError, load, parse_duration

BASE = {"INTERFACE": "lo"}


def env(**extra):
    return {**BASE, **extra}


@pytest.mark.parametrize("text,seconds", [("3", 3.0), ("3s", 3.0), ("500ms", 0.5), ("1.5s", 1.5), ("1m30s", 90.0), ("0.25", 0.25)])
def test_durations(text, seconds):
    assert parse_duration("X", text) == seconds


@pytest.mark.parametrize("text", ["", "s", "3x", "ms500", "3 s", "-1s", "1s2"])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="X="):
        parse_duration("X", text)


def test_defaults():
    config = load(env(HOSTNAME="h1"))
    assert config.interface == "lo"
    assert config.hostname == "h1"
    assert config.port == 1313
    assert config.keepalive_interval == 2.0 and config.lease_ttl == 2
    assert config.keepalive_retry == 3
    assert config.arp_gratuitous_count == 3 and config.arp_gratuitous_interval == 1.0
    assert [str(e) for e in config.etcd_endpoints] == ["http://127.0.0.1:2379"]
    assert config.state_dir == "/var/lib/link"
    assert not config.auth_enabled


def test_hostname_defaults_to_the_machine():
    import socket

    assert load(BASE).hostname == socket.gethostname()


def test_lease_is_rounded_up_to_whole_seconds():
    assert load(env(KEEPALIVE_INTERVAL="500ms")).lease_ttl == 1
    assert load(env(KEEPALIVE_INTERVAL="2.5s")).lease_ttl == 3
    assert load(env(KEEPALIVE_INTERVAL="3")).lease_ttl == 3


def test_etcd_hosts_list():
    config = load(env(ETCD_HOSTS="http://198.51.100.1:2379, 198.51.100.2:2380,http://198.51.100.3"))
    assert [(e.host, e.port) for e in config.etcd_endpoints] == [("198.51.100.1", 2379), ("198.51.100.2", 2380), ("198.51.100.3", 2379)]


def test_user_alone_does_not_switch_auth_on():
    assert not load(env(USER="alice")).auth_enabled
    config = load(env(USER="alice", PASSWORD="s3cret"))
    assert config.auth_enabled and config.user == "alice"


@pytest.mark.parametrize(
    "variables,names",
    [
        ({"INTERFACE": ""}, "INTERFACE"),
        ({"INTERFACE": "no-such-if0"}, "INTERFACE"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"KEEPALIVE_INTERVAL": "soon"}, "KEEPALIVE_INTERVAL"),
        ({"KEEPALIVE_INTERVAL": "100ms"}, "KEEPALIVE_INTERVAL"),
        ({"KEEPALIVE_RETRY": "0"}, "KEEPALIVE_RETRY"),
        ({"ARP_GRATUITOUS_COUNT": "-1"}, "ARP_GRATUITOUS_COUNT"),
        ({"ARP_GRATUITOUS_INTERVAL": "fast"}, "ARP_GRATUITOUS_INTERVAL"),
        ({"ETCD_HOSTS": "ftp://198.51.100.1"}, "ETCD_HOSTS"),
        ({"ETCD_HOSTS": " , "}, "ETCD_HOSTS"),
        ({"ETCD_HOSTS": "http://198.51.100.1,https://198.51.100.2"}, "ETCD_HOSTS"),
        ({"ETCD_CACERT": "/nonexistent/ca.pem"}, "ETCD_CACERT"),
        ({"ETCD_TLS_CERT": "/etc/hostname"}, "ETCD_TLS_KEY"),
        ({"HOSTNAME": "a/b"}, "HOSTNAME"),
        ({"LOGGER_LEVEL": "chatty"}, "LOGGER_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(variables, names):
    with pytest.raises(ConfigError) as info:
        load({**BASE, **variables})
    message = str(info.value)
    assert names in message and "\n" not in message


def test_priority_and_preemption_settings():
    config = load(env(PRIORITY="5", PREEMPT="false", PREEMPT_DELAY="10s"))
    assert (config.priority, config.preempt, config.preempt_delay) == (5, False, 10.0)
    defaults = load(BASE)
    assert (defaults.priority, defaults.preempt, defaults.preempt_delay) == (10, True, 3.0)
    for bad in ({"PRIORITY": "256"}, {"PRIORITY": "-1"}, {"PREEMPT": "maybe"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load({**BASE, **bad})


def test_log_format_and_metrics_auth():
    config = load(env())
    assert config.logger_type == "text" and config.metrics_auth is True
    config = load(env(LOGGER_TYPE="JSON", METRICS_AUTH="false"))
    assert config.logger_type == "json" and config.metrics_auth is False
    for name, value in (("LOGGER_TYPE", "xml"), ("METRICS_AUTH", "maybe")):
        with pytest.raises(ConfigError, match=name):
            load(env(**{name: value}))


def test_api_listens_on_loopback_without_a_password():
    assert load(env()).bind_addresses == ("127.0.0.1", "::1")
    assert not load(env()).api_exposed
    # With a password, LinK's default: every address.
    assert load(env(PASSWORD="s3cret")).bind_addresses == ("0.0.0.0",)
    assert load(env(BIND_ADDRESS="127.0.0.1, [::1]")).bind_addresses == ("127.0.0.1", "::1")


@pytest.mark.parametrize("address", ["0.0.0.0", "198.51.100.10", "::", "127.0.0.1,198.51.100.10"])
def test_exposed_api_without_password_needs_the_opt_in(address):
    with pytest.raises(ConfigError) as info:
        load(env(BIND_ADDRESS=address))
    assert "BIND_ADDRESS" in str(info.value) and "PASSWORD" in str(info.value)
    config = load(env(BIND_ADDRESS=address, ALLOW_UNAUTHENTICATED_API="true"))
    assert config.api_exposed and not config.auth_enabled
    assert load(env(BIND_ADDRESS=address, PASSWORD="s3cret")).api_exposed


@pytest.mark.parametrize("variables,name", [
    ({"BIND_ADDRESS": "localhost"}, "BIND_ADDRESS"),
    ({"BIND_ADDRESS": "127.0.0.1,127.0.0.1"}, "BIND_ADDRESS"),
    ({"ALLOW_UNAUTHENTICATED_API": "perhaps"}, "ALLOW_UNAUTHENTICATED_API"),
    ({"SCRIPTS_DIR": "etc/link"}, "SCRIPTS_DIR"),
    ({"SCRIPT_USER": "no-such-user-here"}, "SCRIPT_USER"),
    ({"SCRIPT_USER": "root:no-such-group-here"}, "SCRIPT_USER"),
    ({"WEBHOOK_ALLOWED_URLS": "ftp://198.51.100.7"}, "WEBHOOK_ALLOWED_URLS"),
    ({"WEBHOOK_ALLOWED_URLS": "https://198.51.100.7/hook"}, "WEBHOOK_ALLOWED_URLS"),
    ({"MAX_VIPS": "0"}, "MAX_VIPS"),
])
def test_bad_security_settings_name_the_variable(variables, name):
    with pytest.raises(ConfigError, match=name):
        load(env(**variables))


def test_programs_never_run_as_root_by_default():
    from link.security_settings import parse_script_user

    as_root = parse_script_user("", euid=0)
    assert as_root.name == "nobody" and as_root.uid != 0
    assert parse_script_user("root", euid=0).uid == 0  # said explicitly, as keepalived's script_user root
    if os.geteuid() != 0:
        assert parse_script_user("").uid == os.geteuid()
        with pytest.raises(ConfigError, match="SCRIPT_USER"):
            parse_script_user("nobody")


def test_webhook_origins_are_normalised():
    config = load(env(WEBHOOK_ALLOWED_URLS="https://Hooks.Example.net, http://198.51.100.7:8080/,http://[2001:db8::7]"))
    assert config.webhook_allowed_urls == ("https://hooks.example.net:443", "http://198.51.100.7:8080",
                                           "http://[2001:db8::7]:80")


@pytest.mark.parametrize("directory", ["/", "/usr", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local", "/usr/local/bin",
                                       "/etc", "/lib", "/usr/lib", os.path.dirname(os.path.realpath("/bin/sh"))])
def test_scripts_dir_may_not_be_where_shells_and_interpreters_live(directory):
    # API users choose the arguments: with /bin/sh allowed, they would run `sh -c` anything.
    with pytest.raises(ConfigError) as info:
        load(env(SCRIPTS_DIR=directory))
    message = str(info.value)
    assert message.startswith(f"SCRIPTS_DIR {directory!r}") and "put no shell or interpreter in SCRIPTS_DIR" in message
    assert "\n" not in message


def test_scripts_dir_is_refused_through_a_symlink_to_a_system_directory(tmp_path):
    (tmp_path / "scripts").symlink_to("/usr")
    with pytest.raises(ConfigError, match=r"resolved to '/usr'\) is or holds the system directory /usr/"):
        load(env(SCRIPTS_DIR=str(tmp_path / "scripts")))


def test_the_dynamic_loaders_directory_is_refused_too():
    import glob

    loaders = [p for p in glob.glob("/lib*/ld-*.so*") if os.path.isfile(p)]
    if not loaders:
        pytest.skip("no dynamic loader under /lib* on this host")
    with pytest.raises(ConfigError, match="SCRIPTS_DIR"):
        load(env(SCRIPTS_DIR=os.path.dirname(os.path.realpath(loaders[0]))))


def test_an_existing_scripts_dir_others_could_change_stops_the_agent(tmp_path):
    shared = tmp_path / "scripts"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match=r"^SCRIPTS_DIR '.*/scripts' is writable by group or others \(mode 0777\)$"):
        load(env(SCRIPTS_DIR=str(shared)))
    shared.chmod(0o755)  # but it is under /tmp (1777), or owned by a non-root developer
    with pytest.raises(ConfigError, match=r"^SCRIPTS_DIR '.*/scripts' (is in .*, which is writable by group or others"
                                          r" \(mode 1777\)|is in .*, owned by uid \d+, not root|is owned by uid)"):
        load(env(SCRIPTS_DIR=str(shared)))


def test_a_scripts_dir_that_does_not_exist_yet_lets_the_agent_start(tmp_path):
    assert load(env(SCRIPTS_DIR=str(tmp_path / "later"))).scripts_dir == str(tmp_path / "later")


@pytest.mark.skipif(os.geteuid() != 0, reason="SCRIPTS_DIR must be root's: only root can make one that passes")
def test_a_root_owned_scripts_dir_is_accepted(scripts):
    assert load(env(SCRIPTS_DIR=str(scripts.path) + "/")).scripts_dir == str(scripts.path)
    os.chown(scripts.path, 65534, 65534)
    with pytest.raises(ConfigError, match="is owned by uid 65534, not root"):
        load(env(SCRIPTS_DIR=str(scripts.path)))


def test_webhook_origins_spell_ip_literals_one_way():
    from link.security_settings import origin

    config = load(env(WEBHOOK_ALLOWED_URLS="http://[2001:DB8:0::7], https://[2001:db8:0:0:0:0:0:8]:8443"))
    assert config.webhook_allowed_urls == ("http://[2001:db8::7]:80", "https://[2001:db8::8]:8443")
    assert origin("http://[2001:db8:0000::7]/hook") in config.webhook_allowed_urls
    assert origin("http://[2001:DB8::7]:80/x") == "http://[2001:db8::7]:80"
