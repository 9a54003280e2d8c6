"""A SCRIPTS_DIR of its own for a test run: the only place agents take programs from.

The agent runs a program only if it, its directory and every directory above are owned by root
(or, for unit tests run by a non-root developer, by that developer) and not writable by group or
others: so nothing under /tmp (1777) qualifies. As root the directory is made under /run
(/var/lib when /run is mounted noexec): `<base>/link-tests-<pid>-<random>/` holds

* `scripts/` (0755): the programs (`add()`), SCRIPTS_DIR;
* `out/` (1777, a sibling, so it does not weaken `scripts/`): where programs running as
  nobody can leave a mark for the test to read;

and is removed by `close()` (the `scripts` fixture and the chaos test and demo call it, on
failure too). One left by a run that was SIGKILLed is removed by the next run (`sweep_stale`).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from link.config import ScriptUser
from link.scripts import ProgramPolicy

PREFIX = "link-tests-"
_NAME = re.compile(rf"{PREFIX}(\d+)-")


class ScriptsDirUnavailable(RuntimeError):
    """No directory on this host qualifies (a non-root developer whose home is group-writable...)."""


def _qualifies(path: Path, uid: int) -> bool:
    """Every directory from `path` up to / owned by root or `uid`, not writable by group or others."""
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid not in (0, uid) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def _executable_mount(path: Path) -> bool:
    return not os.statvfs(path).f_flag & getattr(os, "ST_NOEXEC", 8)


def _parent() -> Path:
    uid = os.geteuid()
    if uid == 0:
        candidates = [Path("/run"), Path("/var/lib")]
    else:
        candidates = [Path(p) for p in (os.environ.get("XDG_RUNTIME_DIR", ""), os.path.expanduser("~")) if p]
    for candidate in candidates:
        if candidate.is_dir() and _qualifies(candidate, uid) and _executable_mount(candidate):
            return candidate
    raise ScriptsDirUnavailable(f"no directory among {', '.join(map(str, candidates))} is owned by root or uid {uid} "
                                "all the way up without group/other write access, on an exec mount")


def sweep_stale(parent: Path) -> None:
    """Remove the directories of runs whose process is gone."""
    for old in parent.glob(f"{PREFIX}*"):
        match = _NAME.match(old.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(old, ignore_errors=True)


class ScriptsDir:
    def __init__(self) -> None:
        parent = _parent()
        sweep_stale(parent)
        self.owner_uid = os.geteuid()
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
        try:
            self.root.chmod(0o755)
            self.path = self.root / "scripts"
            self.path.mkdir(mode=0o755)
            self.path.chmod(0o755)  # whatever the umask
            self.out = self.root / "out"
            self.out.mkdir()
            self.out.chmod(0o1777)
        except BaseException:
            self.close()
            raise

    def add(self, name: str, body: str, mode: int = 0o755) -> str:
        """A /bin/sh script `name` in SCRIPTS_DIR running `body`; its path."""
        path = self.path / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(mode)
        return str(path)

    def policy(self, user: ScriptUser | None = None) -> ProgramPolicy:
        """The worker's policy for this directory; programs run as this process unless `user`."""
        me = ScriptUser("", os.geteuid(), os.getegid())
        return ProgramPolicy(str(self.path), user or me, owner_uid=self.owner_uid)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ScriptsDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
