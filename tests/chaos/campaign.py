"""One chaos campaign: the real fleet under supervisord, on its own local stack, abused.

While a producer writes events (``corpus.py``), the plan (``schedule.py``) SIGKILLs
consumers, stage workers and the loader, restarts gearmand, stops PostgreSQL, cuts or
freezes S3, and storms the consumers' Kinesis calls with faults (``proxy.py``, on top of
a steady rate of random ones). Then it waits until the pipeline is quiet and compares
everything (``verdict.py``). By default page_views also goes to the Iceberg lake, whose
loader is killed too (``lake.py``), and two more sources write beside the producer: a
``shardline tail`` of a rotated access log (``tail.py``) and a ``shardline relay`` with a
client (``relay.py``), both SIGKILLed on the plan.

With ``--hosts N`` (N > 1) the fleet is N "hosts" on this machine, each its own supervisord
running ``shardline agent`` (``supervisor-config --agent``), sharing the control store; the
plan then also crashes whole hosts (SIGKILL of a supervisord and everything under it) and
boots them again, and process kills pick among every live host's programs.

The stack is private to the campaign (a fresh ``devstack`` directory): it is stopped and
restarted under the fleet's feet. PostgreSQL is switched to password authentication on
TCP, and the fleet gets a distinctive AWS secret key, so the logs can be searched for
both afterwards.
"""
from __future__ import annotations

import bisect
import contextlib
import logging
import os
import random
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psycopg2

from shardline import devstack
from shardline.devstack.state import read_state
from shardline.ops import gearman_admin
from shardline.errors import ServiceUnavailable
from shardline.devstack.fleet import (SHARDLINE, Fleet, Hosts, control_store, shardline,
                                  warehouse_query)
from shardline.loaders.lake.loader import KILL_AFTER_COMMIT_ENV
from tests.chaos import lake, relay, schedule, tail, verdict
from tests.chaos.corpus import ChaosProducer
from shardline.devstack.relay import TcpRelay
from tests.chaos.proxy import FaultRates, KinesisFaultProxy

log = logging.getLogger("chaos")

SCHEMA = "chaos"
# Small batches, frequent checkpoints and loads, short leases: many restarts per minute.
FLEET_SETTINGS = {
    "SHARDLINE_CONSUMER_BATCH_MAX_AGE_S": "0.5",
    "SHARDLINE_CONSUMER_IDLE_SLEEP_S": "0.2",
    "SHARDLINE_CONSUMER_CHECKPOINT_INTERVAL_S": "1",
    "SHARDLINE_CONSUMER_REPORT_INTERVAL_S": "2",
    "SHARDLINE_CONSUMER_LEASE_TTL_S": "6",
    "SHARDLINE_CONSUMER_LEASE_RENEW_S": "2",
    "SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S": "10",
    "SHARDLINE_LOADER_MAX_INTERVAL_S": "1",
    "SHARDLINE_LOADER_POLL_S": "0.3",
    "SHARDLINE_LOADER_MIN_FILES": "100",
    "SHARDLINE_LOADER_LEASE_TTL_S": "4",
    "SHARDLINE_GEARMAN_JOB_TIMEOUT_S": "30",
    "SHARDLINE_WAREHOUSE_CONNECT_TIMEOUT_S": "3",
    # the host scrape target (metrics program / agent) on a free port, never a taken one
    "SHARDLINE_AGENT_METRICS_ADDRESS": "127.0.0.1:0",
}
# --hosts: agents poll twice a second, a host is dead 3 s after its last heartbeat.
AGENT_SETTINGS = {"SHARDLINE_AGENT_POLL_S": "0.5", "SHARDLINE_AGENT_HEARTBEAT_TTL_S": "3"}


@dataclass
class Config:
    seed: int = 1
    duration_s: float = 120.0
    events: int = 60_000
    shards: int = 4
    workers: int = 2
    kill_every_s: float = 3.0
    bad_fraction: float = 0.01
    duplicate_fraction: float = 0.002
    hostile_fraction: float = 0.01
    fault_rate: float = 0.03
    settle_timeout_s: float = 300.0
    dir: Path | None = None
    hosts: int = 1  # > 1: agent mode, that many supervisord "hosts"
    host_crash_every_s: float = 30.0  # agent mode: mean seconds between whole-host crashes
    control: str = "postgres"  # the control store: postgres | dynamodb
    warehouse: str = "postgres"  # the warehouse: postgres | redshift-like
    reprocess: bool = True  # one fleet: deploy tests.chaos.transforms mid-run and reprocess
    lake: bool = True  # page_views also to the Iceberg lake; lake loader kills in the plan
    tail_rate: float = 40.0  # access-log lines a second through `shardline tail` (0: none)
    relay_rate: float = 30.0  # page views a second through `shardline relay` (0: none)


REPROCESS_TRANSFORM = "tests.chaos.transforms:page_view_v2"
ROOT = Path(__file__).resolve().parents[2]


def require_password(stack_dir: Path, info: devstack.StackInfo, password: str) -> None:
    """Give the postgres role a password and demand it on TCP (scram-sha-256)."""
    with psycopg2.connect(info.dsn) as conn, conn.cursor() as cur:
        cur.execute("ALTER ROLE postgres PASSWORD %s", (password,))
    hba = Path(read_state(stack_dir)["pg"]["data"]) / "pg_hba.conf"
    text, n = re.subn(r"^(host\s+all\s+all\s+\S+\s+)trust\s*$", r"\1scram-sha-256",
                      hba.read_text(), flags=re.M)
    if not n:
        raise RuntimeError(f"no TCP trust line to replace in {hba}")
    hba.write_text(text)
    with psycopg2.connect(info.dsn, password=password) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_reload_conf()")
    try:
        psycopg2.connect(info.dsn, password="").close()
    except psycopg2.OperationalError:
        return
    raise RuntimeError("PostgreSQL still accepts TCP logins without a password")


class Campaign:
    def __init__(self, cfg: Config, say: Callable[[str], None] = print):
        self.cfg, self.say = cfg, say
        self.rng = random.Random(f"chaos-{cfg.seed}")
        self.dir = Path(cfg.dir or tempfile.mkdtemp(prefix="shardline-chaos-")).resolve()
        self.stack_dir = self.dir / "stack"
        # The caller may choose the secrets (to search the logs for them itself).
        self.secrets = {
            "aws_secret_access_key": os.environ.get("CHAOS_AWS_SECRET_ACCESS_KEY")
            or "chaos-aws-" + secrets.token_hex(12),
            "pg_password": os.environ.get("CHAOS_PG_PASSWORD")
            or "chaos-pg-" + secrets.token_hex(12),
        }
        self.kills: Counter = Counter()
        self.infra: Counter = Counter()
        self.fleet: Fleet | None = None
        self.hosts: Hosts | None = None
        self.revive_at: list[tuple[float, str]] = []  # (monotonic time, host) to boot again
        self.kproxy: KinesisFaultProxy | None = None
        self.gate: TcpRelay | None = None
        self.frozen_pid: int | None = None
        self.reprocess: subprocess.Popen | None = None
        self.reprocess_log: Path | None = None
        self.lake: lake.LakeWatch | None = None
        self.tail: tail.TailSource | None = None
        self.relay: relay.RelaySource | None = None
        self.pg_down = False  # PostgreSQL is stopped by the plan
        self.lake_kill_actions = 0
        self.deploy: threading.Thread | None = None  # the mid-run transform deploy

    # -- setup ---------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        self.info = info = devstack.up(self.stack_dir, warehouse=cfg.warehouse)
        require_password(self.stack_dir, info, self.secrets["pg_password"])
        os.environ["PGPASSWORD"] = self.secrets["pg_password"]  # this process's own queries
        for name in ("AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION"):  # its own DynamoDB client
            os.environ.setdefault(name, info.env()[name])
        os.environ["AWS_SECRET_ACCESS_KEY"] = self.secrets["aws_secret_access_key"]
        self.kproxy = KinesisFaultProxy(
            info.kinesis_endpoint_url, random.Random(f"faults-{cfg.seed}"),
            FaultRates(get_records=cfg.fault_rate, other=cfg.fault_rate / 2)).start()
        self.gate = TcpRelay(("127.0.0.1", info.s3_port)).start()
        self.stream = f"chaos-{cfg.seed}"
        self.prefix = f"chaos/{cfg.seed}"
        self.env = {**os.environ, **info.env(), **FLEET_SETTINGS,
                    "SHARDLINE_KINESIS_ENDPOINT_URL": self.kproxy.url,
                    "SHARDLINE_S3_ENDPOINT_URL": self.gate.url,
                    "SHARDLINE_KINESIS_STREAM": self.stream,
                    "SHARDLINE_WAREHOUSE_SCHEMA": SCHEMA,
                    "SHARDLINE_CONTROL_BACKEND": cfg.control,
                    "SHARDLINE_CONTROL_SCHEMA": SCHEMA,
                    "SHARDLINE_CONTROL_TABLE_PREFIX": f"chaos{cfg.seed}_",
                    "SHARDLINE_S3_PREFIX": self.prefix,
                    "AWS_SECRET_ACCESS_KEY": self.secrets["aws_secret_access_key"],
                    "PGPASSWORD": self.secrets["pg_password"],
                    # the stage workers import the transform deployed before the reprocess
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        if cfg.hosts > 1:
            self.env.update(AGENT_SETTINGS)
        if cfg.lake:
            self.env["SHARDLINE_LAKE_TABLES"] = lake.TABLE
            self.env[KILL_AFTER_COMMIT_ENV] = str(self.dir / "lake-kill-point")
        if cfg.tail_rate > 0:
            self.env["SHARDLINE_TABLES_FILE"] = str(tail.TABLES_FILE)
        self.env.pop("SHARDLINE_CONFIG", None)
        direct = {**self.env, "SHARDLINE_KINESIS_ENDPOINT_URL": info.kinesis_endpoint_url}
        shardline("migrate", env=direct)
        shardline("migrate", "--control", env=direct)
        self.store = control_store(direct)  # the verdict's view of leases and the ledger
        if cfg.lake:
            self.lake = lake.LakeWatch(self.env, self.store, self.dir / "lake-kill-point")
        shardline("create-stream", "--stream", self.stream, "--shards", str(cfg.shards),
                  env=direct)
        self.kinesis = info.client("kinesis")
        self.s3 = info.client("s3")
        if cfg.hosts > 1:
            shardline("migrate", "--control", env=direct)
            self.hosts = Hosts(self.dir / "hosts", self.env, self.stream, cfg.workers)
            self.hosts.start([f"host{i}" for i in range(1, cfg.hosts + 1)])
        else:
            self.fleet = Fleet(self.dir / "supervisor", self.env, self.stream, cfg.workers)
            self.fleet.start()

    def fleets(self) -> dict[str, Fleet]:
        """The running supervisords, by host ("" for the single fleet)."""
        if self.hosts is not None:
            return self.hosts.live()
        return {"": self.fleet} if self.fleet is not None else {}

    def log_dirs(self) -> list[Path]:
        if self.hosts is not None:
            return self.hosts.log_dirs()
        return [self.dir / "supervisor" / "logs"]

    # -- chaos ---------------------------------------------------------------

    def _kill(self, kind: str, exact: bool = False) -> bool:
        """SIGKILL a random running program of ``kind`` (a name prefix; ``exact``: the
        program of that name, e.g. ``loader``, page_views' loader, not another table's)."""
        running = [(f"{host}/{name}" if host else name, pid)
                   for host, fleet in self.fleets().items()
                   for name, (state, pid) in fleet.status().items()
                   if (name.split(":")[-1] == kind if exact
                       else name.split(":")[-1].startswith(kind))
                   and state == "RUNNING" and pid]
        if not running:
            return False
        name, pid = self.rng.choice(sorted(running))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it exited since `supervisorctl status`: pick again
            return False
        self.kills[kind] += 1
        log.info("SIGKILL %s (pid %d)", name, pid)
        return True

    def _kill_loader_after_commit(self) -> bool:
        """The kill point between the two stores: SIGKILL the loader after its warehouse
        commit and before its control-store update. On the PostgreSQL control store the
        pending ledger rows are row-locked first, so ``mark_loaded`` waits there while the
        warehouse commit lands; on DynamoDB the kill follows the commit as closely as it can
        (the next loads row seen)."""
        from shardline.errors import ShardlineError

        holder = None
        try:
            page_view_loads = "SELECT count(*) FROM loads WHERE target_table = 'page_views'"
            before = self.query(page_view_loads)[0][0]
            if self.cfg.control == "postgres":
                c = self.env
                holder = psycopg2.connect(c["SHARDLINE_CONTROL_DSN"], password=c["PGPASSWORD"],
                                          options=f"-c search_path={SCHEMA} "
                                                  "-c statement_timeout=5000")
            if holder is not None:
                with holder.cursor() as cur:
                    cur.execute("SELECT s3_key FROM staged_files WHERE state = 'pending' "
                                "FOR UPDATE")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.query(page_view_loads)[0][0] > before:
                    break
                time.sleep(0.05)
            else:
                return self._kill("loader")  # no load came: an ordinary kill
            if holder is not None:
                time.sleep(0.2)  # the loader is now waiting in mark_loaded
            if self._kill("loader", exact=True):  # a loader kill, and here as its kind
                self.infra["loader kills after the warehouse commit"] += 1
            return True
        except (psycopg2.Error, ShardlineError) as exc:  # PostgreSQL is down: a plain kill
            log.info("commit-point kill fell back to a plain one: %s", exc)
            return self._kill("loader")
        finally:
            if holder is not None:
                with contextlib.suppress(psycopg2.Error):
                    holder.rollback()
                    holder.close()

    def _lake_kill(self) -> bool:
        """Every other lake loader kill arms the kill point after the Iceberg commit
        (``tests.chaos.lake``); the others, and any while it is still armed, are plain."""
        assert self.lake is not None
        self.lake_kill_actions += 1
        if not self.lake.armed and self.lake_kill_actions % 2:
            self.lake.arm()  # the kill itself comes with the next commit
            self.infra["lake loader kill points armed"] += 1
            return True
        return self._kill(lake.KIND)

    def _lake_kill_sprung(self) -> None:
        """A sprung kill point is a kill between the Iceberg commit and the ledger update by
        construction (the hook sits there); whether the commit's files were still pending
        when the campaign looked is extra evidence only: by then supervisord may have
        restarted the loader and it may have reconciled them (the verdict's reaction
        "took over files a killed loader had committed" shows that it did)."""
        if self.lake is not None and self.lake.sprung():
            log.info("lake loader killed itself after its commit (kill point)")
            self.kills[lake.KIND] += 1
            self.infra["lake loader kills after the lake commit"] += 1
            if self.lake.landed():
                self.infra["... their commit seen still pending by the campaign"] += 1

    def _do(self, action: schedule.Action) -> bool:
        """Carry out one action; False if it must be tried again shortly."""
        assert self.kproxy and self.gate
        what = action.what
        if what == "kill" and action.arg == "loader" and self.kills["loader"] % 2:
            return self._kill_loader_after_commit()  # every other loader kill
        if what == "kill" and action.arg == relay.KIND:
            return self.relay.kill() if self.relay is not None else True
        if what == "kill" and action.arg == tail.KIND:
            return self.tail.kill() if self.tail is not None else True
        if what == "kill" and action.arg == lake.KIND:
            return self._lake_kill()
        if what == "kill":
            return self._kill(action.arg)
        if what == "host_crash":
            return self._crash_host(action.seconds)
        if what == "reprocess":
            return self._start_reprocess()
        if what == "gearmand_restart":
            devstack.stop_service(self.stack_dir, "gearman")
            time.sleep(action.seconds)
            devstack.start_service(self.stack_dir, "gearman")
            self.infra["gearmand restarts"] += 1
        elif what == "postgres_down":
            self.pg_down = True
            devstack.stop_service(self.stack_dir, "postgres")
            self.infra["postgres outages"] += 1
        elif what == "postgres_up":
            devstack.start_service(self.stack_dir, "postgres")
            self.pg_down = False
        elif what == "s3_down" and action.arg == "refuse":
            self.gate.cut()
            self.infra["s3 outages (refused)"] += 1
        elif what == "s3_down":
            self.frozen_pid = devstack.status(self.stack_dir)["s3"].pid
            os.kill(self.frozen_pid, signal.SIGSTOP)
            self.infra["s3 outages (frozen)"] += 1
        elif what == "s3_up":
            self._s3_up()
        elif what == "storm":
            self.kproxy.storm(action.arg, action.seconds)
            self.infra[f"kinesis {action.arg} storms"] += 1
        log.info("%s %s", what, action.arg)
        return True

    def _start_reprocess(self) -> bool:
        """Deploy the chaos transform and start the reprocess, in a thread of its own: the
        deploy (``supervisorctl update`` restarts the programs gracefully) can take a
        minute on a loaded machine, and the plan must keep its times meanwhile."""
        if self.fleet is None or not self.cfg.reprocess:
            return True
        self.deploy = threading.Thread(target=self._deploy, name="chaos-deploy", daemon=True)
        self.deploy.start()
        return True

    def _deploy(self) -> None:
        """A config naming the chaos transform, ``supervisorctl update``, then ``shardline
        reprocess --all-shards --trim-horizon`` beside the running fleet. The config is
        written again until it can be (not while PostgreSQL is down, nor in a Kinesis
        storm)."""
        assert self.fleet is not None
        for _ in range(600):
            if self.pg_down:
                time.sleep(0.5)
                continue
            made = shardline("supervisor-config", "--stream", self.stream, "--workers",
                             str(self.cfg.workers), "--out", str(self.fleet.conf_dir), "--set",
                             f"worker.transform={REPROCESS_TRANSFORM}", env=self.env,
                             check=False)
            if made.returncode == 0:
                break
            time.sleep(0.5)
        else:
            log.info("the transform deploy never got its config written")
            return
        self.env["SHARDLINE_WORKER_TRANSFORM"] = REPROCESS_TRANSFORM
        self.fleet.env = self.env
        self.fleet.ctl("reread")
        self.fleet.ctl("update")
        self.infra["transform deploys"] += 1
        self._run_reprocess()

    def _run_reprocess(self) -> None:
        self.reprocess_log = self.dir / f"reprocess-{self.infra['reprocess runs']}.log"
        self.infra["reprocess runs"] += 1
        with open(self.reprocess_log, "w") as out:
            self.reprocess = subprocess.Popen(
                [SHARDLINE, "reprocess", "--all-shards",
                 "--trim-horizon", "--yes", "--reason", "chaos: deployed chaos-v2"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT)
        log.info("reprocess started (pid %d)", self.reprocess.pid)

    def finish_reprocess(self, attempts: int = 5) -> None:
        """Wait for the reprocess run; one the faults stopped is simply run again (a
        reprocess is idempotent: a new generation replaces the same ranges)."""
        if self.deploy is not None:
            self.deploy.join()
        for _ in range(attempts):
            if self.reprocess is None:
                return
            code = self.reprocess.wait(timeout=600)
            if code == 0:
                self.reprocess = None
                return
            log.info("reprocess exited %d; running it again", code)
            self._run_reprocess()
        raise RuntimeError(f"reprocess kept failing; see {self.reprocess_log}")

    def _crash_host(self, down_s: float) -> bool:
        """SIGKILL one live host whole (never the last one); it boots again after down_s."""
        if self.hosts is None:
            return True
        live = sorted(self.hosts.live())
        if len(live) < 2:
            return True
        host = self.rng.choice(live)
        self.hosts.crash(host)
        self.revive_at.append((time.monotonic() + down_s, host))
        self.kills["host"] += 1
        log.info("host crash %s (down for %.1f s)", host, down_s)
        return True

    def _revive(self, everything: bool = False) -> None:
        """Boot the crashed hosts whose downtime is over (``everything``: all of them)."""
        assert self.hosts is not None or not self.revive_at
        now = time.monotonic()
        for item in sorted(self.revive_at):
            if everything or item[0] <= now:
                self.revive_at.remove(item)
                self.hosts.revive(item[1])
                log.info("host %s boots again", item[1])

    def _s3_up(self) -> None:
        assert self.gate
        self.gate.restore()
        if self.frozen_pid:
            os.kill(self.frozen_pid, signal.SIGCONT)
            self.frozen_pid = None

    def run_chaos(self, producer: ChaosProducer) -> None:
        cfg = self.cfg
        actions = schedule.plan(cfg.seed, cfg.duration_s, kill_every_s=cfg.kill_every_s,
                                host_crash_every_s=cfg.host_crash_every_s if cfg.hosts > 1
                                else 0.0,
                                reprocess_at=0.55 if cfg.reprocess and cfg.hosts <= 1 else None,
                                kinds=schedule.KILL_KINDS + ((lake.KIND,) if cfg.lake else ()),
                                source_kinds=((tail.KIND,) if cfg.tail_rate > 0 else ())
                                + ((relay.KIND,) if cfg.relay_rate > 0 else ()))
        t0 = time.monotonic()
        next_report = 0.0
        while actions:
            self._revive()
            self._lake_kill_sprung()
            now = time.monotonic() - t0
            if actions[0].at_s <= now:
                action = actions.pop(0)
                if not self._do(action):  # nothing of that kind running: try again soon
                    # in time order: a retried action never holds back a later one (an
                    # outage's end)
                    bisect.insort(actions, schedule.Action(now + 0.5, action.what,
                                                           action.arg, action.seconds))
                continue
            if producer.error:
                raise RuntimeError(f"producer failed: {producer.error!r}")
            if now >= next_report:
                next_report = now + 10
                self.say(f"  t={now:5.0f}s  put {len(producer.ledger.good_ids):,} valid, "
                         f"kills {dict(self.kills)}, faults {self.kproxy.injected()}")
            time.sleep(min(0.2, max(0.0, actions[0].at_s - now)))
        self.chaos_s = time.monotonic() - t0

    # -- settle and judge ----------------------------------------------------

    def query(self, sql: str, args: Any = None) -> list[tuple]:
        return warehouse_query(self.env, sql, args)

    def sources_complete(self) -> bool:
        """The relay's acknowledged events and the tail's lines are all rows."""
        try:
            if self.relay is not None:
                got = {r[0] for r in self.query("SELECT event_id FROM page_views")}
                if not self.relay.acked <= got:
                    return False
            return self.tail is None or self.tail.complete(self.query)
        except psycopg2.Error:
            return False

    def relay_ids(self) -> set[str]:
        return self.relay.sent if self.relay is not None else set()

    def tables(self) -> list[str]:
        return ["page_views", tail.TABLE] if self.tail is not None else ["page_views"]

    def quiet(self, v: verdict.Verdict) -> bool:
        """Fill the liveness fields of ``v``; True when nothing is left to do."""
        cps = {shard: cp.sequence_number
               for shard, cp in self.store.checkpoints(self.stream).items()}
        v.lagging_shards = verdict.lagging_shards(self.kinesis, self.stream, cps)
        v.pending_files = sum(self.store.pending_stats(t).files for t in self.tables())
        if self.lake is not None:
            v.pending_files += self.lake.pending()
        status = gearman_admin.cluster_status([self.info.gearman_server])
        v.queued_jobs = sum(f["total"] for f in gearman_admin.totals(status).values())
        v.stuck_programs = sorted(f"{host}/{name}" if host else name
                                  for host, fleet in self.fleets().items()
                                  for name, (state, _) in fleet.status().items()
                                  if state != "RUNNING")
        return not (v.lagging_shards or v.pending_files or v.queued_jobs or v.stuck_programs)

    def settle(self, producer: ChaosProducer) -> verdict.Verdict:
        """Wait for the producer, then until the pipeline is quiet and complete; judge."""
        producer.join()
        if producer.error:
            raise RuntimeError(f"producer failed: {producer.error!r}")
        t0 = time.monotonic()
        self.finish_reprocess()
        while True:
            v = verdict.Verdict(self.cfg.seed)
            rows_checked = False
            try:
                if self.quiet(v):
                    verdict.check_rows(v, producer.ledger, self.query, self.relay_ids())
                    rows_checked = True
            except (psycopg2.Error, ServiceUnavailable, OSError) as exc:  # e.g. PG starting
                log.info("not quiet yet: %s", exc)
            waited = time.monotonic() - t0
            if rows_checked and not v.missing:
                rows_checked = self.sources_complete()
            if (rows_checked and not v.missing) or waited > self.cfg.settle_timeout_s:
                break
            time.sleep(2)
        rows = verdict.check_rows(v, producer.ledger, self.query, self.relay_ids())
        if self.relay is not None:
            self.relay.check(v, rows)
        verdict.check_hostile(v, producer.ledger, self.query)
        if self.infra["transform deploys"]:
            verdict.check_transform(v, self.query)
        entries = list(verdict.dead_letters(self.s3, self.info.bucket, self.prefix).values())
        tailed, _ = tail.split_letters(entries)
        verdict.check_dead_letters(v, producer.ledger, self.s3, self.info.bucket, self.prefix,
                                   other_source=lambda d: tail.tail_letter(d) is not None)
        if self.tail is not None:
            v.tail = True
            self.tail.check(v, self.query, tailed)
        if self.lake is not None:
            acked = self.relay.acked if self.relay is not None else set()
            lake.check_lake(v, producer.ledger.good_ids | acked, self.relay_ids(), self.lake,
                            self.dir / "lake-check")
        if waited > self.cfg.settle_timeout_s:
            v.problems.append(f"not quiet after {self.cfg.settle_timeout_s:.0f} s")
        v.settle_s, v.chaos_s = waited, self.chaos_s
        v.kills = dict(self.kills)
        v.infra = dict(self.infra)
        v.faults = self.kproxy.injected() if self.kproxy else {}
        per_dir = [verdict.reactions(d) for d in self.log_dirs()]
        v.reactions = {what: sum(r[what] for r in per_dir) for what in per_dir[0]}
        return v

    def run(self) -> verdict.Verdict:
        cfg = self.cfg
        hosts = f", {cfg.hosts} hosts (agent mode)" if cfg.hosts > 1 else ""
        self.say(f"chaos: seed {cfg.seed}, {cfg.duration_s:.0f} s, {cfg.events:,} events, "
                 f"{cfg.shards} shards, {cfg.workers} stage workers{hosts}; files in {self.dir}")
        self.start()
        rate = cfg.events / max(1.0, cfg.duration_s * 0.85)
        producer = ChaosProducer(self.kinesis, self.stream, count=cfg.events, rate=rate,
                                 seed=cfg.seed, bad_fraction=cfg.bad_fraction,
                                 duplicate_fraction=cfg.duplicate_fraction,
                                 hostile_fraction=cfg.hostile_fraction)
        producer.start()
        if cfg.tail_rate > 0:
            self.tail = tail.TailSource(self.dir, self.env, self.stream, self.kproxy.url,
                                        cfg.tail_rate)
            self.tail.start()
        if cfg.relay_rate > 0:
            self.relay = relay.RelaySource(
                self.dir, self.env, self.stream, self.kproxy.url,
                count=int(cfg.relay_rate * cfg.duration_s * 0.85), rate=cfg.relay_rate,
                seed=cfg.seed + 100_003)
            self.relay.start_all()
        try:
            self.run_chaos(producer)
        finally:
            if self.lake is not None:
                self._lake_kill_sprung()
                self.lake.disarm()
            if self.tail is not None:
                self.tail.stop_writing()
            if self.relay is not None:
                self.relay.finish()
            self._s3_up()
            if devstack.status(self.stack_dir)["postgres"].alive is False:
                devstack.start_service(self.stack_dir, "postgres")
            self._revive(everything=True)
        self.say(f"chaos over after {self.chaos_s:.0f} s; waiting for the pipeline to settle")
        v = self.settle(producer)
        leaks = secrets_in_logs(self.log_files(), self.secrets.values())
        if leaks:
            v.problems.append(f"secret values in logs: {', '.join(leaks)}")
        return v

    def log_files(self) -> list[Path]:
        """Every log the run wrote: supervisord and its programs, the stack's services."""
        files = {p for p in self.dir.rglob("*.log") if p.is_file()}
        state = read_state(self.stack_dir)
        if state:  # the PostgreSQL cluster may live outside dir (see devstack.pg_server)
            files.add(Path(state["pg"]["log"]))
        return sorted(p for p in files if p.is_file())

    def stop(self, keep_stack: bool = False) -> None:
        self._s3_up()
        if self.fleet is not None:
            self.fleet.stop()
        if self.hosts is not None:
            self.hosts.stop()
        if self.tail is not None:
            self.tail.stop()
        if self.relay is not None:
            self.relay.stop()
        for part in (self.kproxy, self.gate):
            if part is not None:
                part.stop()
        if not keep_stack:
            devstack.down(self.stack_dir)


def secrets_in_logs(paths: list[Path], values: Any) -> list[str]:
    """Files (and which secret) where a secret value appears, as text."""
    found = []
    needles = [v.encode() for v in values]
    for path in paths:
        data = path.read_bytes()
        found += [f"{path.name}" for needle in needles if needle in data]
    return found
