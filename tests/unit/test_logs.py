"""logs: the text and JSON line formats (pure: a handler on a StringIO)."""
from __future__ import annotations

import io
import json
import logging

import pytest

from shardline import logs


@pytest.fixture
def capture():
    """setup() for a format, with the root handler's stream swapped for a StringIO."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def use(fmt: str) -> io.StringIO:
        logs.setup("DEBUG", fmt)
        buf = io.StringIO()
        root.handlers[0].setStream(buf)
        return buf

    yield use
    root.handlers[:], level = saved
    root.setLevel(level)


def test_json_lines_carry_the_context_as_fields(capture):
    buf = capture("json")
    log = logs.get_logger("consumer", stream="clicks", shard="shardId-000000000001")
    log.info("checkpointed %s records", 500)
    log.bind(load_id="L-7", level="x").warning("loaded", extra={"rows": 42})
    logging.getLogger("botocore.x").warning("no context")
    first, second, third = (json.loads(line) for line in buf.getvalue().splitlines())
    assert first["message"] == "checkpointed 500 records"
    assert (first["level"], first["logger"]) == ("INFO", "shardline.consumer")
    assert (first["stream"], first["shard"]) == ("clicks", "shardId-000000000001")
    assert first["time"].endswith("Z") and "T" in first["time"] and isinstance(first["pid"], int)
    assert (second["load_id"], second["rows"], second["level"], second["ctx_level"]) == (
        "L-7", 42, "WARNING", "x")  # a context name never overwrites a fixed key
    assert third["logger"] == "botocore.x" and "shard" not in third
    assert "ctx" not in first and "ctx_fields" not in first


def test_json_lines_include_the_exception(capture):
    buf = capture("json")
    log = logs.get_logger("loader", table="page_views", load_id="L-1")
    try:
        raise RuntimeError("COPY failed")
    except RuntimeError:
        log.exception("load failed")
    (line,) = buf.getvalue().splitlines()  # the traceback stays inside the one line
    doc = json.loads(line)
    assert doc["level"] == "ERROR" and doc["load_id"] == "L-1"
    assert doc["exception"].startswith("Traceback")
    assert "RuntimeError: COPY failed" in doc["exception"]


def test_text_lines_are_unchanged(capture):
    buf = capture("text")
    logs.get_logger("worker", worker="w1").info("ready")
    line = buf.getvalue().strip()
    assert line.endswith("INFO    shardline.worker [worker=w1] ready")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="yaml"):
        logs.setup("INFO", "yaml")
