"""Which programs the agent runs (EXEC checks, command binders), and as whom: keepalived's
`enable_script_security` and `script_user`.

A program is named by an absolute path. After resolving symlinks it must be inside SCRIPTS_DIR
(default /etc/link/scripts), be a regular file with an execute bit, be owned by root, and
neither it nor any directory above it may be writable by group or others or owned by another
user: then only root can change what runs. `check_program` is that rule, written once; the API
applies it when a VIP is added or its checks change, the worker again right before every run.
Arguments stay free. Programs run as SCRIPT_USER (`ProgramPolicy.prepare`).
"""
from __future__ import annotations

import functools
import logging
import os
import pwd
import stat
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from link.config import Config, ScriptUser

logger = logging.getLogger(__name__)

# The API's password is no business of the user's programs (ETCD_TLS_* name files, not secrets).
HIDDEN_VARIABLES = ("PASSWORD",)
_SHOWN = 200  # characters of a path quoted in a message
# Switches to SCRIPT_USER (root only) then execs the program; util-linux is Essential on Debian.
SETPRIV = "/usr/bin/setpriv"


class ScriptRefused(ValueError):
    """The program may not run; the message names the path and the rule it breaks."""


def _quote(path: str) -> str:
    return repr(path[:_SHOWN] + ("…" if len(path) > _SHOWN else ""))


def _writable_by_others(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def check_program(path: str, scripts_dir: str, *, owner_uid: int = 0) -> str:
    """The program's resolved path (no symlink left), or ScriptRefused saying which rule it breaks.

    `owner_uid` is who must own the program and may own the directories above it: root (0) in
    the agent; unit tests run by a non-root developer pass their own uid.
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise ScriptRefused("must be a path without NUL characters")
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
    if not stat.S_ISREG(info.st_mode):
        raise ScriptRefused(f"{shown} is not a regular file")
    if not info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise ScriptRefused(f"{shown} is not executable (no x permission bit)")
    if info.st_uid != owner_uid:
        raise ScriptRefused(f"{shown} is owned by uid {info.st_uid}, not {_owner(owner_uid)}")
    if _writable_by_others(info.st_mode):
        raise ScriptRefused(f"{shown} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})")
    # Every directory above, up to /: whoever may write in one of them can swap the program.
    directory = os.path.dirname(resolved)
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
        if directory == "/":
            return resolved
        directory = os.path.dirname(directory)


def _owner(uid: int) -> str:
    return "root" if uid == 0 else f"uid {uid}"


@functools.lru_cache(maxsize=8)
def home_of(uid: int) -> str:
    """The user's home directory when it exists (nobody's is /nonexistent on Debian), else "/"."""
    try:
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/"
    return home if home and os.path.isdir(home) else "/"


@dataclass(frozen=True)
class ProgramPolicy:
    """Where the worker's programs may live and who runs them (SCRIPTS_DIR, SCRIPT_USER)."""

    scripts_dir: str
    user: ScriptUser
    owner_uid: int = 0  # see check_program

    @classmethod
    def from_config(cls, config: Config) -> "ProgramPolicy":
        return cls(config.scripts_dir, config.script_user)

    def resolve(self, path: str) -> str:
        return check_program(path, self.scripts_dir, owner_uid=self.owner_uid)

    def prepare(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, Any]]:
        """Check the program now (ScriptRefused) and return what to give subprocess: the
        arguments and the keyword arguments (environment with PASSWORD hidden and HOME the
        user's, cwd "/", the resolved program).

        The resolved path is executed, not the name given, so a symlink retargeted between this
        check and the exec changes nothing; the rest of the path can only change by root's
        hand, which is what the check verified.

        To run as SCRIPT_USER the program is started through setpriv (util-linux), never with
        subprocess's user=/group=: those make CPython fork() instead of vfork(), and a fork()
        of the worker runs gRPC's at-fork handlers in the child, which crashed it with SIGSEGV
        in about 1 run in 100 while the worker's gRPC threads were busy. vfork runs no handler.
        No preexec_fn either, for the same reason."""
        program = self.resolve(argv[0])
        options: dict[str, Any] = {
            "env": {**{k: v for k, v in env.items() if k not in HIDDEN_VARIABLES}, "HOME": home_of(self.user.uid)},
            "cwd": "/",
        }
        if not self.user.switches:
            return list(argv), {**options, "executable": program}  # argv[0] stays the name given
        switch = [SETPRIV, f"--reuid={self.user.uid}", f"--regid={self.user.gid}", "--clear-groups", "--"]
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
