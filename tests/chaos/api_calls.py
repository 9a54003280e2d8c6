"""The chaos run's bursts of API calls: valid ones (each must get its expected answer) and
invalid ones (each must get a 4xx and change nothing), on a random host."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.lab.lab import Host

TEMP_VIPS = [f"203.0.113.{i}/32" for i in range(200, 210)]  # added and deleted by API bursts


@dataclass
class ApiCall:
    valid: bool
    method: str
    path: str
    status: int | None
    error: str = ""


class ApiBursts:
    """Mixed into Chaos: needs `rng`, `ids`, `api_calls`, `vips()`, `plan()` and `vip_body()`."""

    def call(self, host: Host, valid: bool, method: str, path: str, body: Any = None, raw: bytes | None = None,
             expect: tuple[int, ...] = ()) -> Any:
        try:
            kw = {"raw": raw} if raw is not None else {}
            resp = host.api(method, path, body, timeout=20, **kw)
        except Exception as exc:  # noqa: BLE001 - recorded
            self.api_calls.append(ApiCall(valid, method, path, None, repr(exc)))
            return None
        ok = resp.status in expect if valid else 400 <= resp.status < 500
        self.api_calls.append(ApiCall(valid, method, path, resp.status, "" if ok else str(resp.body)[:200]))
        return resp

    def valid_call(self, host: Host) -> None:
        vip = self.rng.choice(self.vips())
        vip_id = self.ids[vip][host.name]
        what = self.rng.choice(["list", "get", "events", "metrics", "version", "patch", "add-delete"])
        if what == "list":
            self.call(host, True, "GET", "/ips", expect=(200,))
        elif what == "get":
            self.call(host, True, "GET", f"/ips/{vip_id}", expect=(200,))
        elif what == "events":
            self.call(host, True, "GET", f"/ips/{vip_id}/events", expect=(200,))
        elif what == "metrics":
            self.call(host, True, "GET", "/metrics", expect=(200,))
        elif what == "version":
            self.call(host, True, "GET", "/version", expect=(200,))
        elif what == "patch":  # the same checks again: applied live, nothing changes
            plan = self.plan(vip)
            self.call(host, True, "PATCH", f"/ips/{vip_id}", {"healthchecks": self.vip_body(plan, host.name)["checks"]},
                      expect=(200,))
        else:
            temp = self.rng.choice(TEMP_VIPS)
            resp = self.call(host, True, "POST", "/ips", {"ip": temp}, expect=(201,))
            if resp is not None and resp.status == 201:
                self.call(host, True, "DELETE", f"/ips/{resp.body['id']}", expect=(204,))

    def invalid_call(self, host: Host) -> None:
        vip = self.rng.choice(self.vips())
        vip_id = self.ids[vip][host.name]
        cases: list[tuple[str, str, Any, bytes | None]] = [
            ("POST", "/ips", {"ip": "not-an-ip"}, None),
            ("POST", "/ips", {"ip": "198.51.100.50/33"}, None),
            ("POST", "/ips", {}, None),
            ("POST", "/ips", None, b"{not json"),
            ("POST", "/ips", {"ip": "203.0.113.220/32", "priority": 999}, None),
            ("POST", "/ips", {"ip": "203.0.113.221/32", "checks": [{"type": "NOPE"}]}, None),
            ("POST", "/ips", {"ip": "203.0.113.222/32", "fault_policy": "sometimes"}, None),
            ("POST", "/ips", {"ip": vip}, None),  # this host has it already: 409
            ("GET", "/ips/vip-00000000-0000-4000-8000-000000000000", None, None),
            ("DELETE", "/ips/not-an-id", None, None),
            ("PATCH", f"/ips/{vip_id}", {"fault_policy": "sometimes"}, None),
            ("PATCH", f"/ips/{vip_id}", {"priority": -1}, None),
            # Programs outside SCRIPTS_DIR: refused, never run.
            ("POST", "/ips", {"ip": "203.0.113.223/32", "checks": [{"type": "EXEC", "command": ["/bin/sh", "-c", "id"]}]}, None),
            ("PATCH", f"/ips/{vip_id}", {"healthchecks": [{"type": "EXEC", "command": ["/usr/bin/id"]}]}, None),
            ("GET", "/nowhere", None, None),
        ]
        method, path, body, raw = self.rng.choice(cases)
        resp = self.call(host, False, method, path, body, raw)
        if resp is not None and resp.status == 201 and isinstance(resp.body, dict) and "id" in resp.body:
            host.api("DELETE", f"/ips/{resp.body['id']}", timeout=20)  # accepted by mistake: take it back
