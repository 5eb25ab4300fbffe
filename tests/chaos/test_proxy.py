"""The chaos campaign's fault injectors against the real stack: ``KinesisFaultProxy`` in
front of kinesalite and ``TcpRelay`` in front of moto S3."""
from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from shardline.devstack.aws import boto_client
from shardline.devstack.relay import TcpRelay
from tests.chaos.proxy import FaultRates, KinesisFaultProxy
from tests.pipeline import wait_active

pytestmark = [pytest.mark.integration]

# Not {"max_attempts": 1}: botocore reads max_attempts as *retries* (total = max_attempts + 1).
NO_RETRY = {"total_max_attempts": 1, "mode": "standard"}
CALM = FaultRates(get_records=0, other=0)


@pytest.fixture
def make_proxy(stack) -> Iterator[Callable[..., KinesisFaultProxy]]:
    """Start proxies in front of the stack's kinesalite; all stopped at teardown."""
    started: list[KinesisFaultProxy] = []

    def make(seed: int = 0, rates: FaultRates | None = None,
             upstream: str | None = None) -> KinesisFaultProxy:
        proxy = KinesisFaultProxy(upstream or stack.kinesis_endpoint_url, random.Random(seed),
                                  rates)
        started.append(proxy.start())
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


def via(proxy: KinesisFaultProxy) -> Any:
    """A Kinesis client through the proxy; botocore does not retry."""
    return boto_client("kinesis", proxy.url, config=Config(
        retries=NO_RETRY, connect_timeout=2, read_timeout=30))


@pytest.fixture
def stream(kinesis, stream_name) -> str:
    """A 1-shard stream with 5 small records, created directly on kinesalite."""
    kinesis.create_stream(StreamName=stream_name, ShardCount=1)
    wait_active(kinesis, stream_name)
    kinesis.put_records(StreamName=stream_name, Records=[
        {"Data": f"r{i}".encode(), "PartitionKey": str(i)} for i in range(5)])
    return stream_name


def shard_iterator(client: Any, stream: str) -> str:
    return client.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000",
                                     ShardIteratorType="TRIM_HORIZON")["ShardIterator"]


def error_code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


# ---------------------------------------------------------------------------
# KinesisFaultProxy
# ---------------------------------------------------------------------------

def test_pass_through_relays_large_get_records_exactly(stack, kinesis, stream_name,
                                                       make_proxy):
    kinesis.create_stream(StreamName=stream_name, ShardCount=1)
    wait_active(kinesis, stream_name)
    # 10 records of ~950 KB: one GetRecords answer of ~12.7 MB once base64-encoded.
    data = [os.urandom(950_000) for _ in range(10)]
    for chunk in (data[:5], data[5:]):
        kinesis.put_records(StreamName=stream_name, Records=[
            {"Data": d, "PartitionKey": "k"} for d in chunk])
    proxy = make_proxy(rates=CALM)
    client = via(proxy)
    it = shard_iterator(client, stream_name)
    got: list[bytes] = []
    while it and len(got) < len(data):
        page = client.get_records(ShardIterator=it, Limit=100)
        got += [r["Data"] for r in page["Records"]]
        it = page.get("NextShardIterator")
    assert got == data
    assert proxy.injected() == {}
    assert proxy.calls()["GetShardIterator"] == 1


def test_many_threads_keep_alive(stack, stream, make_proxy):
    proxy = make_proxy(rates=CALM)
    client = via(proxy)  # botocore clients are thread-safe; 10-connection pool
    it = shard_iterator(client, stream)
    results: list[list[bytes]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(30):
                results.append([r["Data"] for r in
                                client.get_records(ShardIterator=it)["Records"]])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert results == [[f"r{i}".encode() for i in range(5)]] * 180
    assert proxy.calls()["GetRecords"] == 180
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("kind, code", [
    ("throttled", "ProvisionedThroughputExceededException"),
    ("expired", "ExpiredIteratorException"),
    ("500", "InternalFailure"),
])
def test_error_storms(stack, kinesis, stream, make_proxy, kind, code):
    proxy = make_proxy(rates=CALM)
    client = via(proxy)
    it = shard_iterator(kinesis, stream)
    proxy.storm(kind, 30)
    for _ in range(3):
        with pytest.raises(ClientError) as exc:
            client.get_records(ShardIterator=it)
        assert error_code(exc) == code
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == (
            500 if kind == "500" else 400)
        assert exc.value.response["ResponseMetadata"]["RequestId"]
    if kind == "expired":  # GetRecords only: other reads pass through
        assert shard_iterator(client, stream)
        assert client.list_shards(StreamName=stream)["Shards"]
        faulted = 3
    else:
        with pytest.raises(ClientError) as exc:
            shard_iterator(client, stream)
        assert error_code(exc) == code
        faulted = 4
    # Writes are never faulted, even in a storm.
    client.put_record(StreamName=stream, Data=b"w", PartitionKey="w")
    assert proxy.injected() == {kind: faulted}
    proxy.storm(kind, 0)
    assert len(client.get_records(ShardIterator=it)["Records"]) == 6


def test_throttled_message_names_shard_and_stream(stack, stream, make_proxy):
    proxy = make_proxy(rates=CALM)
    proxy.storm("throttled", 30)
    with pytest.raises(ClientError) as exc:
        shard_iterator(via(proxy), stream)
    msg = exc.value.response["Error"]["Message"]
    assert "shardId-000000000000" in msg and stream in msg and "(injected)" in msg


def test_slow_storm_delays_then_answers(stack, kinesis, stream, make_proxy):
    proxy = make_proxy(rates=FaultRates(get_records=0, other=0, slow_s=(0.4, 0.5)))
    client = via(proxy)
    it = shard_iterator(kinesis, stream)
    t0 = time.monotonic()
    client.get_records(ShardIterator=it)
    fast = time.monotonic() - t0
    proxy.storm("slow", 30)
    for _ in range(3):
        t0 = time.monotonic()
        assert len(client.get_records(ShardIterator=it)["Records"]) == 5
        assert 0.4 <= time.monotonic() - t0 < 0.5 + fast + 1.0
    assert proxy.injected() == {"slow": 3}


def test_drop_closes_without_answer_and_half_the_drops_reach_kinesalite(stack, kinesis, stream,
                                                                        make_proxy):
    # Chain two proxies: the inner one counts what really got past the dropping one.
    inner = make_proxy(rates=CALM)
    outer = make_proxy(seed=3, rates=CALM, upstream=inner.url)
    client = via(outer)
    it = shard_iterator(kinesis, stream)
    outer.storm("drop", 30)
    for _ in range(20):
        # urllib3 sees EOF instead of a status line (http.client.RemoteDisconnected,
        # wrapped in urllib3 ProtocolError); botocore maps that to ConnectionClosedError.
        with pytest.raises(ConnectionClosedError):
            client.get_records(ShardIterator=it)
    assert outer.injected() == {"drop": 20}
    drops = outer.drops()
    assert drops["before"] + drops["after"] == 20 and drops["before"] and drops["after"]
    assert inner.calls() == {"GetRecords": drops["after"]}
    outer.enabled = False  # storms are ignored while disabled
    assert len(client.get_records(ShardIterator=it)["Records"]) == 5


def outcome(client: Any, it: str) -> str:
    """The fault kind a GetRecords call got, as seen by the client."""
    try:
        client.get_records(ShardIterator=it)
    except ConnectionClosedError:
        return "drop"
    except ClientError as e:
        return {"ProvisionedThroughputExceededException": "throttled",
                "ExpiredIteratorException": "expired",
                "InternalFailure": "500"}[e.response["Error"]["Code"]]
    return "slow"


def test_seed_gives_reproducible_fault_sequence(stack, kinesis, stream, make_proxy):
    rates = FaultRates(get_records=1.0, other=1.0, slow_s=(0.01, 0.02))
    it = shard_iterator(kinesis, stream)
    runs = []
    for seed in (42, 42, 43):
        proxy = make_proxy(seed=seed, rates=rates)
        client = via(proxy)
        seq = [outcome(client, it) for _ in range(40)]
        assert proxy.injected() == {k: seq.count(k) for k in set(seq)}
        runs.append(seq)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert set(runs[0]) == {"throttled", "expired", "500", "slow", "drop"}


def test_rates_respect_operation_classes(stack, kinesis, stream, make_proxy):
    # GetRecords always faulted, other reads never, with "expired" never on other reads.
    proxy = make_proxy(seed=1, rates=FaultRates(get_records=1.0, other=0.0,
                                                slow_s=(0.01, 0.02)))
    client = via(proxy)
    for _ in range(5):
        assert shard_iterator(client, stream)
    it = shard_iterator(kinesis, stream)
    kinds = [outcome(client, it) for _ in range(10)]
    assert sum(proxy.injected().values()) == 10 == len(kinds)
    other = make_proxy(seed=1, rates=FaultRates(get_records=0.0, other=1.0,
                                                slow_s=(0.01, 0.02)))
    client = via(other)
    for _ in range(30):
        try:
            client.list_shards(StreamName=stream)
        except (ClientError, ConnectionClosedError):
            pass
    assert sum(other.injected().values()) == 30
    assert "expired" not in other.injected()
    assert len(client.get_records(ShardIterator=it)["Records"]) == 5


def test_storm_rejects_unknown_kind(stack, make_proxy):
    with pytest.raises(ValueError):
        make_proxy().storm("meteor", 1)


# ---------------------------------------------------------------------------
# TcpRelay
# ---------------------------------------------------------------------------

@pytest.fixture
def gate(stack) -> Iterator[TcpRelay]:
    port = int(stack.s3_endpoint_url.rsplit(":", 1)[1])
    g = TcpRelay(("127.0.0.1", port)).start()
    yield g
    g.stop()


def s3_via(gate: TcpRelay) -> Any:
    return boto_client("s3", gate.url, config=Config(
        retries=NO_RETRY, connect_timeout=1, read_timeout=2))


def test_gate_cut_and_restore(stack, gate, s3_prefix):
    s3 = s3_via(gate)
    key = f"{s3_prefix}/before-cut"
    body = os.urandom(3_000_000)
    s3.put_object(Bucket=stack.bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read() == body

    gate.cut()
    assert gate.outages == 1
    for call in (lambda: s3.get_object(Bucket=stack.bucket, Key=key),
                 lambda: s3.put_object(Bucket=stack.bucket, Key=f"{s3_prefix}/x", Body=b"x")):
        t0 = time.monotonic()
        # The gate accepts, then resets. Mostly (~96%) the RST lands after connect()
        # returned: urllib3 ProtocolError -> ConnectionClosedError. Sometimes it lands
        # while connect() still waits: NewConnectionError -> EndpointConnectionError.
        with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
            call()
        assert time.monotonic() - t0 < 1.0

    gate.restore()
    assert s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read() == body
    s3.put_object(Bucket=stack.bucket, Key=f"{s3_prefix}/after", Body=b"after")
    keys = [o["Key"] for o in
            s3.list_objects_v2(Bucket=stack.bucket, Prefix=s3_prefix)["Contents"]]
    assert keys == [f"{s3_prefix}/after", key]
    assert gate.outages == 1


def test_gate_cut_resets_open_connections(stack, gate):
    sock = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(12).startswith(b"HTTP/1.1")  # relayed to moto and back
    t0 = time.monotonic()
    gate.cut()
    with pytest.raises(ConnectionResetError):
        while sock.recv(65536):
            pass
    assert time.monotonic() - t0 < 1.0
    sock.close()


def test_gate_half_close_and_stop_leaves_no_threads(stack, s3_prefix):
    port = int(stack.s3_endpoint_url.rsplit(":", 1)[1])
    gate = TcpRelay(("127.0.0.1", port)).start()
    name = f"tcp-relay-{gate.port}"  # TcpRelay is shardline.devstack.relay.TcpRelay
    # Half-close: the request, then FIN; the answer still comes back in full.
    sock = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
    sock.sendall(f"GET /{stack.bucket}?list-type=2 HTTP/1.1\r\nHost: x\r\n"
                 "Connection: close\r\n\r\n".encode())
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b"ListBucketResult" in answer
    sock.close()
    idle = socket.create_connection(("127.0.0.1", gate.port), timeout=5)  # left open
    s3_via(gate).put_object(Bucket=stack.bucket, Key=f"{s3_prefix}/{uuid.uuid4()}",
                                   Body=b"x")
    assert any(t.name.startswith(name) for t in threading.enumerate())
    gate.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith(name)]
    idle.close()
