"""Loader.step() with an injected clock, a fake warehouse and a fake S3: trigger, cap,
backoff after failures, the PostgreSQL COPY stream, logging context."""
from __future__ import annotations

import gzip
import logging
from datetime import timedelta

import psycopg2
import pytest

from tests.contract.loader_kit import (T0, Clock, FakeWarehouse, csv_gz, ledger_row,
                                       page_view, settings, stage_file)
from tests.fakes import FakeS3
from shardline import csvformat
from shardline.controlstore import MemoryStore
from shardline.errors import ConfigError, LoadFailed, ServiceUnavailable
from shardline.records.ledger import StagedFile
from shardline.layout import manifest_key
from shardline.loaders.warehouse.plan import Manifest
from shardline.loaders.warehouse.postgres_dialect import ManifestReader, PostgresDialect
from shardline.loaders.loader import Loader, MAX_BACKOFF_S


class Rig:
    """A PostgreSQL-dialect loader over a fake warehouse, fake S3 and an in-memory store."""

    def __init__(self, n_files: int = 0, **overrides: str):
        self.s3, self.clock = FakeS3(), Clock(T0)
        self.store = MemoryStore(self.clock)
        self.entries = staged(self.s3, self.store, n_files)
        self.wh = FakeWarehouse(s3=self.s3,
                                rows_of=lambda key: self.store.get_file(key).row_count)
        self.loader = Loader(settings(**overrides), "page_views",
                             dialect=PostgresDialect(self.s3), s3=self.s3, connect=self.wh,
                             store=self.store, clock=self.clock,
                             load_id_factory=lambda now: f"L{now:%H%M%S}")

    def states(self) -> dict[str, str]:
        return {k: e.state for k, e in self.store._files.items()}


def staged(s3: FakeS3, store, n: int, rows_per_file: int = 2, start: int = 0) -> list:
    out = []
    for i in range(n):
        rows = [page_view(start + i * 100 + j, start + i * 100 + j)
                for j in range(rows_per_file)]
        out.append(stage_file(s3, "bucket-x", store, f"pfx/staged/f{start + i:04d}.csv.gz",
                              rows, staged_at=T0 + timedelta(seconds=i)))
    return out


def test_waits_for_the_trigger_then_loads_by_age():
    rig = Rig(2)  # 30 s max interval, 1000 files, 1 MB
    r = rig.loader.step()
    assert (r.state, r.wait_s) == ("not_due", 0.5)
    assert not any(s.startswith(("LOCK", "COPY")) for s in rig.wh.sql())
    rig.clock.advance(30)
    r = rig.loader.step()
    assert r.state == "loaded" and r.load.files == 2 and r.load.rows_copied == 4
    assert r.wait_s == 0.5
    assert set(rig.states().values()) == {"loaded"}
    assert not any(s.startswith("LOCK") for s in rig.wh.sql())  # never a table lock
    # The stream COPY got both files' rows, in manifest (oldest first) order.
    data = b"".join(rig.wh.copied).decode()
    assert data == "".join(csvformat.format_row(page_view(i, i)) for i in (0, 1, 100, 101))
    assert rig.loader.step().state == "idle"


def test_min_files_and_cap_oldest_first():
    rig = Rig(5, **{"loader.min_files": "3", "loader.max_files_per_load": "2"})
    r = rig.loader.step()
    assert r.state == "loaded" and r.load.files == 2 and r.load.capped and r.wait_s == 0
    assert sorted(k for k, st in rig.states().items() if st == "loaded") == \
        ["pfx/staged/f0000.csv.gz", "pfx/staged/f0001.csv.gz"]
    r = rig.loader.step()  # 3 left: still >= min_files
    assert r.state == "loaded" and r.load.files == 2
    r = rig.loader.step()  # 1 left: not due by count, and young
    assert r.state == "not_due"


def test_min_bytes():
    rig = Rig(2)
    total = sum(e.byte_count for e in rig.entries)
    rig.loader.trigger = type(rig.loader.trigger)(total, 1000, 30)
    assert rig.loader.step().state == "loaded"


def test_a_file_the_warehouse_already_holds_is_refused_then_reconciled():
    """The warehouse record has the file (a loader died after its commit) but the store
    says pending: the load transaction refuses, the loader reconciles, nothing is copied."""
    rig = Rig(1, **{"loader.max_interval_s": "0"})
    rig.loader.hold_lease()
    rig.loader.reconciled = True  # as if reconciled before the other loader committed
    e = rig.entries[0]
    rig.wh.loaded[e.s3_key] = {"s3_key": e.s3_key, "target_table": "page_views",
                               "load_id": "OLD", "loaded_at": T0, "row_count": 2}
    r = rig.loader.step()
    assert r.state == "nothing"
    assert not any(s.startswith("COPY") for s in rig.wh.sql())
    assert rig.wh.transactions()[-1][-1] == "ROLLBACK"
    r = rig.loader.step()  # reconciles first: nothing pending any more
    assert r.state == "idle"
    assert rig.store.get_file(e.s3_key).load_id == "OLD"


def test_a_stale_loader_is_fenced_off():
    """Our lease was taken over and the newer loader has loaded: the fence row refuses us."""
    rig = Rig(1, **{"loader.max_interval_s": "0"})
    assert rig.loader.hold_lease()
    rig.wh.fence["page_views"] = rig.loader.token + 1
    r = rig.loader.step()
    assert r.state == "nothing" and rig.loader.token is None
    assert rig.wh.transactions()[-1][-1] == "ROLLBACK"
    assert set(rig.states().values()) == {"pending"}


def test_failure_backs_off_exponentially_and_logs_each_time(caplog):
    rig = Rig(1, **{"loader.max_interval_s": "0", "loader.poll_s": "1",
                    "loader.quarantine_after": "100"})
    s3, clock, wh, loader = rig.s3, rig.clock, rig.wh, rig.loader
    del s3.objects["pfx/staged/f0000.csv.gz"]  # the object is missing
    waits = []
    with caplog.at_level(logging.ERROR, logger="shardline.loader"):
        for _ in range(8):
            r = loader.step()
            assert r.state == "failed" and isinstance(r.error, LoadFailed)
            waits.append(r.wait_s)
            n = len(wh.statements)
            assert loader.step().state == "backoff"  # no warehouse call while backing off
            assert len(wh.statements) == n
            clock.advance(r.wait_s)
    assert waits == [1, 2, 4, 8, 16, 32, MAX_BACKOFF_S, MAX_BACKOFF_S]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 8
    assert all("NoSuchKey" in r.getMessage() or "no such key" in r.getMessage()
               for r in errors)
    assert all("table=page_views" in r.ctx and "load_id=L" in r.ctx for r in errors)
    assert rig.states()["pfx/staged/f0000.csv.gz"] == "pending"
    # Fixed: the next attempt loads and the backoff resets.
    s3.put_object(Bucket="bucket-x", Key="pfx/staged/f0000.csv.gz",
                  Body=csv_gz([page_view(0, 0), page_view(1, 1)]))
    assert loader.step().state == "loaded"
    assert loader.failures == 0


def test_warehouse_down_is_a_backoff_not_a_crash():
    s3, clock = FakeS3(), Clock(T0)

    def connect():
        raise ServiceUnavailable("warehouse host=x: connection refused")

    loader = Loader(settings(), "page_views", dialect=PostgresDialect(s3), s3=s3,
                    connect=connect, clock=clock, store=MemoryStore(clock))
    r = loader.step()
    assert r.state == "failed" and isinstance(r.error, ServiceUnavailable)


def test_sql_error_in_merge_becomes_load_failed_and_rolls_back():
    rig = Rig(1, **{"loader.max_interval_s": "0"})
    rig.wh.fail_on[r"^INSERT INTO page_views"] = psycopg2.IntegrityError("duplicate key value")
    r = rig.loader.step()
    assert r.state == "failed" and "duplicate key value" in str(r.error)
    assert rig.wh.transactions()[-1][-1] == "ROLLBACK"
    assert set(rig.states().values()) == {"pending"} and not rig.wh.loads
    assert not rig.wh.loaded


def test_zero_row_entries_are_marked_loaded_but_not_in_the_manifest():
    rig = Rig(1, **{"loader.max_interval_s": "0"})
    empty = ledger_row("pfx/staged/empty.csv.gz", [], staged_at=T0)
    empty.state = "pending"  # a ledger writer that leaves 0-row batches pending
    rig.store.record_file(empty)
    assert rig.loader.step().state == "loaded"
    assert rig.states()["pfx/staged/empty.csv.gz"] == "loaded"
    manifest = next(b for _, k, b in rig.s3.puts if k.endswith(".manifest")).decode()
    assert "empty.csv.gz" not in manifest and "f0000.csv.gz" in manifest


def test_unknown_table_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown target table"):
        Loader(settings(), "nope", dialect=PostgresDialect(FakeS3()), s3=FakeS3(),
               connect=FakeWarehouse(), store=MemoryStore())


def test_manifest_key_follows_the_contract():
    assert manifest_key("pfx", "page_views", "L1") == "pfx/manifests/page_views/L1.manifest"
    assert manifest_key("", "page_views", "L1") == "manifests/page_views/L1.manifest"
    assert manifest_key("a/b/", "t", "x") == "a/b/manifests/t/x.manifest"


# -- the PostgreSQL COPY stream -------------------------------------------------------

def entry(key: str, rows: int = 1) -> StagedFile:
    return StagedFile(s3_key=key, target_table="t", stream="s", shard_id="sh",
                      first_sequence="1", first_sub_sequence=0, last_sequence="2",
                      last_sub_sequence=0, row_count=rows, byte_count=10, staged_at=T0)


def read_all(reader: ManifestReader, size: int = 7) -> bytes:
    out = b""
    while True:
        chunk = reader.read(size)
        if not chunk:
            return out
        out += chunk


def make_reader(s3: FakeS3, keys: list[str]) -> ManifestReader:
    from concurrent.futures import ThreadPoolExecutor

    manifest = Manifest("b", "m", tuple(entry(k) for k in keys))
    return ManifestReader(s3, manifest, ThreadPoolExecutor(2), 2)


def test_reader_concatenates_multi_member_gzip_and_adds_missing_newlines():
    s3 = FakeS3()
    s3.put_object(Bucket="b", Key="k1", Body=gzip.compress(b"a,1\n") + gzip.compress(b"b,2\n"))
    s3.put_object(Bucket="b", Key="k2", Body=gzip.compress(b"c,3"))  # no final newline
    s3.put_object(Bucket="b", Key="k3", Body=gzip.compress(b"d,4\n" * 10000))
    data = read_all(make_reader(s3, ["k1", "k2", "k3"]), size=65536)
    assert data == b"a,1\nb,2\nc,3\n" + b"d,4\n" * 10000


def test_reader_small_reads():
    s3 = FakeS3()
    s3.put_object(Bucket="b", Key="k1", Body=gzip.compress("é,\"x\"\n".encode() * 3))
    assert read_all(make_reader(s3, ["k1"]), size=1) == "é,\"x\"\n".encode() * 3


def test_reader_truncated_gzip_is_a_load_failure():
    s3 = FakeS3()
    s3.put_object(Bucket="b", Key="k1", Body=gzip.compress(b"a,1\n" * 1000)[:-12])
    with pytest.raises(LoadFailed, match="s3://b/k1 is not valid gzip"):
        read_all(make_reader(s3, ["k1"]))


def test_reader_not_gzip():
    s3 = FakeS3()
    s3.put_object(Bucket="b", Key="k1", Body=b"plain,text\n")
    with pytest.raises(LoadFailed, match="not valid gzip"):
        read_all(make_reader(s3, ["k1"]))


def test_a_backoff_longer_than_the_lease_keeps_the_lease():
    """A load that keeps failing backs off up to MAX_BACKOFF_S, longer than the loader
    lease's TTL: the steps of the backoff renew the lease, so the table does not go round
    the other hosts' loaders, each failing the same load."""
    rig = Rig(1, **{"loader.max_interval_s": "0", "loader.poll_s": "1",
                    "loader.lease_ttl_s": "20", "loader.quarantine_after": "100"})
    del rig.s3.objects["pfx/staged/f0000.csv.gz"]  # every load fails
    loader, clock = rig.loader, rig.clock
    states = []
    for _ in range(80):  # 400 s: run() waits a backoff in steps of at most ttl / 4
        r = loader.step()
        states.append(r.state)
        assert r.wait_s <= MAX_BACKOFF_S
        lease = rig.store.get_lease("@loader", "page_views")
        assert lease.owner == loader.owner and loader.token == lease.token == 1
        assert lease.expires_at.timestamp() > clock()
        clock.advance(5.0)
    assert states.count("failed") >= 8 and states.count("backoff") > 40
    assert "standby" not in states
