"""Processes the lab started: stopped and killed by PID only, with bounded waits."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil


def title(pid: int) -> str:
    """The process title as `ps -eo args` shows it (setproctitle pads argv with empty strings)."""
    try:
        return " ".join(part for part in psutil.Process(pid).cmdline() if part).strip()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (bounded) until these PIDs are gone or zombies; return those still alive."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    for _ in range(int(timeout / 0.02) + 2):
        left = [p for p in left if alive(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return left


def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, each PID of the list."""
    signal_pids(pids, signal.SIGTERM)
    left = wait_gone(pids, grace)
    if left:
        signal_pids(left, signal.SIGKILL)
        wait_gone(left, 2.0)


def kill(pids: list[int]) -> None:
    signal_pids(pids, signal.SIGKILL)
    wait_gone(pids, 2.0)


def sigterm_and_wait(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to a process we started, if it still runs, and wait (bounded) for its exit."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
