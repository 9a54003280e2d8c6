"""One process at a time on a STATE_DIR: the agent for its whole life, `import-link` while it writes.

`STATE_DIR/agent.lock` carries a POSIX record lock (fcntl.lockf), taken without waiting. Such
a lock belongs to the process that took it: the kernel drops it when that process ends, however
it ends (SIGKILL included), and a forked child (a worker, the API) does not inherit it, so a
worker that outlives a killed supervisor for a moment does not keep a restarted agent out. The
file's text says who holds it ("<pid> <what>"), for the refusal message only: the lock, not the
text, decides.
"""
from __future__ import annotations

import errno
import fcntl
import os

LOCK_NAME = "agent.lock"


class StateDirBusy(RuntimeError):
    """Another process holds the STATE_DIR's lock; the message names it (one line)."""


def lock_path(state_dir: str) -> str:
    return os.path.join(state_dir, LOCK_NAME)


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return "another process"
    pid, _, what = text.partition(" ")
    return f"{what or 'a process'} (pid {pid})" if pid.isdigit() else "another process"


def match_owner(path: str, state_dir: str) -> None:
    """Give a file root made in STATE_DIR to the directory's owner: the agent runs as that user
    (`link` in the Debian package) and must be able to read what `import-link` run by root wrote."""
    if os.geteuid() != 0:
        return
    directory = os.stat(state_dir)
    if directory.st_uid != 0:
        os.chown(path, directory.st_uid, directory.st_gid)


def hold(state_dir: str, what: str) -> int:
    """Take STATE_DIR's lock for this process (`what`: "link-agent", "link-agent import-link");
    the fd, to keep open as long as the lock is wanted. StateDirBusy if someone holds it, OSError
    if the file cannot be made."""
    path = lock_path(state_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        match_owner(path, state_dir)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise StateDirBusy(f"STATE_DIR={state_dir!r} is in use by {_holder(fd)}: "
                               "one link-agent (or import-link) at a time per STATE_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd
