"""Words for decoded JSON values, shared by every reader of client or file input."""
from __future__ import annotations


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for messages such as "not a JSON string"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
