"""The pipeline's metrics: pure parts (arrival samples, bulk histogram adds, reason labels), the
consumer / stage worker / loader pushing them, and one host target merging real processes
(prometheus_client multiprocess mode) over HTTP."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from datetime import timedelta, timezone

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from shardline import codec
from shardline.errors import ConfigError
from shardline.metrics import multiproc
from shardline.metrics.pipeline import (E2E_BUCKETS, ConsumerMetrics, observe_counts,
                                        reason_label)
from shardline.records.ledger import StagedFile, arrival_points, arrival_sample, \
    e2e_observations
from tests.contract.loader_kit import T0
from tests.unit.test_consumer_step import Rig as ConsumerRig
from tests.unit.test_loader_step import Rig as LoaderRig
from tests.unit.test_stage import enc, good_event, make_batch, make_job


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- pure parts -----------------------------------------------------------------------
def test_arrival_sample_is_equal_count_quantiles_delta_coded():
    arrivals = list(range(1_764_000_000_000, 1_764_000_000_000 + 800))  # 1 ms apart
    text = arrival_sample(arrivals)
    assert len(text) < 60
    points = arrival_points(text)
    assert points == [1_764_000_000_000 + 50 + 100 * i for i in range(8)]  # slice midpoints
    assert arrival_points(arrival_sample([5])) == [5]
    assert arrival_sample([]) is None
    assert arrival_points(None) == [] and arrival_points("x,1") == []


def test_e2e_observations_split_each_files_rows_over_its_points():
    def entry(rows: int, sample: str | None) -> StagedFile:
        return StagedFile(s3_key="k", target_table="t", stream="s", shard_id="sh",
                          first_sequence="1", first_sub_sequence=0, last_sequence="2",
                          last_sub_sequence=0, row_count=rows, byte_count=1, staged_at=T0,
                          arrival_sample=sample)

    obs = e2e_observations([entry(10, "1000,0,2000"), entry(0, "1000"), entry(5, None)],
                           queryable_ms=11_000)
    assert obs == [(10.0, 3), (10.0, 3), (8.0, 4)]
    assert sum(n for _, n in obs) == 10
    # half the load's copied rows were duplicates (a replay): only the inserted share counts
    assert e2e_observations([entry(10, "1000,0,2000")], 11_000, 0.5) == \
        [(10.0, 1), (10.0, 2), (8.0, 2)]
    assert e2e_observations([entry(10, "1000")], 11_000, 0.0) == []


def test_observe_counts_matches_observe_one_by_one():
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "h", buckets=E2E_BUCKETS, registry=reg_a)
    b = Histogram("h", "h", buckets=E2E_BUCKETS, registry=reg_b)
    values = [(0.2, 3), (1.0, 2), (4.9, 1), (7000.0, 4), (2.0, 0)]
    observe_counts(a, values)
    for v, n in values:
        for _ in range(n):
            b.observe(v)
    samples = lambda reg: sorted((s.name, tuple(sorted(s.labels.items())), s.value)  # noqa: E731
                                 for m in reg.collect() for s in m.samples
                                 if not s.name.endswith("_created"))
    assert samples(reg_a) == samples(reg_b)
    assert reg_a.get_sample_value("h_count") == 10


def test_dead_letter_reasons_become_few_labels():
    assert reason_label("not JSON: Expecting value: line 1") == "not JSON"
    assert reason_label("column occurred_at: naive datetime") == "column occurred_at"
    assert reason_label("arrival time 99999999999999 ms is out of range") == \
        "arrival time N ms is out of range"
    assert reason_label("") == "unknown"


# -- the processes push them ---------------------------------------------------------------
def test_consumer_pushes_counts_at_its_report_interval():
    rig = ConsumerRig(40, shard="shardId-metrics-1")
    labels = {"stream": "s", "shard": "shardId-metrics-1"}
    before = value("shardline_consumer_records_read_total", **labels)
    rig.consumer.start()
    rig.run(3)  # reads everything; the report interval (5 s) has not passed yet
    assert rig.consumer.records_read == 40
    assert value("shardline_consumer_records_read_total", **labels) == before
    rig.clock.advance(5)
    rig.run(1)
    assert value("shardline_consumer_records_read_total", **labels) == before + 40
    assert value("shardline_consumer_millis_behind_latest", **labels) == \
        rig.consumer.millis_behind
    assert value("shardline_consumer_batches_in_flight", **labels) == \
        rig.consumer.window.inflight_batches
    assert value("shardline_consumer_iterator_age_seconds", **labels) >= 0


def test_consumer_checkpoint_age_counts_only_while_staged_records_wait():
    rig = ConsumerRig(10, shard="shardId-metrics-2", **{"consumer.checkpoint_interval_s": "60",
                                                        "consumer.report_interval_s": "1"})
    rig.consumer.start()
    assert rig.consumer.checkpoint_age_s(rig.clock()) == 0.0
    rig.run(3)
    rig.clock.advance(10)
    assert rig.consumer.staged_cp != rig.consumer.committed
    assert rig.consumer.checkpoint_age_s(rig.clock()) >= 10


def test_consumer_metrics_push_adds_only_the_delta():
    m = ConsumerMetrics("s", "shardId-metrics-3")
    labels = {"stream": "s", "shard": "shardId-metrics-3"}
    for total in (5, 5, 12):
        m.push(records_read=total, millis_behind=None, iterator_age_s=1.5,
               inflight_batches=2, checkpoint_age_s=0)
    assert value("shardline_consumer_records_read_total", **labels) == 12
    assert value("shardline_consumer_millis_behind_latest", **labels) == 0  # never reported


def test_stage_job_counts_rows_dead_letters_and_latency_once_per_batch():
    labels = {"table": "page_views"}
    names = ["shardline_stage_records_staged_total", "shardline_stage_job_seconds_count"]
    before = {n: value(n, **labels) for n in names}
    dead_before = value("shardline_stage_dead_letters_total", table="page_views",
                        reason="not JSON")
    job = make_job()
    payload = codec.encode(make_batch([enc(good_event(i)) for i in range(5)] + [b"nope"]))
    job.run(payload)
    job.run(payload)  # a retry: latency again, rows and dead letters not again
    assert value(names[0], **labels) == before[names[0]] + 5
    assert value(names[1], **labels) == before[names[1]] + 2
    assert value("shardline_stage_dead_letters_total", table="page_views",
                 reason="not JSON") == dead_before + 1
    failed = value("shardline_stage_jobs_total", table="page_views", outcome="failed")
    with pytest.raises(codec.CodecError):
        job.run(b"garbage")
    assert value("shardline_stage_jobs_total", table="page_views",
                 outcome="failed") == failed + 1
    entry = next(iter(job.ledger.rows.values()))
    assert len(arrival_points(entry.arrival_sample)) == 6  # one point per record (< 8)


def test_loader_exports_pending_rows_duration_and_e2e_at_its_commit():
    labels = {"table": "page_views"}
    rig = LoaderRig(3)
    arrived = (T0 - timedelta(seconds=10)).replace(tzinfo=timezone.utc).timestamp()
    for e in rig.store._files.values():  # staged at T0 .. T0 + 2 s, arrived at T0 - 10 s
        e.arrival_sample = str(int(arrived * 1000))
    rig.clock.advance(5)
    names = ["shardline_loader_rows_loaded_total", "shardline_loader_load_seconds_count",
             "shardline_e2e_latency_seconds_count", "shardline_e2e_latency_seconds_sum"]
    before = {n: value(n, **labels) for n in names}
    assert rig.loader.step().state == "not_due"
    assert value("shardline_loader_pending_files", **labels) == 3
    assert value("shardline_loader_active", **labels) == 1
    assert value("shardline_loader_oldest_pending_age_seconds", **labels) >= 5
    rig.clock.advance(25)  # the oldest is 30 s old: max_interval_s
    assert rig.loader.step().state == "loaded"
    assert value(names[0], **labels) == before[names[0]] + 6
    assert value(names[1], **labels) == before[names[1]] + 1
    assert value(names[2], **labels) == before[names[2]] + 6
    e2e = value(names[3], **labels) - before[names[3]]
    assert e2e == pytest.approx(6 * 40, abs=0.01)  # committed at T0 + 30 s
    rig.loader.step()
    assert value("shardline_loader_pending_files", **labels) == 0


# -- one host target over real processes -----------------------------------------------------
CHILD = textwrap.dedent("""
    import sys, time
    from shardline.metrics.pipeline import ConsumerMetrics
    m = ConsumerMetrics("s", sys.argv[1])
    m.push(records_read=int(sys.argv[2]), millis_behind=7, iterator_age_s=1,
           inflight_batches=1, checkpoint_age_s=0)
    print("ready", flush=True)
    if sys.argv[3] == "stay":
        sys.stdin.read()
""")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_host_target_merges_processes_and_sweeps_dead_ones(tmp_path):
    mdir = tmp_path / "metrics"
    env = {**os.environ, multiproc.ENV: str(mdir)}  # the child creates the directory
    earlier = subprocess.run([sys.executable, "-c", CHILD, "shardId-a", "5", "exit"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert earlier.returncode == 0, earlier.stderr
    live = subprocess.Popen([sys.executable, "-c", CHILD, "shardId-b", "7", "stay"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    read = "shardline_consumer_records_read_total"
    behind = "shardline_consumer_millis_behind_latest"
    a, b = (("shard", "shardId-a"), ("stream", "s")), (("shard", "shardId-b"), ("stream", "s"))
    server = None
    try:
        assert live.stdout.readline().strip() == "ready"
        # start: what a process that is gone left behind (a previous boot) is wiped
        server = multiproc.serve("127.0.0.1:0", str(mdir))
        url = f"http://{multiproc.bound_address(server)}/metrics"
        got = scrape(url)
        assert (read, a) not in got and (behind, a) not in got
        assert got[(read, b)] == 7 and got[(behind, b)] == 7
        printed = subprocess.run([sys.executable, "-m", "shardline.cli", "metrics", "--dir",
                                  str(mdir)], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert printed.returncode == 0, printed.stderr
        assert 'shardline_consumer_records_read_total{shard="shardId-b",stream="s"} 7.0' \
            in printed.stdout
        live.stdin.close()
        live.wait(10)
        # a process that died while the target runs: mark_process_dead at the next scrape
        # drops its gauges; its counters stay (totals never go down)
        got = scrape(url)
        assert got[(read, b)] == 7 and (behind, b) not in got
        assert list(mdir.glob(f"counter_{live.pid}.db"))
        assert not list(mdir.glob(f"gauge_livemax_{live.pid}.db"))
    finally:
        multiproc.stop(server)
        if live.poll() is None:
            live.kill()
            live.wait(10)


def test_metrics_command_needs_a_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != multiproc.ENV}
    proc = subprocess.run([sys.executable, "-m", "shardline.cli", "metrics", "--serve",
                           "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78 and "PROMETHEUS_MULTIPROC_DIR" in proc.stderr


def test_address_parsing():
    assert multiproc.parse_address("127.0.0.1:9641") == ("127.0.0.1", 9641)
    assert multiproc.parse_address("[::1]:0") == ("::1", 0)
    with pytest.raises(ConfigError):
        multiproc.parse_address("localhost")
