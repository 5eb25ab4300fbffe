"""The Producer against kinesalite: a forked worker sends its own events (not its parent's),
and a full buffer follows its policy and counts while Kinesis stalls."""
from __future__ import annotations

import json
import os

import pytest

from shardline.producer.producer import Producer
from shardline.settings import load
from shardline.devstack.fleet import shardline
from tests.pipeline import read_stream
from tests.producer_kit import PutFaultProxy, user_records

pytestmark = pytest.mark.integration


def stream_ids(kinesis, stream: str) -> list[str]:
    records = read_stream(kinesis, stream)
    return [json.loads(d)["event_id"] for _, d in user_records([("k", data) for data in
                                                                records.values()])]


def views(n: int, start: int = 0) -> list[dict]:
    return [{"event_id": f"e{start + i}", "session_id": f"s{i % 17}"} for i in range(n)]


def test_a_forked_worker_sends_its_own_events(stack_env, stream_name, kinesis):
    env = {**stack_env, "SHARDLINE_KINESIS_STREAM": stream_name}
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    settings = load(None, env=env)
    # Like gunicorn --preload: made (and used) in the master before the fork; the
    # master's events are still buffered when the worker is forked.
    p = Producer(settings=settings, linger_ms=30_000, metrics=False)
    assert all(p.put(e) for e in views(40))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = all(p.put(e) for e in views(25, start=1000)) and p.flush(20)
            code = 0 if ok and p._thread is not None and p._thread.is_alive() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(stream_ids(kinesis, stream_name)) == sorted(f"e{i}" for i in range(1000, 1025))
    assert p.flush(20)
    p.close()
    assert sorted(stream_ids(kinesis, stream_name)) == \
        sorted([f"e{i}" for i in range(40)] + [f"e{i}" for i in range(1000, 1025)])


@pytest.mark.parametrize("policy", ["drop", "block"])
def test_a_full_buffer_follows_its_policy_and_counts(stack, stack_env, stream_name, kinesis,
                                                      policy):
    env = {**stack_env, "SHARDLINE_KINESIS_STREAM": stream_name}
    shardline("create-stream", "--stream", stream_name, "--shards", "1", env=env)
    proxy = PutFaultProxy(stack.kinesis_endpoint_url, stall_s=2.0).start()
    try:
        settings = load(None, env={**env, "SHARDLINE_KINESIS_ENDPOINT_URL": proxy.url})
        p = Producer(settings=settings, max_buffer_bytes=1024 * 1024, on_full=policy,
                     block_timeout_ms=30, linger_ms=10, metrics=False)
        proxy.storm("slow", 60)
        pad = "x" * 2000
        accepted = [i for i in range(2_000)
                    if p.put({"event_id": f"e{i}", "session_id": "s", "pad": pad})]
        dropped = p.stats()["dropped"]
        reason = "buffer_full" if policy == "drop" else "block_timeout"
        assert 300 < len(accepted) < 2_000
        assert dropped == {reason: 2_000 - len(accepted)}
        proxy.storm("slow", 0)
        assert p.flush(60)
        p.close()
        assert sorted(stream_ids(kinesis, stream_name)) == sorted(f"e{i}" for i in accepted)
    finally:
        proxy.stop()
