"""The VIPs this host was given, kept in STATE_DIR/vips.json across restarts.

Writes are atomic (temp file, fsync, rename, fsync of the directory): a crash mid-write
leaves either the old list or the new one, never half of one. The file is readable by its
owner only (0600): a webhook binder's secret is in it.
"""
from __future__ import annotations

import json
import os
from link.vip import VipSpec

FORMAT_VERSION = 1


class StoreError(RuntimeError):
    pass


class VipStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "vips.json")

    def prepare(self) -> None:
        try:
            os.makedirs(self.state_dir, mode=0o750, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"STATE_DIR={self.state_dir!r} cannot be created: {exc.strerror}") from None
        if not os.access(self.state_dir, os.W_OK):
            raise StoreError(f"STATE_DIR={self.state_dir!r} is not writable")

    def load(self) -> list[VipSpec]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            # Refuse to start rather than overwrite a file we cannot read: that would lose VIPs.
            raise StoreError(f"{self.path} cannot be read ({exc}); fix or remove it") from None
        try:
            return [VipSpec.from_json(item) for item in data["vips"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.path} is not a link VIP list ({exc!r}); fix or remove it") from None

    def save(self, vips: list[VipSpec]) -> None:
        payload = {"version": FORMAT_VERSION, "vips": [v.to_json() for v in vips]}
        tmp = f"{self.path}.tmp.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.state_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from None
