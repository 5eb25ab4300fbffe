"""Helpers for end-to-end tests: the real fleet (shardline.devstack.fleet) and warehouse/S3
checks."""
from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from shardline.layout import dead_letter_prefix
from shardline.devstack.fleet import wait_for

# Low-latency settings for tests: small batches, frequent checkpoints and loads.
FAST = {
    "SHARDLINE_CONSUMER_BATCH_MAX_AGE_S": "0.3",
    "SHARDLINE_CONSUMER_IDLE_SLEEP_S": "0.2",
    "SHARDLINE_CONSUMER_CHECKPOINT_INTERVAL_S": "1",
    "SHARDLINE_CONSUMER_REPORT_INTERVAL_S": "1",
    "SHARDLINE_CONSUMER_LEASE_TTL_S": "6",
    "SHARDLINE_CONSUMER_LEASE_RENEW_S": "2",
    "SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S": "10",
    "SHARDLINE_CONSUMER_PARENT_POLL_S": "0.5",
    "SHARDLINE_LOADER_MAX_INTERVAL_S": "1",
    "SHARDLINE_LOADER_POLL_S": "0.3",
    "SHARDLINE_LOADER_MIN_FILES": "100",
    "SHARDLINE_LOADER_LEASE_TTL_S": "4",
    "SHARDLINE_GEARMAN_JOB_TIMEOUT_S": "30",
    # each host's scrape target on a free port: tests run side by side on one machine
    "SHARDLINE_AGENT_METRICS_ADDRESS": "127.0.0.1:0",
}


def wait_active(kinesis: Any, stream: str, timeout: float = 10) -> None:
    """kinesalite flips a new stream to ACTIVE on its next tick, even with createStreamMs 0."""
    wait_for(lambda: kinesis.describe_stream_summary(StreamName=stream)
             ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE", timeout,
             f"stream {stream} ACTIVE", every=0.02)


def read_stream(kinesis: Any, stream: str) -> dict[tuple[str, str], bytes]:
    """Every record of every shard: (shard_id, sequence) -> data."""
    out = {}
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    for shard in shards:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=10000)
            for r in resp["Records"]:
                out[(shard["ShardId"], r["SequenceNumber"])] = r["Data"]
            if not resp["Records"] and resp.get("MillisBehindLatest", 0) == 0:
                break
            it = resp.get("NextShardIterator")
    return out


def dead_letters(s3: Any, bucket: str, prefix: str) -> list[dict]:
    lines = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=dead_letter_prefix(prefix)):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for line in gzip.decompress(body).decode().splitlines():
                lines.append(json.loads(line))
    return lines


def dead_letter_positions(s3: Any, bucket: str, prefix: str) -> dict[tuple[str, str], dict]:
    return {(d["shard_id"], d["sequence_number"]): d for d in dead_letters(s3, bucket, prefix)}


def decode_b64(entry: dict) -> bytes:
    return base64.b64decode(entry["data_b64"])


# -- metrics: the host scrape targets (docs/metrics.md) ----------------------------------------
# What every host target shows once events flow, and which of them must grow between scrapes.
HOST_METRICS = (
    "shardline_consumer_records_read_total", "shardline_consumer_millis_behind_latest",
    "shardline_consumer_iterator_age_seconds", "shardline_consumer_batches_in_flight",
    "shardline_consumer_checkpoint_age_seconds", "shardline_stage_job_seconds_count",
    "shardline_stage_records_staged_total", "shardline_stage_dead_letters_total",
    "shardline_loader_pending_files", "shardline_loader_pending_bytes",
    "shardline_loader_oldest_pending_age_seconds", "shardline_loader_quarantined_files",
)
LOAD_METRICS = ("shardline_loader_load_seconds_count", "shardline_loader_rows_loaded_total",
                "shardline_e2e_latency_seconds_count")
MOVING = ("shardline_consumer_records_read_total", "shardline_stage_records_staged_total",
          "shardline_loader_rows_loaded_total", "shardline_e2e_latency_seconds_count")


def free_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def scrape(address: str) -> dict[str, float]:
    """One scrape of a target in Prometheus text format: sample name -> sum over labels
    (the parser refuses anything that is not the text format)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def total(scrapes: list[dict[str, float]], name: str) -> float:
    return sum(s.get(name, 0.0) for s in scrapes)


def wait_moved(addresses: list[str], first: list[dict[str, float]], names: tuple[str, ...],
               timeout: float = 30.0) -> list[dict[str, float]]:
    """Scrape until every name's total over the targets is above its total in ``first``
    (loads come at the loader's cadence, so one fixed pause can fall between two); the
    scrapes. Fails naming what did not move."""
    latest: list[dict[str, float]] = []

    def moved() -> list[str]:
        return [n for n in names if total(latest, n) <= total(first, n)]

    def done() -> bool:
        latest[:] = [scrape(a) for a in addresses]
        return not moved()

    try:
        wait_for(done, timeout, "metrics moving")
    except TimeoutError:
        raise AssertionError(f"did not move in {timeout:.0f}s: "
                             + ", ".join(f"{n} {total(first, n)} -> {total(latest, n)}"
                                         for n in moved())) from None
    return latest


def scrape_when_complete(addresses: list[str], names: tuple[str, ...], timeout: float,
                         logs: Any = None) -> list[dict[str, float]]:
    """Scrape every target until, together, they show every name in ``names`` (a target
    still starting is retried); the scrapes."""
    import urllib.error

    found: list[dict[str, float]] = []

    def complete() -> bool:
        found.clear()
        for address in addresses:
            try:
                found.append(scrape(address))
            except (urllib.error.URLError, ConnectionError):
                return False
        return all(any(n in s for s in found) for n in names)

    try:
        wait_for(complete, timeout, f"metrics {', '.join(names)} at {', '.join(addresses)}")
    except TimeoutError as exc:
        missing = [n for n in names if not any(n in s for s in found)]
        raise AssertionError(f"{exc}; missing {missing}\n{logs() if logs else ''}") from None
    return list(found)
