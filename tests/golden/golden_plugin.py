"""The goldens' plugin transform: the event's ``row`` is the row to return, with the values
JSON cannot hold (datetimes, bytes, subclasses, non-finite floats) tagged, so a committed
JSON corpus can make a transform return anything (tests/golden/regen.py encodes them)."""
from __future__ import annotations

import base64
from datetime import date, datetime

from shardline.transforms import Event, Row


class Text(str):
    """A str subclass: not a plain str to the stage worker's checks."""


class Stamp(datetime):
    """A datetime subclass."""


def decode(value: object) -> object:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, text),) = value.items()
        if tag == "$datetime":
            return datetime.fromisoformat(text)
        if tag == "$stamp":
            return Stamp.fromisoformat(text)
        if tag == "$date":
            return date.fromisoformat(text)
        if tag == "$bytes":
            return base64.b64decode(text)
        if tag == "$text":
            return Text(text)
        if tag == "$float":
            return float(text)
    return value


def encode(value: object) -> object:
    """The inverse of ``decode`` (used by regen.py to write the corpus)."""
    if isinstance(value, datetime):  # a subclass of its own comes back as Stamp
        return {"$datetime" if type(value) is datetime else "$stamp": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, str) and type(value) is not str:
        return {"$text": str(value)}
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return {"$float": repr(value)}
    return value


def row(event: Event) -> Row:
    spec = event["row"]
    if isinstance(spec, dict) and "$raise" in spec:
        raise ValueError(spec["$raise"])
    if isinstance(spec, dict) and "$return" in spec:  # not a dict: a list, a string...
        return decode(spec["$return"])  # type: ignore[return-value]
    assert isinstance(spec, dict)
    return {name: decode(value) for name, value in spec.items()}  # type: ignore[misc]
