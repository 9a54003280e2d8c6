"""Which programs the agent runs (EXEC checks, command binders), and as whom: keepalived's
`enable_script_security` and `script_user`.

A program is named by an absolute path. After resolving symlinks it must be inside SCRIPTS_DIR
(default /etc/link/scripts), be a regular file that SCRIPT_USER may execute, be owned by root,
not be setuid or setgid, and neither it nor any directory above it may be writable by group or
others or owned by another user: then only root can change what runs. `check_program` is that
rule, written once; the API applies it when a VIP is added or its checks change, the worker
again right before every run, the agent to its stored VIPs at start (`warn_stored_programs`).
Arguments stay free, so SCRIPTS_DIR itself may not be a system directory where shells and
interpreters live (`check_scripts_dir`, at start). Programs run as SCRIPT_USER, without
capabilities and with no_new_privs (`ProgramPolicy.prepare`).
"""
from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

from link.security_settings import ScriptUser
from link.vocabulary import binder_kinds

if TYPE_CHECKING:
    from link.vocabulary.vip import VipSpec

logger = logging.getLogger(__name__)


class ProgramSettings(Protocol):
    """What of the agent's Config these rules read (not Config itself: link.config imports
    this module to check SCRIPTS_DIR, and an import back would close a cycle)."""

    @property
    def scripts_dir(self) -> str: ...

    @property
    def script_user(self) -> ScriptUser: ...


# The API's password is no business of the user's programs (ETCD_TLS_* name files, not secrets).
HIDDEN_VARIABLES = ("PASSWORD",)
_SHOWN = 200  # characters of a path quoted in a message
# Switches to SCRIPT_USER (root only) then execs the program; util-linux is Essential on Debian.
SETPRIV = "/usr/bin/setpriv"
# Where a system keeps programs that turn their arguments into code (shells, interpreters, the
# dynamic loader, which runs any program named as its argument): a SCRIPTS_DIR that is one of
# these, or above one, hands API users, who choose the arguments, a shell.
SYSTEM_PROGRAM_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/games",
                       "/usr/local/games", "/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64",
                       "/usr/libx32", "/usr/libexec", "/usr/local/lib", "/usr/local/libexec", "/etc")
_INTERPRETER_PATTERNS = ("/bin/sh", "/bin/bash", "/lib*/ld-*.so*", "/lib/*/ld-*.so*", "/usr/lib*/ld-*.so*",
                         "/usr/lib/*/ld-*.so*")

class ScriptRefused(ValueError):
    """The program may not run; the message names the path and the rule it breaks."""


def _quote(path: str) -> str:
    return repr(path[:_SHOWN] + ("…" if len(path) > _SHOWN else ""))


def _writable_by_others(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def _granted(info: os.stat_result, user: ScriptUser | None, bits: tuple[int, int, int]) -> bool:
    """Whether `user` gets a permission whose (owner, group, others) bits are `bits`, as the
    kernel decides: only the owner's bits for the owner, then the group's, then the others'.
    Root (and no user: not known) is let through; the program runs in the groups of the
    agent when it does not switch, in SCRIPT_USER's group alone when it does (--clear-groups)."""
    if user is None or user.uid == 0:
        return True
    if info.st_uid == user.uid:
        return bool(info.st_mode & bits[0])
    groups = {user.gid} if user.switches else {user.gid, *os.getgroups()}
    if info.st_gid in groups:
        return bool(info.st_mode & bits[1])
    return bool(info.st_mode & bits[2])


_EXECUTE = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
_READ = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def _is_script(path: str) -> bool:
    """True for a "#!" script, which its interpreter must also be able to read; False when
    this process cannot tell (then exec will)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False


def check_program(path: str, scripts_dir: str, *, owner_uid: int = 0, run_as: ScriptUser | None = None) -> str:
    """The program's resolved path (no symlink left), or ScriptRefused saying which rule it breaks.

    `owner_uid` is who must own the program and may own the directories above it: root (0) in
    the agent; unit tests run by a non-root developer pass their own uid. `run_as` is
    SCRIPT_USER: the program must be one it can run (None: not checked).
    """
    try:
        return _check_program(path, scripts_dir, owner_uid, run_as)
    except ScriptRefused:
        raise
    except ValueError as exc:  # e.g. a path the file system cannot take: refused, never a crash
        raise ScriptRefused(f"{_quote(str(path))} cannot be checked: {str(exc)[:_SHOWN]}") from None


def _check_program(path: str, scripts_dir: str, owner_uid: int, run_as: ScriptUser | None) -> str:
    if not isinstance(path, str) or not path or "\0" in path:
        raise ScriptRefused("must be a path without NUL characters")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ScriptRefused(f"{_quote(path)} is not valid UTF-8 text (it cannot be passed to exec)") from None
    if not os.path.isabs(path):
        raise ScriptRefused(f"{_quote(path)} must be an absolute path")
    top = os.path.realpath(scripts_dir)
    resolved = os.path.realpath(path)
    shown = _quote(path) if resolved == path else f"{_quote(path)} (resolved to {_quote(resolved)})"
    if resolved == top or os.path.commonpath([top, resolved]) != top:
        raise ScriptRefused(f"{shown} is not inside SCRIPTS_DIR {scripts_dir}: programs run only from there")
    try:
        info = os.stat(resolved)
    except FileNotFoundError:
        missing = "" if os.path.isdir(top) else f" (SCRIPTS_DIR {scripts_dir} does not exist)"
        raise ScriptRefused(f"{shown} does not exist{missing}") from None
    except OSError as exc:
        raise ScriptRefused(f"{shown} cannot be looked at: {exc.strerror or exc}") from None
    mode = f"mode {stat.S_IMODE(info.st_mode):04o}"
    if not stat.S_ISREG(info.st_mode):
        raise ScriptRefused(f"{shown} is not a regular file")
    if not info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise ScriptRefused(f"{shown} is not executable (no x permission bit)")
    if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
        raise ScriptRefused(f"{shown} is setuid or setgid ({mode}): a program must not change who it runs as")
    if info.st_uid != owner_uid:
        raise ScriptRefused(f"{shown} is owned by uid {info.st_uid}, not {_owner(owner_uid)}")
    if _writable_by_others(info.st_mode):
        raise ScriptRefused(f"{shown} is writable by group or others ({mode})")
    if not _granted(info, run_as, _EXECUTE):
        raise ScriptRefused(f"{shown} is not executable by SCRIPT_USER {run_as} ({mode})")
    if not _granted(info, run_as, _READ) and _is_script(resolved):
        raise ScriptRefused(f"{shown} is a script that SCRIPT_USER {run_as} cannot read ({mode}): "
                            "its interpreter must read it")
    _check_directories(os.path.dirname(resolved), shown, owner_uid, run_as)
    return resolved


def _check_directories(directory: str, shown: str, owner_uid: int, run_as: ScriptUser | None) -> None:
    """`directory` and every one above it, up to /: whoever may write in one of them can swap
    the program; and SCRIPT_USER must be able to go through them to reach it."""
    while True:
        try:
            above = os.stat(directory)
        except OSError as exc:
            raise ScriptRefused(f"{shown}: its directory {_quote(directory)} cannot be looked at: "
                                f"{exc.strerror or exc}") from None
        if above.st_uid not in (0, owner_uid):
            raise ScriptRefused(f"{shown} is in {_quote(directory)}, owned by uid {above.st_uid}, not {_owner(owner_uid)}")
        if _writable_by_others(above.st_mode):
            raise ScriptRefused(f"{shown} is in {_quote(directory)}, which is writable by group or others "
                                f"(mode {stat.S_IMODE(above.st_mode):04o})")
        if not _granted(above, run_as, _EXECUTE):
            raise ScriptRefused(f"{shown} is in {_quote(directory)}, which SCRIPT_USER {run_as} cannot enter "
                                f"(mode {stat.S_IMODE(above.st_mode):04o})")
        if directory == "/":
            return
        directory = os.path.dirname(directory)


def _owner(uid: int) -> str:
    return "root" if uid == 0 else f"uid {uid}"


def system_program_dirs() -> set[str]:
    """The resolved directories of SYSTEM_PROGRAM_DIRS and of the interpreters found on this host."""
    found = {os.path.realpath(d) for d in SYSTEM_PROGRAM_DIRS if os.path.isdir(d)}
    for pattern in (*_INTERPRETER_PATTERNS, sys.executable):
        found.update(os.path.dirname(os.path.realpath(p)) for p in glob.glob(pattern) if os.path.isfile(p))
    return found


def check_scripts_dir(path: str, *, owner_uid: int = 0) -> bool:
    """Whether SCRIPTS_DIR exists (False: no program can run until it does); ScriptRefused
    when it is / or a system directory (or above one) where shells and interpreters live, or
    when it, or a directory above it, could be changed by someone other than root."""
    try:
        resolved = os.path.realpath(path)
        shown = _quote(path) if resolved == path else f"{_quote(path)} (resolved to {_quote(resolved)})"
        system = sorted(d for d in system_program_dirs() if os.path.commonpath([resolved, d]) == resolved)
        if system:
            what = "is /" if resolved == "/" else f"is or holds the system directory {system[0]}"
            raise ScriptRefused(f"{shown} {what}: put no shell or interpreter in SCRIPTS_DIR, API users choose "
                                "the arguments; use a directory of its own such as /etc/link/scripts")
        if not os.path.lexists(resolved):
            return False
        info = os.stat(resolved)
        if not stat.S_ISDIR(info.st_mode):
            raise ScriptRefused(f"{shown} is not a directory")
        if info.st_uid not in (0, owner_uid):
            raise ScriptRefused(f"{shown} is owned by uid {info.st_uid}, not {_owner(owner_uid)}")
        if _writable_by_others(info.st_mode):
            raise ScriptRefused(f"{shown} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})")
        _check_directories(os.path.dirname(resolved), shown, owner_uid, None)
    except ScriptRefused:
        raise
    except (OSError, ValueError) as exc:
        raise ScriptRefused(f"{_quote(path)} cannot be checked: {str(exc)[:_SHOWN]}") from None
    return True


def named_programs(vip: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, program) of every program a VIP names, in the API's JSON form (an add or update
    request, or a stored VIP): its EXEC checks', its notify program and its command binder's."""
    named = [(f"checks[{i}].command[0]", check["command"][0])
             for i, check in enumerate(vip.get("checks") or ()) if check.get("type") == "EXEC"]
    if vip.get("notify"):
        named.append(("notify[0]", vip["notify"][0]))
    return named + binder_kinds.programs_of(vip)  # the binder's schema says which of its settings are programs


def warn_stored_programs(stored: Iterable[VipSpec], config: ProgramSettings) -> None:
    """At start: one WARNING per stored VIP and field whose program is refused now (an upgrade
    that brought SCRIPTS_DIR, a file changed since), so the first failed run is not the first
    word about it; and one line when SCRIPTS_DIR does not exist."""
    try:
        exists = check_scripts_dir(config.scripts_dir)
    except ScriptRefused as exc:  # load() refused it already; changed since: every program says why below
        exists = True
        logger.warning("SCRIPTS_DIR %s", exc)
    if not exists:
        logger.warning("SCRIPTS_DIR %s does not exist: no program (EXEC check, command binder) can run until it does",
                       config.scripts_dir)
    for spec in stored:
        for field, program in named_programs(spec.to_json()):
            try:
                check_program(program, config.scripts_dir, run_as=config.script_user)
            except ScriptRefused as exc:
                logger.warning("%s (%s): %s %s: it will not run", spec.ip, spec.id, field, exc)


@functools.lru_cache(maxsize=8)
def home_of(uid: int) -> str:
    """The user's home directory when it exists (nobody's is /nonexistent on Debian), else "/"."""
    try:
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/"
    return home if home and os.path.isdir(home) else "/"


_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


@functools.lru_cache(maxsize=1)
def _prctl() -> Any:
    function = ctypes.CDLL(None, use_errno=True).prctl
    function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    function.restype = ctypes.c_int
    return function


def drop_privileges_for_exec() -> None:
    """Make what this thread executes next run without capabilities and unable to gain any:
    no_new_privs (setuid files, file capabilities and sudo give nothing) and an empty ambient
    set (the Debian unit gives the agent CAP_NET_ADMIN and CAP_NET_RAW as ambient capabilities,
    which a plain exec would pass on). Both are prctl(2) calls on the calling thread, which the
    vfork'd child inherits; the thread itself keeps its permitted and effective capabilities.

    Not setpriv --no-new-privs --ambient-caps=-all: setpriv always calls capset(2) before it
    looks at its options ("activate capabilities"), and the unit's SystemCallFilter=~@privileged
    denies capset with EPERM, so under the package it would run nothing. The inheritable set
    stays (clearing it needs capset): with no_new_privs an exec never raises the permitted set
    above the caller's, which is empty, so it grants nothing."""
    prctl = _prctl()
    for option, argument in ((_PR_SET_NO_NEW_PRIVS, 1), (_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)):
        if prctl(option, argument, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise ScriptRefused(f"cannot drop privileges before running a program (prctl {option}): "
                                f"{os.strerror(error)}")


@dataclass(frozen=True)
class ProgramPolicy:
    """Where the worker's programs may live and who runs them (SCRIPTS_DIR, SCRIPT_USER)."""

    scripts_dir: str
    user: ScriptUser
    owner_uid: int = 0  # see check_program

    @classmethod
    def from_config(cls, config: ProgramSettings) -> "ProgramPolicy":
        return cls(config.scripts_dir, config.script_user)

    def resolve(self, path: str) -> str:
        return check_program(path, self.scripts_dir, owner_uid=self.owner_uid, run_as=self.user)

    def prepare(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, Any]]:
        """Check the program now (ScriptRefused) and return what to give subprocess: the
        arguments and the keyword arguments (environment with PASSWORD hidden and HOME the
        user's, cwd "/", the resolved program). Call it from the thread that starts the
        program: it drops that thread's privileges for exec (`drop_privileges_for_exec`).

        The resolved path is executed, not the name given, so a symlink retargeted between this
        check and the exec changes nothing; the rest of the path can only change by root's
        hand, which is what the check verified.

        To run as SCRIPT_USER the program is started through setpriv (util-linux), never with
        subprocess's user=/group=: those make CPython fork() instead of vfork(), and a fork()
        of the worker runs gRPC's at-fork handlers in the child, which crashed it with SIGSEGV
        in about 1 run in 100 while the worker's gRPC threads were busy. vfork runs no handler.
        No preexec_fn either, for the same reason."""
        program = self.resolve(argv[0])
        drop_privileges_for_exec()
        options: dict[str, Any] = {
            "env": {**{k: v for k, v in env.items() if k not in HIDDEN_VARIABLES}, "HOME": home_of(self.user.uid)},
            "cwd": "/",
        }
        if not self.user.switches:
            return list(argv), {**options, "executable": program}  # argv[0] stays the name given
        # Switching takes root and setresuid(2): where it happens capset(2) is allowed too, so
        # setpriv also empties the inheritable set that a change of uid leaves.
        switch = [SETPRIV, f"--reuid={self.user.uid}", f"--regid={self.user.gid}", "--clear-groups",
                  "--inh-caps=-all", "--no-new-privs", "--"]
        return [*switch, program, *argv[1:]], options


class RefusalLog:
    """One log line per change of a program's refusal (not one per run), one when it is accepted again."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._reasons: dict[str, str] = {}

    def refused(self, key: str, reason: str) -> None:
        if self._reasons.get(key) != reason:
            self._reasons[key] = reason
            logger.warning("%s%s: program refused, not run: %s", self._label, key, reason)

    def accepted(self, key: str) -> None:
        if self._reasons.pop(key, None) is not None:
            logger.info("%s%s: program accepted again", self._label, key)

    def forget(self) -> None:
        self._reasons.clear()
