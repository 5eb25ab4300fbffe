"""Producer against an in-memory Kinesis: batching, retries, KPL per shard, full-buffer
policies, spool hand-over, close, metrics and fork safety."""
from __future__ import annotations

import collections
import json
import os
import time

import pytest
from prometheus_client import REGISTRY

from shardline.errors import ConfigError
from shardline.producer.producer import Producer
from tests.fakes import FakeKinesis
from tests.producer_kit import user_records


def make(fake: FakeKinesis, stream: str = "s", **options) -> Producer:
    options.setdefault("linger_ms", 5)
    return Producer(stream, client=fake, **options)


def events(n: int, sessions: int = 50, start: int = 0) -> list[dict]:
    return [{"event_id": f"e{start + i}", "session_id": f"s{(start + i) % sessions}",
             "url": f"https://example.com/{start + i}"} for i in range(n)]


def ids(stored) -> list[str]:
    return [json.loads(data)["event_id"] for _, data in user_records(stored)]


def test_every_event_is_sent_once_in_batches_within_the_limits_and_in_key_order():
    fake = FakeKinesis(shards=4)
    p = make(fake, lanes=3, stream="order")
    evs = events(5_000, sessions=97)
    assert all(p.put(e) for e in evs)
    assert p.flush(10)
    p.close()
    got = ids(fake.stored())
    assert sorted(got) == sorted(e["event_id"] for e in evs)
    per_key: dict[str, list[str]] = collections.defaultdict(list)
    for key, data in fake.stored():
        per_key[key].append(json.loads(data)["event_id"])
        assert key == json.loads(data)["session_id"]  # the session is the partition key
    for key, seen in per_key.items():
        assert seen == [e["event_id"] for e in evs if e["session_id"] == key]
    assert p.stats()["sent"] == 5_000 and p.stats()["dropped"] == {}


def test_only_failed_entries_are_retried():
    fake = FakeKinesis(shards=4, entry_errors=lambda call, i, e:
                       "ProvisionedThroughputExceededException"
                       if call == 1 and i % 3 == 0 else None)
    p = make(fake, lanes=1, backoff_base_ms=1, stream="retry")
    for e in events(300):
        p.put(e)
    assert p.flush(10)
    assert sorted(ids(fake.stored())) == sorted(f"e{i}" for i in range(300))
    batches = fake.put_batches()
    assert [r["Data"] for r in batches[1]] == [r["Data"] for r in batches[0][::3]]
    assert p.stats()["retried"] == len(range(0, len(batches[0]), 3))
    p.close()


def test_kpl_aggregates_hold_one_shards_records_and_decode_to_the_events():
    fake = FakeKinesis(shards=4)
    p = make(fake, aggregate=True, stream="agg", shards=None)
    p.put(events(1)[0])
    p.flush(5)
    time.sleep(0.2)  # the shard map loads in the background; plain records until then
    evs = events(3_000, sessions=200, start=1)
    for e in evs:
        p.put(e)
    big = {"event_id": "big", "session_id": "s1", "pad": "x" * 1_000_000}  # too big to wrap
    evs.append(big)
    assert p.put(big)
    assert p.flush(10)
    p.close()
    assert any(json.loads(d).get("event_id") == "big" for _, d in fake.stored()
               if not d.startswith(b"\xf3\x89\x9a\xc2"))  # sent plain
    aggregated = [(k, d) for k, d in fake.stored() if d.startswith(b"\xf3\x89\x9a\xc2")]
    assert aggregated and len(fake.stored()) < 100
    for key, data in aggregated:
        shard = fake.shard_for(key)
        assert {fake.shard_for(k) for k, _ in user_records([(key, data)])} == {shard}
    assert sorted(ids(fake.stored())) == sorted(["e0"] + [e["event_id"] for e in evs])


def test_full_buffer_drop_policy_counts_and_keeps_what_it_accepted():
    fake = FakeKinesis(shards=4)
    fake.put_gate.clear()  # Kinesis stalls every PutRecords call
    p = make(fake, max_buffer_bytes=1024 * 1024, on_full="drop", stream="drop")
    big = [{"event_id": f"e{i}", "session_id": "x", "pad": "p" * 1000} for i in range(3_000)]
    accepted = [e["event_id"] for e in big if p.put(e)]
    assert 0 < len(accepted) < 3_000
    assert p.stats()["dropped"] == {"buffer_full": 3_000 - len(accepted)}
    fake.put_gate.set()
    assert p.flush(10)
    assert sorted(ids(fake.stored())) == sorted(accepted)
    p.close()
    time.sleep(0.1)
    assert REGISTRY.get_sample_value("shardline_producer_dropped_total",
                                     {"stream": "drop", "reason": "buffer_full"}) == \
        3_000 - len(accepted)


def test_full_buffer_block_policy_waits_up_to_the_timeout_then_drops():
    fake = FakeKinesis(shards=4)
    fake.put_gate.clear()
    p = make(fake, max_buffer_bytes=1024 * 1024, on_full="block", block_timeout_ms=80,
             stream="block")
    pad = "p" * 10_000
    n = 0
    while p.put({"event_id": str(n), "session_id": "x", "pad": pad}):
        n += 1
    t0 = time.monotonic()
    assert not p.put({"event_id": "late", "session_id": "x", "pad": pad})
    assert time.monotonic() - t0 >= 0.07
    assert p.stats()["dropped"] == {"block_timeout": 2}
    fake.put_gate.set()
    assert p.flush(10) and len(ids(fake.stored())) == n
    p.close()


def test_full_buffer_spill_policy_spools_instead_of_dropping(tmp_path):
    fake = FakeKinesis(shards=4)
    fake.put_gate.clear()
    # Only the full buffer can trigger the spool here; put() may wait for the disk (this
    # loop puts ~100 MB/s, faster than a loaded machine's background thread writes).
    p = make(fake, max_buffer_bytes=1024 * 1024, spool_dir=str(tmp_path), stream="spill",
             spool_after_ms=10_000, block_timeout_ms=2_000)
    evs = [{"event_id": f"e{i}", "session_id": f"s{i % 9}", "pad": "p" * 1000}
           for i in range(5_000)]
    assert all(p.put(e) for e in evs)
    st = p.stats()
    assert st["dropped"] == {} and st["spooled"] > 0 and st["mode"] == "spool"
    fake.put_gate.set()
    assert p.flush(20)
    got = ids(fake.stored())
    assert set(got) == {e["event_id"] for e in evs}
    assert len(got) - len(set(got)) <= 2 * 2 * 500  # abandoned calls may land as well
    p.close()
    assert not list(tmp_path.glob("slot-*/*.seg"))


def test_kinesis_down_then_back_sends_the_spool_oldest_first(tmp_path):
    fake = FakeKinesis(shards=4)
    p = make(fake, spool_dir=str(tmp_path), spool_after_ms=50, sync_interval_ms=0,
             backoff_max_ms=20, lanes=1, stream="down")
    fake.put_down = True
    for e in events(400, sessions=1):
        p.put(e)
    time.sleep(0.5)
    st = p.stats()
    assert st["mode"] == "spool" and st["spooled"] == 400
    assert p.durable_seq == p.accepted_seq  # all on disk and fsynced
    assert p.acked_seq < p.accepted_seq
    fake.put_down = False
    assert p.flush(10)
    assert ids(fake.stored()) == [f"e{i}" for i in range(400)]  # one session: in order
    assert p.stats()["mode"] == "direct"
    p.close()


def test_close_while_kinesis_is_down_spools_the_rest_for_the_next_start(tmp_path):
    fake = FakeKinesis(shards=4)
    fake.put_down = True
    p = make(fake, spool_dir=str(tmp_path), spool_after_ms=60_000, backoff_max_ms=20,
             stream="close")
    for e in events(100):
        p.put(e)
    assert not p.close(timeout=0.2)
    assert p.stats()["dropped"] == {}
    fake.put_down = False
    again = make(fake, spool_dir=str(tmp_path), stream="close")
    again.put(events(1, start=100)[0])  # the first put starts the thread, which reads the spool
    assert again.flush(10)
    assert sorted(ids(fake.stored())) == sorted(f"e{i}" for i in range(101))
    again.close()


def test_close_without_a_spool_counts_what_it_loses():
    fake = FakeKinesis(shards=4)
    fake.put_down = True
    p = make(fake, backoff_max_ms=20, stream="lost")
    for e in events(10):
        p.put(e)
    assert not p.close(timeout=0.2)
    assert p.stats()["dropped"] == {"close": 10}
    assert not p.put(events(1)[0]) and p.stats()["dropped"]["closed"] == 1


def test_counters_and_put_latency_are_exported():
    fake = FakeKinesis(shards=4)
    p = make(fake, stream="metrics")
    for e in events(1_000):
        p.put(e)
    assert p.flush(10)
    time.sleep(0.1)  # one more background cycle pushes the last counts
    value = lambda name: REGISTRY.get_sample_value(name, {"stream": "metrics"})  # noqa: E731
    assert value("shardline_producer_put_total") == 1_000
    assert value("shardline_producer_sent_total") == 1_000
    assert value("shardline_producer_put_latency_seconds_count") == 1_000
    assert 0 < value("shardline_producer_put_latency_seconds_sum") < 1.0
    p.close()


def test_bad_options_name_the_key(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="producer.spool_dir"):
        Producer("s", client=FakeKinesis(shards=4), spool_dir=str(blocker / "spool"))
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    from shardline.settings import load

    with pytest.raises(ConfigError, match="aws.region"):
        Producer(settings=load(None, env={"SHARDLINE_KINESIS_STREAM": "s"}))
    with pytest.raises(ConfigError, match="producer.on_full"):
        Producer("s", client=FakeKinesis(shards=4), on_full="spill")  # spill needs a spool
    with pytest.raises(ConfigError, match="producer.linger_ms"):
        Producer("s", client=FakeKinesis(shards=4), linger_ms=0)
    with pytest.raises(TypeError):
        make(FakeKinesis(shards=4)).put("not a dict or bytes")  # type: ignore[arg-type]


def test_a_forked_child_sends_its_own_events_and_not_its_parents():
    fake = FakeKinesis(shards=4)
    p = make(fake, linger_ms=60_000, stream="fork")  # the parent's events wait in memory
    for e in events(50):
        p.put(e)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a gunicorn worker, say
        try:
            os.close(read)
            ok = all(p.put(e) for e in events(30, start=1000)) and p.flush(10)
            report = {"ok": ok, "ids": ids(fake.stored()), "thread": p._thread.is_alive()}
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    child = json.loads(b"".join(chunks))
    assert child["ok"] and child["thread"]
    assert sorted(child["ids"]) == sorted(f"e{i}" for i in range(1000, 1030))
    assert p.flush(10)
    assert sorted(ids(fake.stored())) == sorted(f"e{i}" for i in range(50))
    p.close()


def test_put_encodes_as_json_did_and_a_dict_it_cannot_encode_raises_and_counts_nothing():
    import datetime as dt

    fake = FakeKinesis(shards=4)
    p = make(fake, stream="encode")
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    same = [{"session_id": "s", "url": "https://example.com/ü?q=日本", "n": [1, 2.5, None, True],
             "nested": {"a": {"b": "\u2028"}}},
            {"session_id": "s", 1: "int key", "big": 2 ** 70}]  # only json takes these
    for e in same:
        assert p.put(e)
    assert p.put({"session_id": "s", "at": dt.datetime(2026, 12, 2, 6, 30, tzinfo=dt.timezone.utc),
                  "nan": float("nan")})
    for bad in ({"session_id": "s", "tags": {"a", "b"}}, {"session_id": "s", "t": "\ud800"}):
        with pytest.raises(TypeError, match="cannot be JSON-encoded"):
            p.put(bad)
    assert p.flush(10)
    assert [d for _, d in fake.stored()] == [compact(e).encode() for e in same] + \
        [b'{"session_id":"s","at":"2026-12-02T06:30:00+00:00","nan":null}']
    assert p.stats()["put"] == 3 and p.stats()["dropped"] == {}
    p.close()


def _in_child(fn) -> dict:
    """Run ``fn()`` in a forked child; its JSON-able result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.write(write, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def test_prepare_makes_the_client_once_and_an_unused_one_serves_forked_workers():
    fake = FakeKinesis(shards=4)
    made: list[int] = []

    def factory() -> FakeKinesis:
        made.append(os.getpid())
        return fake

    p = Producer("prep", client_factory=factory, linger_ms=5)
    assert p.prepare() is p and made == [os.getpid()]  # made now, in the "master"

    def worker() -> dict:
        ok = all(p.put(e) for e in events(20)) and p.flush(10)
        return {"ok": ok, "made": len(made), "ids": ids(fake.stored())}

    child = _in_child(worker)
    # the worker sent through the master's client, made no client of its own
    assert child == {"ok": True, "made": 1, "ids": child["ids"]}
    assert sorted(child["ids"]) == sorted(f"e{i}" for i in range(20))


def test_a_prepared_client_the_parent_has_used_is_not_inherited():
    fake = FakeKinesis(shards=4)
    p = Producer("prep2", client_factory=lambda: fake, linger_ms=5).prepare()
    assert p.put(events(1)[0]) and p.flush(10)  # the parent's thread sent through it

    child = _in_child(lambda: {"client": p._client is not None, "prepared": p._prepared})
    assert child == {"client": False, "prepared": False}
    p.close()
