"""The HTTP API of the agent: the bottle app (`make_app`) and the API process body (`run_api`).

`run_api` is not imported here: it pulls in waitress and setproctitle, which the app and its
tests do not need.
"""
from link.api.app import make_app
from link.api.validation import MAX_BODY_BYTES

__all__ = ["MAX_BODY_BYTES", "make_app"]
