"""The supervisor's answers to the API process (link.vocabulary.protocol)."""
from __future__ import annotations

from typing import Any, Union

from link.vocabulary.message_base import Family, Message, ProtocolError, message


# -- supervisor -> API process: the answer to the request with the same id ------------------
@message(Family.ANSWER, True)
class Done(Message):
    """the request's result (above)"""

    id: int
    result: Any = None


@message(Family.ANSWER, False)
class Refused(Message):
    """the status the API answers (400, 404, 409, 503) and a sentence for people"""

    id: int
    status: int
    error: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 400 <= self.status <= 599:
            raise ProtocolError(f"a refusal with status {self.status}, not 4xx or 5xx")


Answer = Union[Done, Refused]
