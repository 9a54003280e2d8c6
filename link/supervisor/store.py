"""The VIPs this host was given, kept in STATE_DIR/vips.json across restarts.

Writes are atomic (temp file, fsync, rename, fsync of the directory): a crash mid-write
leaves either the old list or the new one, never half of one. The file is readable by its
owner only (0600): a webhook binder's secret is in it.

The file is `{"version": 1, "vips": [<VipSpec.to_json()>, ...]}`. It is read through the
API's own validation (`parse_add_body`, one definition of what a valid VIP is), plus the id:
a file of another shape, a bad entry or two entries with one id or one address (whatever
their prefix lengths) stop the agent at start with one line naming the entry and the field,
never a silent empty list. The webhook
allow-list is not applied here: it is a setting of the agent, checked before every POST.
"""
from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

from link.api.validation import ApiError, check_vip_id, json_type_name, parse_add_body
from link.vocabulary.vip import VipSpec, address_of

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORMAT_VERSION = 1
_TOP_FIELDS = ("version", "vips")


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
        except RecursionError:
            # json nests one Python call per level: a few thousand "[" exhaust the stack.
            raise StoreError(f"{self.path} cannot be read (nested too deeply to be a link VIP list); "
                             "fix or remove it") from None
        try:
            return parse_stored(data)
        except ValueError as exc:
            raise StoreError(f"{self.path}: {exc}; fix or remove it (link-agent did not start)") from None
        except RecursionError:  # an entry nested just below json's limit, encoded again by _entry
            raise StoreError(f"{self.path}: an entry is nested too deeply to be a VIP; fix or remove it "
                             "(link-agent did not start)") from None

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


def parse_stored(data: Any) -> list[VipSpec]:
    """The VIPs of a decoded vips.json; ValueError naming the entry (index and id) and the field."""
    if not isinstance(data, dict):
        raise ValueError(f"not a link VIP list: a JSON object {{\"version\": {FORMAT_VERSION}, \"vips\": [...]}} "
                         f"was expected, not a JSON {json_type_name(data)}")
    for key in data:
        if key not in _TOP_FIELDS:
            raise ValueError(f"not a link VIP list: unknown field {str(key)[:60]!r} (it holds version and vips)")
    version = data.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ValueError(f"version {json.dumps(version)[:20]} is not {FORMAT_VERSION}: written by another version of link?")
    items = data.get("vips")
    if not isinstance(items, list):
        raise ValueError(f"not a link VIP list: vips must be a list, not a JSON {json_type_name(items)}")
    specs: list[VipSpec] = []
    ids: dict[str, int] = {}
    addresses: dict[IPAddress, int] = {}
    for index, item in enumerate(items):
        spec = _entry(index, item)
        where = f"vips[{index}] ({spec.id})"
        if spec.id in ids:
            raise ValueError(f"{where}: id is also the id of vips[{ids[spec.id]}]")
        # One address under two prefix lengths is two lock keys: two hosts could bind it.
        address = address_of(spec.ip)
        if address in addresses:
            first = addresses[address]
            raise ValueError(f"{where}: ip {spec.ip} is also the address of vips[{first}] ({specs[first].ip})")
        ids[spec.id], addresses[address] = index, index
        specs.append(spec)
    return specs


def _entry(index: int, item: Any) -> VipSpec:
    if not isinstance(item, dict):
        raise ValueError(f"vips[{index}] must be a JSON object, not a JSON {json_type_name(item)}")
    vip_id = item.get("id")
    if not isinstance(vip_id, str):
        raise ValueError(f"vips[{index}]: id is required (a string vip-<uuid4>)")
    where = f"vips[{index}] ({vip_id[:60]})"
    try:
        check_vip_id(vip_id)
        # The rest is read exactly as a POST /ips body: the same parsers, the same messages.
        body = {key: value for key, value in item.items() if key != "id"}
        parsed = parse_add_body(json.dumps(body).encode("utf-8"))
    except ApiError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return VipSpec.from_json({"id": vip_id, **parsed})
