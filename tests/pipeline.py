"""Helpers for end-to-end tests: run the real fleet under supervisord and check the warehouse.

The fleet is what production runs: `shardline supervisor-config` output, started
by a real supervisord, talking to the real local stack.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BIN = Path(sys.executable).parent
SHARDLINE = str(BIN / "shardline")

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
    "SHARDLINE_GEARMAN_JOB_TIMEOUT_S": "30",
}


def shardline(*args: str, env: dict[str, str], check: bool = True,
              timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([SHARDLINE, *args], env=env, text=True, capture_output=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"shardline {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             every: float = 0.5) -> Any:
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Fleet:
    """A supervisord running one consumer per shard, N stage workers and the loader."""

    conf_dir: Path
    env: dict[str, str]
    stream: str
    workers: int = 2
    started: bool = field(default=False, init=False)

    @property
    def conf(self) -> Path:
        return self.conf_dir / "shardline.conf"

    def configure(self) -> None:
        shardline("supervisor-config", "--stream", self.stream, "--workers", str(self.workers),
                  "--out", str(self.conf_dir), env=self.env)

    def start(self) -> None:
        self.configure()
        subprocess.run([str(BIN / "supervisord"), "-c", str(self.conf)], env=self.env,
                       check=True, capture_output=True)
        self.started = True

    def ctl(self, *args: str) -> str:
        proc = subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
                              env=self.env, text=True, capture_output=True, timeout=120)
        return proc.stdout

    def status(self) -> dict[str, tuple[str, int | None]]:
        """program name -> (state, pid)."""
        out = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            pid = None
            if "pid" in parts:
                pid = int(parts[parts.index("pid") + 1].rstrip(","))
            out[parts[0]] = (parts[1], pid)
        return out

    def kill(self, name_prefix: str, sig: int = signal.SIGKILL) -> list[int]:
        killed = []
        for name, (state, pid) in self.status().items():
            if name.split(":")[-1].startswith(name_prefix) and state == "RUNNING" and pid:
                os.kill(pid, sig)
                killed.append(pid)
        return killed

    def stop(self) -> None:
        if not self.started:
            return
        pidfile = self.conf_dir / "supervisord.pid"
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        self.ctl("shutdown")
        if pid:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
        self.started = False

    def logs(self) -> str:
        """The tail of every program log, for assertion messages."""
        chunks = []
        for path in sorted((self.conf_dir / "logs").glob("*.log")):
            chunks.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-1500:])
        return "\n".join(chunks)


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
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/dead-letter/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for line in gzip.decompress(body).decode().splitlines():
                lines.append(json.loads(line))
    return lines


def dead_letter_positions(s3: Any, bucket: str, prefix: str) -> dict[tuple[str, str], dict]:
    return {(d["shard_id"], d["sequence_number"]): d for d in dead_letters(s3, bucket, prefix)}


def decode_b64(entry: dict) -> bytes:
    return base64.b64decode(entry["data_b64"])
