"""Values read from etcd are untrusted: how they are shown in logs, and logged only once.

Anyone who can write to etcd can put anything under `/link/` (README, "Security"): a value of
megabytes, invalid UTF-8, a line break that fakes a log line. The worker never crashes on one
(the decoders say what is wrong instead of raising), never logs one as is (`shown`: escaped,
bounded), and warns about a bad key once, not on every cycle (`OncePerKey`).
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

SHOWN_CHARS = 80  # of a value in a log line; the rest is counted, not shown
MAX_NAME_CHARS = 253  # a host name read from etcd (a DNS name's limit)
REMEMBERED_KEYS = 256  # bad keys remembered per worker (a flood of keys must not grow memory)


def shown(value: str | bytes, limit: int = SHOWN_CHARS) -> str:
    """A value as a log may show it: escaped (ascii(): no control or non-ASCII character, no
    line break gets through) and cut after `limit` characters."""
    head = ascii(value[:limit])
    return head if len(value) <= limit else f"{head}... ({len(value)} in all)"


def plain_name(text: str) -> bool:
    """Whether `text` can be shown as a host name: what a hostname can be, printable, without
    '/', '\\' (an invalid UTF-8 byte read from etcd shows as \\xNN) or white space."""
    return (0 < len(text) <= MAX_NAME_CHARS and text.isprintable()
            and not any(c in "/\\" or c.isspace() for c in text))


def as_name(text: str) -> str:
    """A host name read from etcd (the lock's value), fit to show in logs and the API."""
    return text if plain_name(text) else shown(text)


class OncePerKey:
    """Warns about a bad etcd key once; again only when what is wrong with it changes (or the
    key went away and came back). `label` starts each line (the VIP)."""

    def __init__(self, label: str, limit: int = REMEMBERED_KEYS) -> None:
        self.label = label
        self.limit = limit
        self._seen: dict[str, int] = {}  # key -> hash of what was said (a value may be megabytes)

    def warn(self, key: str, value: str | bytes, why: str) -> bool:
        """Log `why` for this key and value unless already said; True if it was logged."""
        said = hash((why, value))
        if self._seen.get(key) == said:
            return False
        if key not in self._seen and len(self._seen) >= self.limit:
            self._seen.pop(next(iter(self._seen)))  # the oldest: it may be logged once more
        self._seen[key] = said
        logger.warning("%s: etcd key %s = %s: %s", self.label, shown(key), shown(value), why)
        return True

    def fine(self, key: str) -> None:
        """The key is gone or good again: a later bad value is worth a line."""
        self._seen.pop(key, None)

    def keep_only(self, keys: set[str], under: str) -> None:
        """Forget the remembered keys under the prefix `under` that are no longer in `keys`."""
        for key in [k for k in self._seen if k.startswith(under) and k not in keys]:
            del self._seen[key]
