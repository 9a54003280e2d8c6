"""link.scripts: which programs the agent runs (SCRIPTS_DIR's rules) and as whom (SCRIPT_USER).

Real files in a real directory (the `scripts` fixture: not under /tmp, whose 1777 fails the
rules). Run as root (CI) the owner is root, as in the agent; run by a non-root developer the
tests pass their own uid as `owner_uid`, and only the parts that need root (chown, switching
user) are skipped.
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading

import pytest

from link.checks import run_check
from link.config import Config
from link.scripts import SETPRIV, ProgramPolicy, RefusalLog, ScriptRefused, check_program, warn_stored_programs
from link.security_settings import ScriptUser
from link.vocabulary.vip import VipSpec

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="chown and switching user need root (CI runs as root)")
NOBODY = 65534
SH = os.path.realpath("/bin/sh")  # /usr/bin/dash on a merged-/usr Debian


def refused(path: str, scripts, **kw) -> str:
    with pytest.raises(ScriptRefused) as exc:
        check_program(path, str(scripts.path), owner_uid=kw.pop("owner_uid", scripts.owner_uid), **kw)
    return str(exc.value)


def test_a_program_in_the_directory_is_accepted_as_its_resolved_path(scripts):
    program = scripts.add("check-db", "exit 0\n")
    assert check_program(program, str(scripts.path), owner_uid=scripts.owner_uid) == program
    # Relative components that stay inside are resolved away.
    (scripts.path / "sub").mkdir(mode=0o755)
    dotted = f"{scripts.path}/sub/../check-db"
    assert check_program(dotted, str(scripts.path), owner_uid=scripts.owner_uid) == program


def test_a_symlink_inside_to_a_program_inside_runs_the_target(scripts):
    program = scripts.add("real", "exit 0\n")
    (scripts.path / "alias").symlink_to(program)
    assert check_program(str(scripts.path / "alias"), str(scripts.path), owner_uid=scripts.owner_uid) == program


def test_the_directory_itself_may_be_a_symlink(scripts):
    program = scripts.add("real", "exit 0\n")
    link = scripts.root / "scripts-link"
    link.symlink_to(scripts.path)
    assert check_program(str(link / "real"), str(link), owner_uid=scripts.owner_uid) == program


@pytest.mark.parametrize("path", ["/bin/sh", "/usr/bin/env"])
def test_a_program_outside_the_directory_is_refused(scripts, path):
    message = refused(path, scripts)
    assert repr(path) in message and "is not inside SCRIPTS_DIR" in message and str(scripts.path) in message


def test_dot_dot_out_of_the_directory_is_refused(scripts):
    path = f"{scripts.path}/../../../../../../bin/sh"
    message = refused(path, scripts)
    assert "is not inside SCRIPTS_DIR" in message and f"resolved to {SH!r}" in message


def test_a_symlink_out_of_the_directory_is_refused(scripts):
    (scripts.path / "sh").symlink_to("/bin/sh")
    message = refused(str(scripts.path / "sh"), scripts)
    assert f"resolved to {SH!r}" in message and "is not inside SCRIPTS_DIR" in message


def test_a_relative_path_is_refused(scripts):
    scripts.add("check", "exit 0\n")
    assert "must be an absolute path" in refused("check", scripts)
    assert "must be an absolute path" in refused("scripts/check", scripts)


def test_a_missing_program_and_a_missing_directory_are_refused(scripts):
    assert refused(str(scripts.path / "nope"), scripts).endswith("does not exist")
    gone = scripts.root / "gone"
    with pytest.raises(ScriptRefused, match=r"does not exist \(SCRIPTS_DIR .*gone does not exist\)"):
        check_program(str(gone / "x"), str(gone), owner_uid=scripts.owner_uid)


def test_a_directory_is_not_a_program(scripts):
    (scripts.path / "sub").mkdir(mode=0o755)
    assert "is not a regular file" in refused(str(scripts.path / "sub"), scripts)
    assert "is not inside SCRIPTS_DIR" in refused(str(scripts.path), scripts)


def test_a_file_without_an_execute_bit_is_refused(scripts):
    program = scripts.add("plain", "exit 0\n", mode=0o644)
    assert "is not executable" in refused(program, scripts)


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_program_writable_by_group_or_others_is_refused(scripts, mode):
    program = scripts.add("open", "exit 0\n", mode=mode)
    assert f"is writable by group or others (mode {mode:04o})" in refused(program, scripts)


def test_a_program_owned_by_someone_else_is_refused(scripts):
    program = scripts.add("mine", "exit 0\n")
    other = scripts.owner_uid + 4242  # who the rule wants is not who owns it
    message = refused(program, scripts, owner_uid=other)
    assert f"is owned by uid {scripts.owner_uid}, not uid {other}" in message


@needs_root
def test_a_program_owned_by_nobody_is_refused_as_root(scripts):
    program = scripts.add("theirs", "exit 0\n")
    os.chown(program, NOBODY, NOBODY)
    assert f"is owned by uid {NOBODY}, not root" in refused(program, scripts)


def test_a_directory_above_writable_by_others_is_refused(scripts):
    sub = scripts.path / "shared"
    sub.mkdir()
    program = scripts.add("shared/check", "exit 0\n")
    sub.chmod(0o777)
    message = refused(program, scripts)
    assert f"is in {str(sub)!r}, which is writable by group or others (mode 0777)" in message
    sub.chmod(0o755)
    assert check_program(program, str(scripts.path), owner_uid=scripts.owner_uid) == program
    scripts.path.chmod(0o775)  # the directory itself counts too
    assert "which is writable by group or others (mode 0775)" in refused(program, scripts)


@needs_root
def test_a_directory_above_owned_by_another_user_is_refused(scripts):
    sub = scripts.path / "theirs"
    sub.mkdir(mode=0o755)
    program = scripts.add("theirs/check", "exit 0\n")
    os.chown(sub, NOBODY, NOBODY)  # nobody could swap the program, 0755 or not
    assert f"is in {str(sub)!r}, owned by uid {NOBODY}, not root" in refused(program, scripts)


def test_nothing_under_tmp_qualifies(tmp_path):
    program = tmp_path / "check"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    tmp_path.chmod(0o755)
    with pytest.raises(ScriptRefused, match=r"which is writable by group or others \(mode 1777\)"):
        check_program(str(program), str(tmp_path), owner_uid=os.geteuid())


def test_the_environment_hides_the_password_and_sets_home(scripts):
    program = scripts.add("fip", "exit 0\n")
    (scripts.path / "alias").symlink_to(program)
    alias = str(scripts.path / "alias")
    me = ScriptUser("", os.geteuid(), os.getegid())
    policy = ProgramPolicy(str(scripts.path), me, owner_uid=scripts.owner_uid)
    args, options = policy.prepare([alias, "attach", "x y"], {"PASSWORD": "s3cret", "PATH": "/bin", "HOME": "/x"})
    assert options["env"]["PATH"] == "/bin" and "PASSWORD" not in options["env"]
    assert options["env"]["HOME"] in ("/", os.path.expanduser("~"))
    # No switch needed: the resolved program is executed, argv[0] stays the name given.
    assert (args, options["executable"], options["cwd"]) == ([alias, "attach", "x y"], program, "/")
    assert not {"user", "group", "extra_groups", "preexec_fn"} & set(options)


def test_another_user_is_switched_to_by_setpriv_not_by_a_fork(scripts):
    program = scripts.add("fip", "exit 0\n")
    other = 4242424  # a uid that is not this process's, with no passwd entry (so no home)
    policy = ProgramPolicy(str(scripts.path), ScriptUser("someone", other, other), owner_uid=scripts.owner_uid)
    args, options = policy.prepare([program, "attach"], {})
    # subprocess's user= would make CPython fork() the worker, whose gRPC at-fork handlers can
    # crash the child: setpriv, started by vfork, switches instead.
    assert args == [SETPRIV, f"--reuid={other}", f"--regid={other}", "--clear-groups", "--inh-caps=-all",
                    "--no-new-privs", "--", program, "attach"]
    assert os.access(SETPRIV, os.X_OK)
    assert options == {"env": {"HOME": "/"}, "cwd": "/"}


@needs_root
def test_an_exec_check_runs_as_the_script_user_without_the_password(scripts, monkeypatch):
    program = scripts.add("whoami", f'id -u > {scripts.out}/uid\nid -G > {scripts.out}/groups\n'
                                    f'echo "${{PASSWORD:-none}} $HOME $(pwd)" > {scripts.out}/env\n')
    monkeypatch.setenv("PASSWORD", "api-password")
    policy = scripts.policy(ScriptUser("nobody", NOBODY, NOBODY))
    result = run_check({"type": "EXEC", "command": [program]}, 5.0, policy)
    assert result.ok, result.detail
    assert (scripts.out / "uid").read_text().split() == [str(NOBODY)]
    assert (scripts.out / "groups").read_text().split() == [str(NOBODY)]  # root's groups were dropped
    assert (scripts.out / "env").read_text().split() == ["none", "/", "/"]


def test_an_exec_check_whose_program_is_refused_is_not_run(scripts):
    mark = scripts.out / "ran"
    program = scripts.add("check", f"touch {mark}\n", mode=0o777)
    result = run_check({"type": "EXEC", "command": [program]}, 5.0, scripts.policy())
    assert not result.ok and "writable by group or others" in result.refused
    assert "program refused, not run" in result.detail
    assert not mark.exists()
    # Without a policy an EXEC check never runs anything.
    os.chmod(program, 0o755)
    unchecked = run_check({"type": "EXEC", "command": [program]}, 5.0)
    assert not unchecked.ok and "no SCRIPTS_DIR" in unchecked.detail and not mark.exists()
    assert run_check({"type": "EXEC", "command": [program]}, 5.0, scripts.policy()).ok and mark.exists()


def test_a_refusal_is_logged_once_per_change_of_reason(caplog):
    log = RefusalLog("198.51.100.50/32: ")
    with caplog.at_level(logging.INFO, logger="link.scripts"):
        for _ in range(5):
            log.refused("EXEC /x", "'/x' is writable by group or others (mode 0777)")
        log.refused("EXEC /x", "'/x' is owned by uid 1000, not root")
        log.accepted("EXEC /x")
        log.accepted("EXEC /x")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "198.51.100.50/32: EXEC /x: program refused, not run: '/x' is writable by group or others (mode 0777)",
        "198.51.100.50/32: EXEC /x: program refused, not run: '/x' is owned by uid 1000, not root",
        "198.51.100.50/32: EXEC /x: program accepted again",
    ]


@needs_root
def test_runs_as_another_user_survive_a_busy_grpc_client_in_the_process(scripts):
    """The worker holds gRPC threads: with subprocess's user= (a fork()), gRPC's at-fork handlers
    crashed the child with SIGSEGV in 1 to 4 runs of 300 here (with user= this test failed 3 times in 4);
    through setpriv (vfork), none."""
    import threading

    import grpc

    channel = grpc.insecure_channel("127.0.0.1:9")  # nothing listens: every call fails at once
    stop = threading.Event()

    call = channel.unary_unary("/link.Test/Nothing")

    def busy() -> None:
        while not stop.is_set():
            try:
                call(b"", timeout=0.01)
            except grpc.RpcError:
                pass

    threads = [threading.Thread(target=busy, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    policy = scripts.policy(ScriptUser("nobody", NOBODY, NOBODY))
    check = {"type": "EXEC", "command": [scripts.add("true", "exit 0\n")]}
    try:
        results = [run_check(check, 5.0, policy) for _ in range(300)]
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        channel.close()
    failed = [r.detail for r in results if not r.ok]
    assert failed == [], f"{len(failed)} of 300 runs failed, e.g. {failed[0]}"


# ------------------------------------------------------------ review of issue 14 (programs part)
@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6755])
def test_a_setuid_or_setgid_program_is_refused(scripts, mode):
    program = scripts.add("suid", "exit 0\n", mode=mode)
    assert f"is setuid or setgid (mode {mode:04o}): a program must not change who it runs as" in refused(program, scripts)


@pytest.mark.parametrize("path", ["/\ud800", "/bin/\udcff"])
def test_a_path_exec_cannot_take_is_refused_not_raised(scripts, path):
    assert "is not valid UTF-8 text" in refused(path, scripts)
    assert "is not valid UTF-8 text" in refused(f"{scripts.path}/check\ud800", scripts)


def test_any_value_error_of_a_check_is_a_refusal(scripts, monkeypatch):
    def broken(path: str) -> str:
        raise ValueError("embedded null byte")

    monkeypatch.setattr(os.path, "realpath", broken)
    assert "cannot be checked: embedded null byte" in refused(f"{scripts.path}/x", scripts)


OTHER = ScriptUser("someone", 4242424, 4242424)  # neither the owner nor in the file's group


def test_a_program_script_user_cannot_execute_is_refused(scripts):
    program = scripts.add("root-only", "exit 0\n", mode=0o700)
    message = refused(program, scripts, run_as=OTHER)
    assert f"is not executable by SCRIPT_USER {OTHER} (mode 0700)" in message
    assert check_program(program, str(scripts.path), owner_uid=scripts.owner_uid) == program  # no user: not checked
    group_only = scripts.add("group-only", "exit 0\n", mode=0o750)
    assert "is not executable by SCRIPT_USER" in refused(group_only, scripts, run_as=OTHER)
    in_group = ScriptUser("member", OTHER.uid, os.stat(group_only).st_gid)
    assert check_program(group_only, str(scripts.path), owner_uid=scripts.owner_uid, run_as=in_group) == group_only
    owner = ScriptUser("owner", os.stat(program).st_uid, OTHER.gid)
    assert check_program(program, str(scripts.path), owner_uid=scripts.owner_uid, run_as=owner) == program


def test_a_script_script_user_cannot_read_is_refused_a_binary_is_not(scripts):
    script = scripts.add("unreadable", "exit 0\n", mode=0o711)
    assert "is a script that SCRIPT_USER" in refused(script, scripts, run_as=OTHER)
    binary = scripts.path / "true"
    binary.write_bytes(open("/bin/true", "rb").read())
    binary.chmod(0o711)
    assert check_program(str(binary), str(scripts.path), owner_uid=scripts.owner_uid, run_as=OTHER) == str(binary)


def test_a_directory_script_user_cannot_enter_is_refused(scripts):
    sub = scripts.path / "closed"
    sub.mkdir(mode=0o700)
    program = scripts.add("closed/check", "exit 0\n")
    sub.chmod(0o700)
    assert f"is in {str(sub)!r}, which SCRIPT_USER {OTHER} cannot enter (mode 0700)" in refused(program, scripts,
                                                                                                 run_as=OTHER)


@needs_root
def test_the_worker_does_not_run_what_nobody_cannot_execute(scripts):
    mark = scripts.out / "ran"
    program = scripts.add("root-only", f"touch {mark}\n", mode=0o700)
    result = run_check({"type": "EXEC", "command": [program]}, 5.0, scripts.policy(ScriptUser("nobody", NOBODY, NOBODY)))
    assert not result.ok and "is not executable by SCRIPT_USER nobody" in result.refused and not mark.exists()


def _status_of_a_program(scripts, policy: ProgramPolicy, before=lambda: None) -> dict[str, str]:
    """/proc/<pid>/status of an EXEC check's program, run from a thread of its own (`before`
    runs in it first): the privileges dropped for exec are the thread's, not this process's."""
    out = scripts.out / "status"
    program = scripts.add("status", f"grep -E '^(Cap[A-Za-z]+|NoNewPrivs):' /proc/$$/status > {out}\n")
    results = []

    def run() -> None:
        before()
        results.append(run_check({"type": "EXEC", "command": [program]}, 5.0, policy))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert results and results[0].ok, results
    status = dict(line.split(":", 1) for line in out.read_text().splitlines())
    return {k: v.strip() for k, v in status.items()}


def test_programs_run_with_no_new_privs(scripts):
    # Before: a program could gain privileges through sudo or a setuid file it runs.
    assert _status_of_a_program(scripts, scripts.policy())["NoNewPrivs"] == "1"


def _raise_ambient_net_admin() -> None:
    """What the Debian unit gives the agent (AmbientCapabilities=CAP_NET_ADMIN...), for this thread."""
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0
    data[0].inheritable |= 1 << 12  # CAP_NET_ADMIN
    assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    assert libc.prctl(47, 2, 12, 0, 0) == 0, os.strerror(ctypes.get_errno())  # PR_CAP_AMBIENT_RAISE


@needs_root
def test_programs_do_not_inherit_the_agents_ambient_capabilities(scripts):
    status = _status_of_a_program(scripts, scripts.policy(), before=_raise_ambient_net_admin)
    assert status["CapAmb"] == "0" * 16 and status["NoNewPrivs"] == "1", status


@needs_root
def test_programs_run_as_another_user_have_no_capability_at_all(scripts):
    status = _status_of_a_program(scripts, scripts.policy(ScriptUser("nobody", NOBODY, NOBODY)),
                                  before=_raise_ambient_net_admin)
    assert {k: status[k] for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapAmb"), "0" * 16)
    assert status["NoNewPrivs"] == "1"


def test_stored_programs_refused_now_are_logged_at_start_once_per_vip_and_field(scripts, caplog):
    fine = scripts.add("fine", "exit 0\n")
    open_one = scripts.add("open", "exit 0\n", mode=0o777)
    stored = [
        VipSpec("vip-1", "198.51.100.61/32", checks=({"type": "EXEC", "command": ["/usr/local/bin/check-db"]},
                                                     {"type": "TCP", "host": "198.51.100.20", "port": 5432})),
        VipSpec("vip-2", "198.51.100.62/32", binder="command",
                binder_settings={"activate": [open_one, "up"], "deactivate": [fine], "ensure": None, "timeout": 10.0,
                         "ensure_interval": 30.0}),
    ]
    config = Config(interface="lo", hostname="h1", etcd_endpoints=(), scripts_dir=str(scripts.path),
                    script_user=ScriptUser("", os.geteuid(), os.getegid()))
    with caplog.at_level(logging.WARNING, logger="link.scripts"):
        warn_stored_programs(stored, config)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("198.51.100.61/32 (vip-1): checks[0].command[0] '/usr/local/bin/check-db' is not inside "
                               f"SCRIPTS_DIR {scripts.path}")
    assert lines[1].startswith(f"198.51.100.62/32 (vip-2): command.activate[0] {open_one!r} is writable by group or others")
    if ROOT:  # deactivate is root's and fine: no line (as another user it is refused as not root's)
        assert len(lines) == 2, lines
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="link.scripts"):
        warn_stored_programs([], Config(interface="lo", hostname="h1", etcd_endpoints=(),
                                        scripts_dir=str(scripts.root / "missing")))
    assert [r.getMessage() for r in caplog.records] == [
        f"SCRIPTS_DIR {scripts.root / 'missing'} does not exist: no program (EXEC check, command binder) can run "
        "until it does"]
