"""Removing a VIP's address: the kernel's "not there" answers mean nothing is bound (the
interface itself deleted included: the worker goes FAILING instead of crashing), any other
error is raised."""
from __future__ import annotations

import errno
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from link.adapters.netlink import _delete


class Kernel:
    def __init__(self, code: int | None) -> None:
        self.code = code
        self.calls: list[dict[str, Any]] = []

    def addr(self, command: str, **kw: Any) -> None:
        self.calls.append({"command": command, **kw})
        if self.code is not None:
            raise NetlinkError(self.code, errno.errorcode.get(self.code, "?"))


@pytest.mark.parametrize("code", [errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH, errno.ENODEV])
def test_an_address_or_interface_already_gone_is_not_bound(code: int) -> None:
    kernel = Kernel(code)
    assert _delete(kernel, 7, "198.51.100.50", 32) is False  # type: ignore[arg-type]
    assert kernel.calls == [{"command": "del", "index": 7, "address": "198.51.100.50", "prefixlen": 32}]


def test_a_removed_address_says_so() -> None:
    assert _delete(Kernel(None), 7, "198.51.100.50", 32) is True  # type: ignore[arg-type]


def test_any_other_error_is_raised() -> None:
    with pytest.raises(NetlinkError):
        _delete(Kernel(errno.EPERM), 7, "198.51.100.50", 32)  # type: ignore[arg-type]
