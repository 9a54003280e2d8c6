"""Running one of the user's programs from a worker thread: checked, bounded, killed whole.

What the command binder (link.worker.binders.command) and notify programs
(link.worker.notify) share. The program is checked right before the run and started as
SCRIPT_USER (`ProgramPolicy.prepare`, link.scripts: call `run_program` from the thread that
runs programs, it drops that thread's privileges for exec). subprocess starts it with
vfork+exec: no preexec_fn, no user=, so the child runs no Python and touches none of the
worker's gRPC state. It gets a session of its own, so a timeout kills its children too (a
shell script's commands): `kill_group`.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from link.scripts import ProgramPolicy

logger = logging.getLogger(__name__)

MAX_SUMMARY = 200  # characters of a program's output kept in a message
MAX_OUTPUT = 64 * 1024  # bytes of a program's output kept (the rest is read and dropped)
_EXIT_LOOK = 0.05  # s: how often a program whose pipe a background child holds is looked at


class ProgramNotStarted(Exception):
    """exec failed (the message says why)."""


class ProgramTimedOut(Exception):
    """The program ran past its timeout: its process group was killed."""


@dataclass(frozen=True)
class Finished:
    returncode: int
    output: bytes

    def how(self) -> str:
        """`exited 3` or `was killed by signal 9`."""
        return f"was killed by signal {-self.returncode}" if self.returncode < 0 else f"exited {self.returncode}"


def summarize(output: bytes) -> str:
    """A program's output on one line, cut at MAX_SUMMARY characters."""
    text = output.decode(errors="replace").strip().replace("\r", "").replace("\n", " | ")
    return text[:MAX_SUMMARY] + ("…" if len(text) > MAX_SUMMARY else "")


class RunningProgram:
    """The program being run now, if any, so that a stop can kill it from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def set(self, proc: subprocess.Popen[bytes] | None) -> None:
        with self._lock:
            self._proc = proc

    def kill(self) -> int | None:
        """SIGKILL the running program's group; its pid, or None when nothing runs."""
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        kill_group(proc)
        return proc.pid


def run_program(programs: ProgramPolicy, argv: Sequence[str], env: Mapping[str, str], timeout: float,
                running: RunningProgram | None = None) -> Finished:
    """Run `argv` to its end; ScriptRefused (not run: the rule refuses it now),
    ProgramNotStarted or ProgramTimedOut (killed, with its group) otherwise."""
    # Checked right before the run: a program changed since the VIP was added is not run;
    # what runs is the resolved path (see ProgramPolicy.prepare).
    args, options = programs.prepare(argv, env)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                close_fds=True, start_new_session=True, **options)
    except OSError as exc:
        raise ProgramNotStarted(f"could not start {args[0]}: {exc.strerror or exc}") from None
    if running is not None:
        running.set(proc)
    try:
        try:
            output = _output_until_exit(proc, time.monotonic() + timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise ProgramTimedOut(f"timed out after {timeout:g}s") from None
    finally:
        if running is not None:
            running.set(None)
    return Finished(proc.returncode, output)


def _output_until_exit(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    """The program's output until the program itself exits (TimeoutExpired past `deadline`).

    Not until the pipe's end: a program that leaves a child in the background (`daemon &`, as
    keepalived's notify scripts often do) hands it the pipe, and waiting for the end would count
    the child's lifetime as the program's. Once the program has exited, what is already in the
    pipe is read and the pipe closed (a child writing to it later gets EPIPE, not a hang). The
    output is read while the program runs (a full pipe would block it), keeping MAX_OUTPUT bytes."""
    assert proc.stdout is not None
    pipe = proc.stdout.fileno()
    os.set_blocking(pipe, False)
    kept = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(pipe, selectors.EVENT_READ)
            while True:  # bounded by the deadline
                exited = proc.poll() is not None
                if _read_available(pipe, kept) or exited:
                    break  # the pipe's end (every writer gone), or the program is done
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(proc.args, 0)
                # Woken by output or the pipe's end; a silent pipe held by a background child:
                # look at the program again after at most _EXIT_LOOK.
                selector.select(min(left, _EXIT_LOOK))
    finally:
        proc.stdout.close()
    proc.wait(max(0.0, deadline - time.monotonic()))  # done already, or closed its output and still running
    return bytes(kept)


def _read_available(pipe: int, kept: bytearray) -> bool:
    """Read what the pipe holds now (kept up to MAX_OUTPUT); True at its end."""
    for _ in range(64):  # at most 4 MiB a turn: a program that floods its output still lets the loop look at time
        try:
            data = os.read(pipe, 65536)
        except BlockingIOError:
            return False
        if not data:
            return True
        kept.extend(data[:max(0, MAX_OUTPUT - len(kept))])
    return False


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program and its session (it is the leader: its pid is the group's id)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=1.0)  # reap it (the pipe is not waited for: a child that left the group may hold it)
    except subprocess.TimeoutExpired:
        pass
