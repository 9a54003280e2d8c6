"""The Debian package, for real: build it, install it with apt, run the installed agent, purge it.

Runs as root on Debian (12) with apt: `packaging/build-deb.sh`, run from a copy of this work
tree in a directory only root may enter (as a clone in /root), builds dist/link_<version>_all.deb,
`apt-get install` installs it with Debian's python3 and Debian's own libraries, and the
installed /usr/bin/link-agent runs in a namespace lab (tests/lab: 198.51.100.0/24 only, no
link to the machine's interfaces) under the identity its systemd unit gives it: the user
`link`, only CAP_NET_ADMIN and CAP_NET_RAW (ambient), no_new_privs, memory-deny-write-execute
(the kernel's PR_SET_MDWE, the same rule as the unit's MemoryDenyWriteExecute=yes) and the
unit's system call filter (SystemCallFilter=, expanded by systemd-analyze, loaded with
libseccomp: denied calls fail with EPERM, as SystemCallErrorNumber=EPERM says).
The package is purged at the end, whatever happened.

Slow (dpkg-buildpackage, apt, ~1 minute): marked `package`. Skipped only when it cannot run:
not root, or not a Debian system with apt. It purges the package `link` from the machine, so
it refuses to run where link.service is enabled (a real installation).
"""
from __future__ import annotations

import ctypes
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest

import link
import tests.lab.lab as lab_module
from tests.lab import ETCD_URL, IFACE, lock_key, wait_until

pytestmark = [pytest.mark.package, pytest.mark.lab_timeout(900), pytest.mark.hosts(1)]

REPO = Path(__file__).resolve().parents[2]
VERSION = link.__version__
DEB = REPO / "dist" / f"link_{VERSION}_all.deb"
UNIT = Path("/lib/systemd/system/link.service")
RULES = Path("/usr/share/link/prometheus/link-rules.yml")
VIP = "198.51.100.50/32"
OTHER_VIP = "198.51.100.51/32"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
APT_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
# Debian's libraries that the installed agent must import (not a copy from PyPI).
LIBRARIES = ("etcd3", "grpc", "google.protobuf", "pyroute2", "scapy", "bottle", "waitress", "setproctitle", "psutil",
             "prometheus_client")


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    return {k: v.strip('"') for k, _, v in (line.partition("=") for line in text.splitlines()) if k}


def cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "the package test needs root (apt-get install, network namespaces)"
    info = _os_release()
    if info.get("ID") != "debian" and "debian" not in info.get("ID_LIKE", "").split():
        return f"the package test needs Debian (this is {info.get('PRETTY_NAME', 'not Debian')})"
    for tool in ("apt-get", "dpkg", "dpkg-query"):
        if not shutil.which(tool, path=SYSTEM_PATH):
            return f"the package test needs apt and dpkg ({tool} is missing)"
    if Path("/etc/systemd/system/multi-user.target.wants/link.service").exists():
        return "link.service is enabled on this machine: the package test would purge a real installation"
    return None


def run(argv: list[str], timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """A command with the system's PATH (never a pyenv or virtualenv python), output captured."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=kw.pop("env", APT_ENV), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def installed(package: str) -> bool:
    proc = run(["dpkg-query", "-W", "-f=${Status}", package], timeout=30, check=False)
    return proc.returncode == 0 and "install ok installed" in proc.stdout


def apt_install(*what: str) -> None:
    """apt-get install; on failure (stale package lists) update once and try again."""
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *what]
    if run(argv, timeout=600, check=False).returncode != 0:
        run(["apt-get", "update", "-q"], timeout=600)
        run(argv, timeout=600)


def purge() -> None:
    if run(["dpkg-query", "-W", "link"], timeout=30, check=False).returncode == 0:  # installed or config-files
        run(["apt-get", "purge", "-y", "-q", "link"], timeout=600)


def build_in_a_private_clone(private: Path) -> subprocess.CompletedProcess:
    """packaging/build-deb.sh run from a copy of this work tree in `private`, a directory only
    root may enter (as root's clones in /root, mode 0700), with TMPDIR in there too; the .deb
    is copied to dist/ of this checkout."""
    os.chmod(private, 0o700)
    assert private.stat().st_uid == 0 and Path(private).parent.stat().st_uid == 0
    clone = private / "link"
    names = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout=60).stdout
    for name in filter(None, names.split("\0")):
        source, target = REPO / name, clone / name
        if not os.path.lexists(source):
            continue  # deleted from the work tree, not yet from the index
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    run(["git", "init", "-q", str(clone)], timeout=60)  # a clone: build-deb.sh lists its files with git
    tmp = private / "tmp"
    tmp.mkdir(mode=0o700)
    # The case at stake: the unprivileged user lintian runs as cannot even reach the clone.
    reach = run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "test", "-r", str(clone / "setup.py")],
                timeout=30, check=False, cwd="/")
    assert reach.returncode == 1, f"nobody can read {clone}: not the case under test ({reach.stderr})"
    build = run(["bash", str(clone / "packaging" / "build-deb.sh")], timeout=900, cwd=clone, env={**APT_ENV, "TMPDIR": str(tmp)})
    built = clone / "dist" / DEB.name
    assert built.is_file(), f"build-deb.sh did not leave {built}:\n{build.stdout}"
    assert not list(tmp.iterdir()), f"build-deb.sh left its build directory behind: {list(tmp.iterdir())}"
    DEB.parent.mkdir(exist_ok=True)
    shutil.copy2(built, DEB)
    return build


@pytest.fixture(scope="module")
def package():
    """Build the .deb with packaging/build-deb.sh from a private clone, install it with apt;
    purge it afterwards."""
    reason = cannot_run()
    if reason:
        pytest.skip(reason)
    # What the lab and the VIP check need, from Debian too.
    needed = [p for p, tool in (("curl", "/usr/bin/curl"), ("etcd-server", "/usr/bin/etcd"), ("iproute2", "/usr/bin/ip"))
              if not Path(tool).exists()]
    if needed:
        apt_install(*needed)
    private = Path(tempfile.mkdtemp(prefix="link-deb-test."))
    try:
        build = build_in_a_private_clone(private)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    assert DEB.is_file(), f"build-deb.sh did not leave {DEB}:\n{build.stdout}"
    try:
        purge()  # a leftover of an earlier run: start from nothing
        apt_install(str(DEB))
        yield build
    finally:
        purge()


# ---------------------------------------------------------------- what is installed
def test_build_is_lintian_clean(package):
    out = package.stdout
    assert "lintian: no errors" in out, out
    tags = [line.strip() for line in out.splitlines() if re.match(r"^\s+[EW]: ", line)]
    assert not tags, f"lintian errors or warnings: {tags}"


def test_installed_commands_use_debians_python_and_libraries(package):
    for script in ("/usr/bin/link-agent", "/usr/bin/link-client"):
        with open(script, encoding="utf-8") as fh:
            assert fh.readline().strip() == "#!/usr/bin/python3", f"{script} must run Debian's /usr/bin/python3"
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}  # no PYTHONPATH: what is installed, not the checkout
    help_text = run(["/usr/bin/link-agent", "--help"], timeout=60, env=env, cwd="/").stdout
    for name in ("INTERFACE", "ETCD_HOSTS", "KEEPALIVE_INTERVAL", "STATE_DIR"):
        assert name in help_text
    assert run(["/usr/bin/link-agent", "--version"], timeout=60, env=env, cwd="/").stdout.strip() == f"link {VERSION}"
    assert VERSION in run(["/usr/bin/link-client", "--version"], timeout=60, env=env, cwd="/").stdout
    # Without INTERFACE the agent stops with one line naming it, status 2 (the unit does not restart it).
    bare = run(["/usr/bin/link-agent"], timeout=60, env=env, cwd="/", check=False)
    assert bare.returncode == 2 and "INTERFACE" in bare.stderr, bare

    probe = "import importlib, json, sys; print(json.dumps({m: importlib.import_module(m).__file__ for m in sys.argv[1:]}))"
    files = json.loads(run(["/usr/bin/python3", "-c", probe, "link", *LIBRARIES], timeout=60, env=env, cwd="/").stdout)
    for module, path in files.items():
        assert path.startswith("/usr/lib/python3/dist-packages/"), f"{module} comes from {path}"
        owner = run(["dpkg-query", "-S", path], timeout=30, check=False)
        assert owner.returncode == 0, f"{path} ({module}) belongs to no Debian package: {owner.stderr.strip()}"
        if module == "link":
            assert owner.stdout.startswith("link:"), owner.stdout


def test_installed_files(package):
    listing = set(run(["dpkg-query", "-L", "link"], timeout=30).stdout.split())
    for path in ("/usr/bin/link-agent", "/usr/bin/link-client", str(UNIT), "/etc/default/link",
                 "/usr/share/man/man8/link-agent.8.gz", "/usr/share/man/man1/link-client.1.gz",
                 "/usr/share/doc/link/README.Debian", "/usr/lib/python3/dist-packages/link/agent/link_agent.py", str(RULES)):
        assert path in listing, f"the package does not install {path}"
    # The Prometheus rules as tested by tests/prometheus/link-rules.test.yml, byte for byte.
    assert RULES.read_bytes() == (REPO / "packaging" / "prometheus" / "link-rules.yml").read_bytes()
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "link"], timeout=30).stdout
    assert "/etc/default/link" in conffiles, "/etc/default/link must be a conffile (kept on upgrade)"
    assert (REPO / "packaging" / "debian" / "link.default").read_text() == Path("/etc/default/link").read_text()
    assert pwd.getpwnam("link").pw_uid != 0
    # SCRIPTS_DIR: the only programs the agent runs live there, so only root may change it.
    scripts = Path("/etc/link/scripts")
    assert str(scripts) in listing, "the package does not create /etc/link/scripts"
    info = scripts.lstat()
    assert stat.S_ISDIR(info.st_mode) and (info.st_uid, info.st_gid) == (0, 0), info
    assert stat.S_IMODE(info.st_mode) == 0o755, f"{scripts} is {stat.S_IMODE(info.st_mode):04o}, not 0755"
    assert stat.S_IMODE(Path("/etc/link").stat().st_mode) & 0o022 == 0 and Path("/etc/link").stat().st_uid == 0
    # Not enabled on install: INTERFACE is not set yet.
    assert not Path("/etc/systemd/system/multi-user.target.wants/link.service").exists()


def test_unit_file(package):
    text = UNIT.read_text()
    assert text == (REPO / "packaging" / "debian" / "link.service").read_text()
    assert any(line.startswith("ExecStart=/usr/bin/link-agent") for line in text.splitlines()), text
    for line in ("EnvironmentFile=/etc/default/link", "Restart=on-failure",
                 "KillMode=mixed", "StateDirectory=link", "User=link", "NoNewPrivileges=yes",
                 "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW"):
        assert line in text.splitlines(), f"{UNIT}: no {line!r}"
    analyze = shutil.which("systemd-analyze", path=SYSTEM_PATH)
    if analyze is None:
        warnings.warn(UserWarning("systemd-analyze is not available here: link.service was not verified by systemd "
                                  "(its contents were checked)"))
        return
    proc = run([analyze, "verify", "--man=no", str(UNIT)], timeout=120, check=False)
    problems = [l for l in (proc.stdout + proc.stderr).splitlines() if "link.service" in l or "link-agent" in l]
    assert proc.returncode == 0 and not problems, f"systemd-analyze verify {UNIT}:\n{proc.stdout}{proc.stderr}"


# ---------------------------------------------------------------- the installed agent at work
def unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines() if line.startswith(key + "=")]


def mdwe_supported() -> bool:
    """PR_GET_MDWE (Linux >= 6.3) answers; older kernels return EINVAL."""
    return ctypes.CDLL(None, use_errno=True).prctl(66, 0, 0, 0, 0) >= 0


def syscall_set(names: list[str], analyze: str, seen: set[str] | None = None) -> set[str]:
    """System calls of systemd's groups (@system-service...) and names, groups expanded."""
    seen = set() if seen is None else seen
    calls: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            calls.add(name)
        elif name not in seen:
            seen.add(name)
            listed = run([analyze, "syscall-filter", name], timeout=60).stdout.splitlines()[1:]
            members = [line.strip() for line in listed if line.strip() and not line.strip().startswith("#")]
            calls |= syscall_set(members, analyze, seen)
    return calls


def unit_syscall_filter() -> list[str] | None:
    """The system calls the unit allows: its SystemCallFilter= lines in order (the first an
    allow-list, `~` lines taken away), as systemd computes them; None without systemd-analyze."""
    analyze = shutil.which("systemd-analyze", path=SYSTEM_PATH)
    if analyze is None:
        return None
    allowed: set[str] = set()
    for value in unit_values("SystemCallFilter"):
        deny = value.startswith("~")
        calls = syscall_set(value.removeprefix("~").split(), analyze)
        allowed = allowed - calls if deny else allowed | calls
    assert "capset" not in allowed and "prctl" in allowed and "execve" in allowed, "not the filter this test knows"
    return sorted(allowed)


# Run by Debian's python3 as the unit's user, right before the agent: the unit's system call
# filter (libseccomp, the library systemd uses), then memory-deny-write-execute, then exec.
SANDBOX = """\
import ctypes, errno, os, sys
allowed, mdwe, argv = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
if allowed:
    seccomp = ctypes.CDLL("libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    context = seccomp.seccomp_init(0x00050000 | errno.EPERM)  # SCMP_ACT_ERRNO(EPERM) for the rest
    for name in allowed.split(","):
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # not a system call of this architecture otherwise
            seccomp.seccomp_rule_add(context, 0x7FFF0000, number, 0)  # SCMP_ACT_ALLOW
    if seccomp.seccomp_load(context) != 0:
        sys.exit("seccomp_load failed")
if mdwe and ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed")
os.execv(argv[0], argv)
"""


def agent_command_as_the_unit_runs_it(env_file: str) -> list[str]:
    """The unit's ExecStart (its --env-file pointed at `env_file`), with the unit's user,
    capabilities, no_new_privs (setpriv), system call filter and memory-deny-write-execute
    (SANDBOX)."""
    user = pwd.getpwnam(unit_values("User")[0])
    caps = ",".join("+" + c.lower().removeprefix("cap_") for c in unit_values("AmbientCapabilities")[0].split())
    bounding = ",".join("+" + c.lower().removeprefix("cap_") for c in unit_values("CapabilityBoundingSet")[0].split())
    argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{bounding}"]
    if unit_values("NoNewPrivileges") == ["yes"]:
        argv.append("--no-new-privs")
    argv.append("--")
    mdwe = unit_values("MemoryDenyWriteExecute") == ["yes"]
    if mdwe and not mdwe_supported():
        mdwe = False
        warnings.warn(UserWarning("this kernel has no PR_SET_MDWE (Linux < 6.3): the agent ran without "
                                  "memory-deny-write-execute"))
    allowed = unit_syscall_filter() if unit_values("SystemCallFilter") else []
    if allowed is None:
        allowed = []
        warnings.warn(UserWarning("systemd-analyze is not available here: the agent ran without the unit's "
                                  "system call filter"))
    assert unit_values("SystemCallErrorNumber") in ([], ["EPERM"]), "SANDBOX denies with EPERM only"
    # PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN) and the seccomp filter survive execve: the agent runs under them.
    argv += ["/usr/bin/python3", "-c", SANDBOX, ",".join(allowed), "1" if mdwe else "0"]
    exec_start = unit_values("ExecStart")[0].split()
    assert exec_start[0] == "/usr/bin/link-agent", exec_start
    return argv + [env_file if arg == "/etc/default/link" else arg for arg in exec_start]


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}


def test_installed_agent_binds_a_vip_in_a_lab(package, lab, monkeypatch):
    host = lab.host(1)
    user = pwd.getpwnam("link")
    # The agent runs as "link": its STATE_DIR is its own, and the lab's directories let it through.
    for directory in (lab.workdir, host.state_dir.parent):
        os.chmod(directory, 0o711)
    os.chown(host.state_dir, user.pw_uid, user.pw_gid)
    # Its --env-file, as /etc/default/link would be (root:link 0640: the agent rereads it as link).
    env_file = host.state_dir.parent / "default-link"
    env_file.write_text(Path("/etc/default/link").read_text())
    os.chown(env_file, 0, user.pw_gid)
    os.chmod(env_file, 0o640)
    command = agent_command_as_the_unit_runs_it(str(env_file))
    monkeypatch.setattr(lab_module, "agent_command", lambda: command)

    # Type=notify: systemd's socket played by the test, writable by the user link as
    # /run/systemd/notify is; the agent must reach it under the unit's filter and user.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = host.state_dir.parent / "notify.sock"
    notify.bind(str(notify_path))
    os.chmod(notify_path, 0o666)
    notify.settimeout(45)
    agent = host.start_agent(INTERFACE=IFACE, HOSTNAME="h1", ETCD_HOSTS=ETCD_URL, STATE_DIR=str(host.state_dir),
                             KEEPALIVE_INTERVAL="1", PYTHONPATH=None, NOTIFY_SOCKET=str(notify_path))
    try:
        notices: list[str] = []  # STATUS=starting: ..., then READY=1
        for _ in range(20):
            notices.append(notify.recv(4096).decode())
            if notices[-1].startswith("READY=1"):
                break
        assert any(n.startswith("READY=1") for n in notices), notices
    finally:
        notify.close()
    agent.wait_ready(30)

    post = run(["ip", "netns", "exec", host.ns, "curl", "-sS", "--max-time", "20", "-X", "POST",
                "-H", "Content-Type: application/json", "-d", json.dumps({"ip": VIP}), "http://127.0.0.1:1313/ips"],
               timeout=30)
    assert json.loads(post.stdout)["ip"] == VIP, post.stdout

    def bound() -> bool:
        out = run(["ip", "netns", "exec", host.ns, "ip", "-o", "addr", "show", "dev", IFACE], timeout=10).stdout
        return f"inet {VIP} " in out

    wait_until(bound, 20, 0.05, f"{VIP} on {IFACE} in {host.ns}")
    assert lab.etcd.get(lock_key(VIP)) == "h1"

    # Every process of the agent: user link, exactly the unit's capabilities, no_new_privs.
    titles = agent.titles()
    assert any(t.startswith("link: supervisor h1") for t in titles.values()), titles
    assert f"link: vip {VIP} ACTIVATED" in titles.values(), titles
    want_caps = f"{(1 << 12) | (1 << 13):016x}"  # CAP_NET_ADMIN (12), CAP_NET_RAW (13)
    for pid, title in titles.items():
        if not title.startswith("link:"):
            continue  # setpriv / the MDWE wrapper exec'd into the agent: same pid, so never here
        status = proc_status(pid)
        assert status["Uid"].split()[0] == str(user.pw_uid), (title, status["Uid"])
        assert status["CapEff"] == want_caps and status["CapAmb"] == want_caps, (title, status["CapEff"], status["CapAmb"])
        assert status["NoNewPrivs"] == "1", title
        if shutil.which("systemd-analyze", path=SYSTEM_PATH):
            assert status["Seccomp"] == "2", (title, "not under the unit's system call filter")

    # An EXEC check: only from /etc/link/scripts, run as the agent's user, link, without the
    # agent's capabilities and unable to gain any (no_new_privs), under the unit's filter.
    program = Path("/etc/link/scripts/link-package-test")
    program.write_text("#!/bin/sh\nid -u > \"$1\"\ngrep -E '^(CapEff|CapPrm|CapAmb|NoNewPrivs):' /proc/$$/status > \"$1.status\"\n")
    program.chmod(0o755)
    uid_file = host.state_dir / "check-uid"
    try:
        def add(checks: list) -> tuple[int, dict]:
            out = run(["ip", "netns", "exec", host.ns, "curl", "-sS", "--max-time", "20", "-o", "/dev/stdout",
                       "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
                       "-d", json.dumps({"ip": OTHER_VIP, "checks": checks}), "http://127.0.0.1:1313/ips"], timeout=30)
            body, _, code = out.stdout.rpartition("\n")
            return int(code), json.loads(body)

        code, body = add([{"type": "EXEC", "command": ["/bin/sh", "-c", f"id -u > {uid_file}"]}])
        assert code == 400 and "is not inside SCRIPTS_DIR /etc/link/scripts" in body["error"], body
        code, body = add([{"type": "EXEC", "command": [str(program), str(uid_file)]}])
        assert code == 201, body
        wait_until(lambda: uid_file.exists() and uid_file.read_text().strip(), 15, 0.05, "the EXEC check to run")
        assert uid_file.read_text().split() == [str(user.pw_uid)]

        def program_status() -> dict[str, str] | None:
            # Rewritten at every run: only a whole one counts.
            lines = Path(f"{uid_file}.status").read_text().splitlines()
            found = {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}
            return found if len(found) == 4 else None

        status = wait_until(program_status, 15, 0.05, "the EXEC check to record its privileges")
        assert status == {"CapPrm": "0" * 16, "CapEff": "0" * 16, "CapAmb": "0" * 16, "NoNewPrivs": "1"}, status
        assert host.api("DELETE", f"/ips/{body['id']}").status == 204
    finally:
        program.unlink()

    state = json.loads((host.state_dir / "vips.json").read_text())
    assert [v["ip"] for v in state["vips"]] == [VIP]
    vip_id = state["vips"][0]["id"]

    # `systemctl reload link` (ExecReload: SIGHUP): the agent rereads PRIORITY from its --env-file.
    reload = unit_values("ExecReload")
    assert reload == ["/bin/kill -HUP $MAINPID"], reload
    env_file.write_text(env_file.read_text() + "PRIORITY=7\n")
    os.kill(agent.pid, signal.SIGHUP)
    wait_until(lambda: host.api("GET", f"/ips/{vip_id}").body["ip"].get("priority") == 7, 10, 0.05,
               "PRIORITY=7 from the --env-file after SIGHUP")
    assert bound()

    # SIGTERM to the supervisor only (KillMode=mixed): it releases the VIP and exits 0.
    assert agent.stop(timeout=15) == 0
    assert not bound(), f"{VIP} still bound after the agent stopped"
    wait_until(lambda: lab.etcd.get(lock_key(VIP)) is None, 5, 0.05, "the lock to be released")


# ---------------------------------------------------------------- upgrade, remove, purge
def test_upgrade_keeps_configuration_and_vips_and_purge_removes_them(package):
    default = Path("/etc/default/link")
    state = Path("/var/lib/link/vips.json")
    user = pwd.getpwnam("link")
    edited = default.read_text().replace("#INTERFACE=eth1", "INTERFACE=eth1")
    default.write_text(edited)
    state.parent.mkdir(mode=0o750, exist_ok=True)
    os.chown(state.parent, user.pw_uid, user.pw_gid)
    state.write_text('{"version": 1, "vips": []}\n')

    # The same version again goes through the upgrade path of every maintainer script.
    run(["dpkg", "--force-confold", "-i", str(DEB)], timeout=300)
    assert default.read_text() == edited, "upgrade lost the edits of /etc/default/link"
    assert state.exists(), "upgrade removed /var/lib/link/vips.json"

    run(["apt-get", "remove", "-y", "-q", "link"], timeout=600)
    assert not Path("/usr/bin/link-agent").exists()
    assert default.read_text() == edited, "remove must keep the configuration"
    assert state.exists(), "remove must keep /var/lib/link/vips.json"

    run(["apt-get", "purge", "-y", "-q", "link"], timeout=600)
    assert not default.exists(), "purge removes /etc/default/link"
    assert not state.parent.exists(), "purge removes /var/lib/link"
