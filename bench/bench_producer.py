"""The producer a web front end embeds: put() latency, events/s, and a real web server.

Everything against a local stack (kinesalite, and for the web part the whole fleet),
with ``tests.producer_kit.PutFaultProxy`` (in a process of its own) in front of kinesalite to
stall every call for 2 s. In the same run, as the baseline: the blocking ``put_events`` called
once per request (what a handler that calls Kinesis itself does).

1. ``put()`` latency p50/p99/p99.9 (µs), at ``--rate`` puts/s from one thread (a busy
   front-end process), Kinesis healthy and stalled; the baseline's per-call latency.
2. Events/s from one process putting as fast as it can until ``flush()`` returns,
   without and with KPL aggregation; aggregated also against ``bench/kinesis_sink.py``
   (a local endpoint that takes every PutRecords at once, in a process of its own), so
   the producer's own ceiling shows beside kinesalite's.
3. examples/pageview_app.py under gunicorn (4 workers), a load generator on 127.0.0.1,
   Kinesis healthy then stalled: request latency p50/p99, and every page view in the
   warehouse exactly once (the fleet loads it). Beside the healthy phase, in alternating
   chunks, the same app with a producer that does nothing (tests/noop_pageview_app.py):
   what the producer adds to a request's p99.

    .venv/bin/python bench/bench_producer.py [--repeat 3] [--rate 2000] [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardline import devstack  # noqa: E402
from shardline.kinesis import kinesis_client  # noqa: E402
from shardline.devstack.fleet import Fleet, shardline, wait_for, warehouse_query  # noqa: E402
from shardline.sample import events  # noqa: E402
from shardline.producer.producer import Producer  # noqa: E402
from shardline.producer.put import put_events  # noqa: E402
from shardline.settings import load  # noqa: E402
from tests.pipeline import FAST  # noqa: E402
from tests.producer_kit import (NOOP_APP, Gunicorn, ProxyProcess, child_env,  # noqa: E402
                                paired_load, percentile, run_load)

RESULTS = ROOT / "bench" / "results"


def sample_events(n: int) -> list[dict]:
    gen = events.Generator(None, 0.0, 1)
    return [gen.event(i)[0] for i in range(n)]


ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _timed(fn, evs: list[dict], n: int, rate: float) -> list[float]:
    """Microseconds per call of fn(event); ``rate`` calls per second (0: back to back)."""
    lat = []
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for i in range(n):
        e = evs[i % len(evs)]
        a = clock()
        fn(e)
        lat.append((clock() - a) / 1000)
        if rate:
            delay = t0 + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    return lat


def _pct(us: list[float]) -> dict:
    return {"p50_us": percentile(us, 50), "p99_us": percentile(us, 99),
            "p999_us": percentile(us, 99.9)}


def put_latency(settings, evs: list[dict], rate: float, seconds: float, spool: str) -> dict:
    """put() latencies: paced at ``rate`` per second (a busy front end) and back to back;
    and, paced the same way, JSON-encoding the event alone (the machine's floor: a
    CPU that slept between calls runs the first microseconds of work slowly)."""
    p = Producer(settings=settings, spool_dir=spool, metrics=True)
    p.put(evs[0])  # starts the thread and the client outside the measurement
    time.sleep(0.5)
    paced = _timed(p.put, evs, int(rate * seconds), rate)
    tight = _timed(p.put, evs, 20_000, 0)
    floor = _timed(lambda e: ENCODE(e).encode(), evs, int(rate * seconds), rate)
    stats = p.stats()
    p.close(timeout=0)
    return {"paced": _pct(paced), "tight": _pct(tight), "json_paced": _pct(floor),
            "puts": len(paced) + len(tight), "spooled": stats["spooled"],
            "dropped": sum(stats["dropped"].values())}


def baseline_latency(settings, evs: list[dict], calls: int) -> dict:
    """The blocking alternative: one put_events call per request, one client."""
    client = kinesis_client(settings)
    lat = []
    for e in evs[:calls]:
        data = json.dumps(e, separators=(",", ":")).encode()
        a = time.perf_counter_ns()
        put_events(client, settings.kinesis.stream, [(e["session_id"], data)], threaded=False)
        lat.append((time.perf_counter_ns() - a) / 1000)
    return {"p50_us": percentile(lat, 50), "p99_us": percentile(lat, 99), "calls": calls}


def throughput(settings, evs: list, n: int, aggregate: bool, warm: bool = False) -> dict:
    """put() as fast as one thread can, until flush() returns (dicts, or pre-encoded bytes
    with their partition keys). The clock starts before the first put(), so it includes
    the thread's start (botocore making its client: 0.1-0.6 s here, once per process) and
    the first ListShards; ``warm`` puts and flushes one event first, as a web process
    that has served a request. ``cpu_us_per_event``: this process's CPU time (all its
    threads) per event, which the machine's load moves far less than the wall clock."""
    p = Producer(settings=settings, aggregate=aggregate, metrics=False,
                 max_buffer_bytes=256 * 1024 * 1024, on_full="block", block_timeout_ms=60_000)
    if warm:
        first = evs[0]
        p.put(first[1], first[0]) if isinstance(first, tuple) else p.put(first)
        assert p.flush(60), "warm-up flush timed out"
        n0 = 1
    else:
        n0 = 0
    cpu0 = os.times()
    t0 = time.perf_counter()
    if isinstance(evs[0], tuple):
        for i in range(n):
            key, data = evs[i % len(evs)]
            p.put(data, key)
    else:
        for i in range(n):
            p.put(evs[i % len(evs)])
    put_s = time.perf_counter() - t0
    assert p.flush(300), "flush timed out"
    total = time.perf_counter() - t0
    cpu1 = os.times()
    st = p.stats()
    p.close()
    assert st["sent"] == n + n0 and not st["dropped"], st
    cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    return {"events": n, "events_per_s": n / total, "put_phase_s": put_s, "total_s": total,
            "kinesis_records": st["records"], "calls": st["calls"],
            "cpu_us_per_event": cpu / n * 1e6}


def ceiling(settings, evs: list[dict], n: int) -> dict:
    """What kinesalite takes at most: the same events, KPL-aggregated before the clock
    starts, put with the blocking put_events (2 lanes, 5 MiB calls)."""
    from shardline.kinesis import open_shards
    from shardline.producer.kpl import aggregate

    client = kinesis_client(settings)
    stream = settings.kinesis.stream
    data = ((e["session_id"], ENCODE(e).encode()) for e in (evs[i % len(evs)] for i in range(n)))
    records = list(aggregate(data, 0, open_shards(client, stream)))
    t0 = time.perf_counter()
    stats = put_events(client, stream, records, senders=2)
    total = time.perf_counter() - t0
    assert stats.user_records == n
    return {"events": n, "events_per_s": n / total, "total_s": total,
            "kinesis_records": stats.records, "mb": stats.bytes / 1e6}


class Sink:
    """bench/kinesis_sink.py in a process of its own (4 shards)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "kinesis_sink.py"),
                                      "--shards", "4"], stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def web(info, env: dict, proxy: ProxyProcess, tmp: Path, per_phase: int) -> dict:
    stream = env["SHARDLINE_KINESIS_STREAM"]
    app_env = child_env({**env, "SHARDLINE_KINESIS_ENDPOINT_URL": proxy.url},
                        spool_dir=tmp / "web-spool", spool_after_ms=300, linger_ms=20)
    server = Gunicorn(app_env, workers=4, log=tmp / "gunicorn.log").start()
    noop = Gunicorn(app_env, workers=4, log=tmp / "gunicorn-noop.log", app=NOOP_APP).start()
    fleet = Fleet(tmp / "supervisor", env, stream, workers=2)
    try:
        fleet.start()
        run_load(server.port, 10**6, 100)  # warm-up, not counted in the latencies
        run_load(noop.port, 2 * 10**7, 100)
        healthy, baseline = paired_load(server, noop, 0, per_phase)
        noop.stop()
        proxy.storm("slow", 3600)
        stalled = run_load(server.port, per_phase, per_phase)
        proxy.storm("slow", 0)
        want = 2 * per_phase + 100

        def loaded():
            return warehouse_query(env, "SELECT count(*) FROM page_views")[0][0] >= want

        wait_for(loaded, 300, "every page view in the warehouse", every=1)
        rows = warehouse_query(env, "SELECT url_query FROM page_views")
        rids = sorted(int(q.partition("rid=")[2]) for (q,) in rows)
        exactly_once = rids == sorted(list(range(2 * per_phase)) +
                                      list(range(10**6, 10**6 + 100)))
    finally:
        server.stop()
        noop.stop()
        fleet.stop()
    lat = lambda rs: [t * 1000 for t, _ in rs]  # noqa: E731
    out = {"requests": 2 * per_phase, "errors": sum(1 for _, s in healthy + stalled if s != 200),
           "healthy_p50_ms": percentile(lat(healthy), 50),
           "healthy_p99_ms": percentile(lat(healthy), 99),
           "noop_p50_ms": percentile(lat(baseline), 50),
           "noop_p99_ms": percentile(lat(baseline), 99),
           "stalled_p50_ms": percentile(lat(stalled), 50),
           "stalled_p99_ms": percentile(lat(stalled), 99),
           "exactly_once": exactly_once, "rows": len(rows)}
    out["p99_ratio"] = out["stalled_p99_ms"] / out["healthy_p99_ms"]
    out["p99_over_noop"] = out["healthy_p99_ms"] / out["noop_p99_ms"]
    return out


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2000, help="put() calls per second")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--events", type=int, default=200_000, help="throughput run size")
    ap.add_argument("--requests", type=int, default=2000, help="per web phase")
    ap.add_argument("--skip-web", action="store_true")
    ap.add_argument("--skip-latency", action="store_true", help="events/s only")
    args = ap.parse_args()
    os.environ.update(devstack.DUMMY_AWS_ENV)  # the emulators' fake credentials and region
    tmp = Path(tempfile.mkdtemp(prefix="bench-producer-"))
    info = devstack.up(tmp / "stack")
    proxy = ProxyProcess(info.kinesis_endpoint_url, stall_s=2.0)
    sink = Sink()
    results: dict = {"args": vars(args), "latency": [], "baseline": [], "tput": [],
                     "load_at_start": os.getloadavg()[0]}
    try:
        env = {**info.env(), **FAST}
        evs = sample_events(20_000)
        raw = [(e["session_id"], ENCODE(e).encode()) for e in evs]
        for rep in range(args.repeat):
            stream = f"bench-producer-{rep}-{int(time.time())}"
            shardline("create-stream", "--stream", stream, "--shards", "4", env=env)
            direct = load(None, env={**env, "SHARDLINE_KINESIS_STREAM": stream})
            via = load(None, env={**env, "SHARDLINE_KINESIS_STREAM": stream,
                                  "SHARDLINE_KINESIS_ENDPOINT_URL": proxy.url})
            to_sink = load(None, env={**env, "SHARDLINE_KINESIS_STREAM": stream,
                                      "SHARDLINE_KINESIS_ENDPOINT_URL": sink.url})
            spool = str(tmp / f"spool-{rep}")
            run: dict = {}
            base: dict = {}
            if not args.skip_latency:
                # Healthy: kinesalite itself (the proxy adds ~40 ms a call: Nagle on its relay).
                run["normal"] = put_latency(direct, evs, args.rate, args.seconds, spool)
                base["normal"] = baseline_latency(direct, evs, 300)
                proxy.storm("slow", 3600)
                run["stalled"] = put_latency(via, evs, args.rate, args.seconds, spool + "-s")
                base["stalled"] = baseline_latency(via, evs, 3)
                proxy.storm("slow", 0)
                results["latency"].append(run)
                results["baseline"].append(base)
            results["tput"].append({
                "plain": throughput(direct, evs, args.events // 4, False),
                "aggregated": throughput(direct, evs, args.events, True),
                "aggregated_bytes": throughput(direct, raw, args.events, True),
                "aggregated_warm": throughput(direct, evs, args.events, True, warm=True),
                "ceiling": ceiling(direct, evs, args.events),
                "aggregated_sink": throughput(to_sink, evs, args.events, True),
                "aggregated_warm_sink": throughput(to_sink, evs, args.events, True, warm=True),
                "aggregated_bytes_sink": throughput(to_sink, raw, args.events, True),
                "ceiling_sink": ceiling(to_sink, evs, args.events)})
            print(json.dumps({"rep": rep, **run, "baseline": base,
                              "tput": results["tput"][-1]}), flush=True)
        if not args.skip_web:
            stream = f"bench-producer-web-{int(time.time())}"
            wenv = {**env, "SHARDLINE_KINESIS_STREAM": stream,
                    "SHARDLINE_WAREHOUSE_SCHEMA": "bench_producer_web"}
            shardline("migrate", env=wenv)
            shardline("create-stream", "--stream", stream, "--shards", "2", env=wenv)
            results["web"] = web(info, wenv, proxy, tmp, args.requests)
            print(json.dumps({"web": results["web"]}), flush=True)
    finally:
        proxy.stop()
        sink.stop()
        devstack.down(tmp / "stack")
    summary = {}
    for mode in ("normal", "stalled") if results["latency"] else ():
        for how in ("paced", "tight", "json_paced"):
            for k in ("p50_us", "p99_us", "p999_us"):
                summary[f"put_{mode}_{how}_{k}"] = statistics.median(
                    r[mode][how][k] for r in results["latency"])
        for k in ("p50_us", "p99_us"):
            summary[f"baseline_{mode}_{k}"] = med([r[mode] for r in results["baseline"]], k)
        summary[f"baseline_over_put_p99_{mode}"] = summary[f"baseline_{mode}_p99_us"] / \
            summary[f"put_{mode}_paced_p99_us"]
    for kind in ("plain", "aggregated", "aggregated_bytes", "aggregated_warm", "ceiling",
                 "aggregated_sink", "aggregated_bytes_sink", "aggregated_warm_sink",
                 "ceiling_sink"):
        summary[f"{kind}_events_per_s"] = med([r[kind] for r in results["tput"]],
                                              "events_per_s")
        if kind != "ceiling" and kind != "ceiling_sink":
            summary[f"{kind}_cpu_us_per_event"] = med([r[kind] for r in results["tput"]],
                                                      "cpu_us_per_event")
    summary["agg_vs_plain"] = summary["aggregated_events_per_s"] / summary["plain_events_per_s"]
    summary["agg_vs_ceiling"] = summary["aggregated_events_per_s"] / \
        summary["ceiling_events_per_s"]
    summary["agg_sink_vs_ceiling_sink"] = summary["aggregated_sink_events_per_s"] / \
        summary["ceiling_sink_events_per_s"]
    summary["load_1m_start"] = results["load_at_start"]
    summary["load_1m_end"] = os.getloadavg()[0]
    results["summary"] = summary
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_producer.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
