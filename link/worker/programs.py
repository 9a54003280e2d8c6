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
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

from link.scripts import ProgramPolicy

logger = logging.getLogger(__name__)

MAX_SUMMARY = 200  # characters of a program's output kept in a message


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
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise ProgramTimedOut(f"timed out after {timeout:g}s") from None
    finally:
        if running is not None:
            running.set(None)
    return Finished(proc.returncode, output)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program and its session (it is the leader: its pid is the group's id)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=1.0)  # reap it; a grandchild that escaped the group may hold the pipe
    except subprocess.TimeoutExpired:
        pass
