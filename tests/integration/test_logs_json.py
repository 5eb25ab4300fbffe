"""``log.format = json`` end to end: a real consumer process writes one JSON object per line,
with its shard and stream as fields."""
from __future__ import annotations

import json
import signal

import pytest

from shardline.devstack.fleet import wait_for

pytestmark = pytest.mark.integration


def test_a_consumer_with_json_logs_writes_parseable_lines_with_the_shard(rig, tmp_path):
    (shard,) = rig.create_stream(1)
    log = tmp_path / "consumer.log"
    proc = rig.consumer(shard, log=log, SHARDLINE_LOG_FORMAT="json")
    try:
        wait_for(lambda: "starting at" in log.read_text(), 20, "the consumer reading",
                 every=0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    lines = log.read_text().splitlines()
    docs = [json.loads(line) for line in lines]  # every line: one JSON object
    mine = [d for d in docs if d["logger"] == "shardline.consumer"]
    assert any(d["message"].startswith("lease acquired") for d in mine)
    assert any(d["message"].startswith("stopped; checkpoint") for d in mine)
    for d in mine:
        assert (d["shard"], d["stream"]) == (shard, rig.stream)
        assert d["level"] in ("INFO", "WARNING", "ERROR", "DEBUG") and d["time"].endswith("Z")
