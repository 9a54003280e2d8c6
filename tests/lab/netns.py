"""Network namespaces: commands inside them, sockets created inside them, who runs in them.

Nothing here touches the root namespace's interfaces or routes: every `ip` command names its
namespace with `ip -n`, and sockets are created inside a lab namespace with setns(2).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from typing import Iterator, Sequence

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


class NetnsError(RuntimeError):
    pass


def run(argv: Sequence[str], timeout: float = 10.0, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """Run a short command (bounded by `timeout`), capturing its output as text."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} -> exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ip(ns: str, *args: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess:
    """`ip -n <ns> ...`: iproute2 switches to the namespace itself."""
    return run(["ip", "-n", ns, *args], timeout=timeout, check=check)


def exec_in(ns: str, *argv: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess:
    """`ip netns exec <ns> ...` (also gives the command the namespace's /sys)."""
    return run(["ip", "netns", "exec", ns, *argv], timeout=timeout, check=check)


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def listing() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def add(ns: str) -> None:
    run(["ip", "netns", "add", ns])


def delete(ns: str) -> None:
    if exists(ns):
        run(["ip", "netns", "delete", ns], check=False)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body with this thread inside namespace `ns` (sockets made there stay there).

    Keep the body tiny (create a socket, nothing else): the thread goes back to its own
    namespace at once, and a failure to go back is fatal for the process.
    """
    with _setns_lock:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
                try:
                    yield
                finally:
                    try:
                        _setns(own)
                    except OSError:  # pragma: no cover - cannot happen with a valid fd
                        os._exit(99)
            finally:
                os.close(target)
        finally:
            os.close(own)


def socket_in(ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket that belongs to namespace `ns` (usable from this, the root, namespace)."""
    with entered(ns):
        return socket.socket(family, type, proto)


def connect_in(ns: str, host: str, port: int, timeout: float) -> socket.socket:
    sock = socket_in(ns)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def inode(ns: str) -> int | None:
    try:
        return os.stat(os.path.join(NETNS_DIR, ns)).st_ino
    except FileNotFoundError:
        return None


def holds(ns: str, pid: int) -> bool:
    """Whether process `pid` lives in namespace `ns` (an identity check before a kill: a
    remembered PID may have been reused by an unrelated process since)."""
    ino = inode(ns)
    try:
        return ino is not None and os.stat(f"/proc/{pid}/ns/net").st_ino == ino
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return False


def pids_in(ns: str) -> list[int]:
    """Processes whose network namespace is `ns` (what `ip netns pids` prints)."""
    ino = inode(ns)
    if ino is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue
    return found


def usable() -> str | None:
    """None when namespaces can be made here, else why not (for a pytest skip)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    probe = f"lkprobe{os.getpid()}"
    try:
        add(probe)
    except (NetnsError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace: {exc}"
    finally:
        delete(probe)
    return None
