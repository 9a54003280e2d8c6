"""The `webhook` binder: a signed HTTP POST on each activation and deactivation.

Body: `{"endpoint_id": <VIP id>, "ip": <VIP>, "status": "ACTIVATED"|"STANDBY"|"FAILING",
"hostname": <host>}`. Headers: `X-Link-Timestamp` (Unix seconds) and `X-Link-Signature:
sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>`. Any 2xx is success; anything
else, a 3xx included (redirects are never followed), an error or a timeout is a failed
attempt, retried with backoff (`runner.ActionRunner`) with a fresh timestamp each time. The
secret is never logged nor shown by the API.

No open relay: the URL's origin must be on WEBHOOK_ALLOWED_URLS, checked when the VIP is
added and again before every POST (the setting may have changed across a restart while
STATE_DIR kept the VIP). What the receiver answers is never shown (only its status): the URL
may be any service of the network, and `binder_status.error` is read by every API user.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import ssl
import time
from typing import Any, Callable
from urllib.parse import SplitResult, urlsplit

from link import __version__
from link.config import Config, origin
from link.vocabulary.binder_kinds import WEBHOOK
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import State
from link.worker.binders.runner import MAX_ERROR, Action, ActionFailed, ActionRunner

logger = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Link-Timestamp"
SIGNATURE_HEADER = "X-Link-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 with the secret over `timestamp + "." + body`."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def payload(vip_id: str, vip: str, status: str, hostname: str) -> bytes:
    return json.dumps({"endpoint_id": vip_id, "ip": vip, "status": status, "hostname": hostname}).encode("utf-8")


def post(url: str, secret: str, body: bytes, timeout: float, now: Callable[[], float] = time.time,
         context: ssl.SSLContext | None = None) -> int:
    """POST the signed body; the answer's status if 2xx, else ActionFailed."""
    parts = urlsplit(url)
    timestamp = str(int(now()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"link/{__version__}",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        "Connection": "close",
    }
    host = parts.hostname or ""  # validated when the VIP was added: never empty
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, parts.port, timeout=timeout, context=context or ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(4096)  # read (so the exchange completes), never shown
        status = response.status
    except http.client.HTTPException as exc:
        # Its text quotes what the server sent (BadStatusLine carries the first line): not shown.
        raise ActionFailed(f"POST {_where(parts)} failed: the answer is not HTTP ({type(exc).__name__})") from None
    except OSError as exc:
        raise ActionFailed(f"POST {_where(parts)} failed: {type(exc).__name__}: {exc}"[:MAX_ERROR + 60]) from None
    finally:
        conn.close()
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        raise ActionFailed(f"POST {_where(parts)} answered {status}: redirects are not followed")
    raise ActionFailed(f"POST {_where(parts)} answered {status}")


def refuse_unless_allowed(url: str, allowed: tuple[str, ...]) -> None:
    """ActionFailed unless the URL's origin is on WEBHOOK_ALLOWED_URLS (as the agent runs now)."""
    if origin(url) not in allowed:
        raise ActionFailed(f"not called: {origin(url)} is not on WEBHOOK_ALLOWED_URLS "
                           f"({', '.join(allowed) if allowed else 'unset'}); add it there, or delete this VIP")


def _where(parts: SplitResult) -> str:
    # Scheme, host and path only: a query string may carry a token.
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


class WebhookBinder:
    kind = WEBHOOK.name
    announces = False  # a web server is told, no neighbour

    def __init__(self, config: Config, spec: VipSpec, wake: Callable[[], None], *, runner_options: dict[str, Any] | None = None) -> None:
        settings = WEBHOOK.values(spec.binder_settings)  # its schema: link.vocabulary.binder_kinds
        self.url = str(settings["url"])
        self._secret = str(settings["secret"])
        self.timeout = float(settings["timeout"])
        self.vip, self.vip_id, self.hostname = spec.ip, spec.id, config.hostname
        self.allowed = config.webhook_allowed_urls
        self._active = False
        self.runner = ActionRunner(self._perform, wake, label=f"{self.vip}: webhook binder: ", **(runner_options or {}))

    @classmethod
    def from_spec(cls, config: Config, spec: VipSpec, wake: Callable[[], None], priority: Callable[[], int]) -> "WebhookBinder":
        return cls(config, spec, wake)

    def __repr__(self) -> str:
        return f"WebhookBinder({self.vip}, {self.url!r})"  # not the secret

    def activate(self, reason: str = "") -> None:
        self._active = True
        self.runner.submit(Action("activate", State.ACTIVATED.value, reason))

    def deactivate(self, state: str = State.STANDBY.value, reason: str = "") -> None:
        if not self._active:
            return  # never activated here: nothing to take back
        self._active = False
        self.runner.submit(Action("deactivate", state, reason))

    def ensure(self) -> None:
        pass

    def next_due(self) -> float | None:
        return None

    def run_due(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return self.runner.status()

    def packets_sent(self) -> int:
        return 0  # a web server is told, no neighbour

    def announce_once(self) -> None:
        pass  # announces is False: never asked

    def close(self, wait: float = 0.0) -> None:
        self.runner.close(wait)

    def _perform(self, action: Action, attempt: int) -> None:
        body = payload(self.vip_id, self.vip, action.state, self.hostname)
        try:
            refuse_unless_allowed(self.url, self.allowed)
            status = post(self.url, self._secret, body, self.timeout)
        except ActionFailed as exc:
            raise ActionFailed(f"{action.name} ({action.state}): {exc}") from None
        logger.info("%s: webhook told %s (%s, answer %d)", self.vip, action.state, action.name, status)
