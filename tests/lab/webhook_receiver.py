"""A webhook receiver for the lab: checks link's signature as the README tells receivers to,
and records what it accepted and refused (one JSON object per line in the log file).

    python webhook_receiver.py ADDRESS PORT LOG   (the shared secret in WEBHOOK_SECRET)

A POST to /redirect... is answered 307 to /hook (link must not follow it); a refused POST
is answered 401 with the reason in the body (link must not show it).

Runs inside the lab's client namespace (`ip netns exec`), stopped by PID. Standard library only.
"""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time

MAX_AGE = 300  # seconds: an older timestamp is refused (a replayed request)


def verify(secret: bytes, timestamp: str, signature: str, body: bytes, now: float | None = None) -> str | None:
    """None when the request is link's and fresh, else why it is refused (the README's snippet)."""
    if not timestamp.isdigit():
        return "no timestamp"
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_AGE:
        return "timestamp too old (replay?)"
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "bad signature"
    return None


def main() -> None:
    address, port, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    secret = os.environ["WEBHOOK_SECRET"].encode()
    lock = threading.Lock()

    def record(entry: dict) -> None:
        with lock, open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - readiness probe
            self._answer(200, b"ready\n")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/redirect"):
                # A receiver that sends link elsewhere: link must not follow (it would call an
                # origin that WEBHOOK_ALLOWED_URLS does not name).
                record({"path": self.path, "accepted": False, "why": "redirected", "from": self.client_address[0]})
                self.send_response(307)
                self.send_header("Location", "/hook")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            why = verify(secret, self.headers.get("X-Link-Timestamp", ""), self.headers.get("X-Link-Signature", ""), body)
            entry = {"path": self.path, "accepted": why is None, "why": why, "from": self.client_address[0]}
            if why is None:
                entry["payload"] = json.loads(body)
            record(entry)
            self._answer(204 if why is None else 401, b"" if why is None else why.encode() + b"\n")

        def _answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    http.server.ThreadingHTTPServer((address, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
