"""Whether this agent may take a parsed VIP: what depends on this host and its settings rather
than on the request alone (link.api.validation reads the request; a state file is read through
that alone, these apply to what API users send).

* `check_programs`: every program an EXEC check or command binder names passes
  `link.scripts.check_program` now (SCRIPTS_DIR, root's, runnable by SCRIPT_USER...); the worker
  checks again before every run.
* `check_webhook_allowed`: a webhook binder's origin is on WEBHOOK_ALLOWED_URLS (no open relay);
  the worker checks again before every POST.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

from link.api.validation import ApiError
from link.scripts import ScriptRefused, check_program, named_programs
from link.security_settings import ConfigError, ScriptUser, origin, parse_script_user
from link.vocabulary import binder_kinds


@functools.lru_cache(maxsize=4)
def _script_user(raw: str) -> ScriptUser | None:
    try:
        return parse_script_user(raw)
    except ConfigError:
        return None  # the agent refused it at start; only a test could get here: the worker checks


def script_user_of_this_agent() -> ScriptUser | None:
    """SCRIPT_USER as the agent read it at start: the API process has the agent's environment."""
    return _script_user(os.environ.get("SCRIPT_USER", ""))


def check_programs(request: Mapping[str, Any], scripts_dir: str, *, owner_uid: int = 0,
                   run_as: ScriptUser | None = None) -> None:
    """Refuse (400, naming the field and the rule) the programs of a parsed add or update that
    `link.scripts.check_program` refuses: outside SCRIPTS_DIR, not root's, writable by others,
    setuid, not executable by SCRIPT_USER (`run_as`; default this agent's)..."""
    user = run_as if run_as is not None else script_user_of_this_agent()
    for field, program in named_programs(request):
        try:
            check_program(program, scripts_dir, owner_uid=owner_uid, run_as=user)
        except ScriptRefused as exc:
            raise ApiError(400, f"{field} {exc}") from None


def check_webhook_allowed(request: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse a webhook binder whose URL's origin is not on WEBHOOK_ALLOWED_URLS: the agent
    would otherwise POST to any host an API user names."""
    for field, url in binder_kinds.urls_of(request):  # the binder's schema says which settings are URLs it calls
        wanted = origin(url)
        if not allowed:
            raise ApiError(400, f"{request['binder']} binders are off on this agent: set WEBHOOK_ALLOWED_URLS to the "
                                f"receivers' origins (e.g. WEBHOOK_ALLOWED_URLS={wanted}) and restart it")
        if wanted not in allowed:
            raise ApiError(400, f"{field}: {wanted} is not on WEBHOOK_ALLOWED_URLS ({', '.join(allowed)}); "
                                "the agent only calls the origins listed there")
