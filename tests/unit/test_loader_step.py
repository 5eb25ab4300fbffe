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
from shardline.errors import ConfigError, LoadFailed, ServiceUnavailable
from shardline.workers.ledger import StagedFile
from shardline.layout import manifest_key
from shardline.workers.warehouse.plan import Manifest
from shardline.workers.warehouse.postgres import ManifestReader, PostgresDialect
from shardline.workers.loader import Loader, MAX_BACKOFF_S


def pg_loader(wh: FakeWarehouse, s3: FakeS3, clock: Clock, **overrides: str) -> Loader:
    cfg = settings(**overrides)
    return Loader(cfg, "page_views", dialect=PostgresDialect(s3), s3=s3, connect=wh,
                  clock=clock, load_id_factory=lambda now: f"L{now:%H%M%S}")


def staged(s3: FakeS3, n: int, rows_per_file: int = 2, start: int = 0) -> list:
    out = []
    for i in range(n):
        rows = [page_view(start + i * 100 + j, start + i * 100 + j)
                for j in range(rows_per_file)]
        out.append(stage_file(s3, "bucket-x", None, f"pfx/staged/f{start + i:04d}.csv.gz", rows,
                              staged_at=T0 + timedelta(seconds=i)))
    return out


def test_waits_for_the_trigger_then_loads_by_age():
    s3, clock = FakeS3(), Clock(T0)
    wh = FakeWarehouse(staged(s3, 2))
    loader = pg_loader(wh, s3, clock)  # 30 s max interval, 1000 files, 1 MB
    r = loader.step()
    assert (r.state, r.wait_s) == ("not_due", 0.5)
    assert not any(s.startswith("LOCK") for s in wh.sql())
    clock.advance(30)
    r = loader.step()
    assert r.state == "loaded" and r.load.files == 2 and r.load.rows_copied == 4
    assert r.wait_s == 0.5
    assert all(e.state == "loaded" for e in wh.ledger.values())
    # The stream COPY got both files' rows, in manifest (oldest first) order.
    data = b"".join(wh.copied).decode()
    assert data == "".join(csvformat.format_row(page_view(i, i)) for i in (0, 1, 100, 101))
    assert loader.step().state == "idle"


def test_min_files_and_cap_oldest_first():
    s3, clock = FakeS3(), Clock(T0)
    wh = FakeWarehouse(staged(s3, 5))
    loader = pg_loader(wh, s3, clock, **{"loader.min_files": "3",
                                         "loader.max_files_per_load": "2"})
    r = loader.step()
    assert r.state == "loaded" and r.load.files == 2 and r.load.capped and r.wait_s == 0
    assert sorted(k for k, e in wh.ledger.items() if e.state == "loaded") == \
        ["pfx/staged/f0000.csv.gz", "pfx/staged/f0001.csv.gz"]
    r = loader.step()  # 3 left: still >= min_files
    assert r.state == "loaded" and r.load.files == 2
    r = loader.step()  # 1 left: not due by count, and young
    assert r.state == "not_due"


def test_min_bytes():
    s3, clock = FakeS3(), Clock(T0)
    entries = staged(s3, 2)
    wh = FakeWarehouse(entries)
    total = sum(e.byte_count for e in entries)
    loader = pg_loader(wh, s3, clock, **{"loader.min_bytes": str(total)})
    assert loader.step().state == "loaded"


def test_nothing_left_inside_the_lock():
    """Another loader loaded the files between our trigger check and our lock."""
    s3, clock = FakeS3(), Clock(T0)
    wh = FakeWarehouse(staged(s3, 2))
    real = wh._answer

    def answer(sql, params):
        if sql.startswith("LOCK"):
            for e in wh._state()["ledger"].values():
                e.state = "loaded"
        return real(sql, params)

    wh._answer = answer
    loader = pg_loader(wh, s3, clock, **{"loader.max_interval_s": "0"})
    r = loader.step()
    assert r.state == "nothing"
    assert not any(s.startswith(("COPY", "CREATE")) for s in wh.sql())
    assert not [k for _, k, _ in s3.puts if k.endswith(".manifest")]  # no manifest either


def test_failure_backs_off_exponentially_and_logs_each_time(caplog):
    s3, clock = FakeS3(), Clock(T0)
    wh = FakeWarehouse(staged(s3, 1))
    del s3.objects["pfx/staged/f0000.csv.gz"]  # the object is missing
    loader = pg_loader(wh, s3, clock, **{"loader.max_interval_s": "0", "loader.poll_s": "1"})
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
    assert wh.ledger["pfx/staged/f0000.csv.gz"].state == "pending"
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
                    connect=connect, clock=clock)
    r = loader.step()
    assert r.state == "failed" and isinstance(r.error, ServiceUnavailable)


def test_sql_error_in_merge_becomes_load_failed_and_rolls_back():
    s3, clock = FakeS3(), Clock(T0)
    wh = FakeWarehouse(staged(s3, 1))
    wh.fail_on[r"^INSERT INTO page_views"] = psycopg2.IntegrityError("duplicate key value")
    loader = pg_loader(wh, s3, clock, **{"loader.max_interval_s": "0"})
    r = loader.step()
    assert r.state == "failed" and "duplicate key value" in str(r.error)
    assert wh.transactions()[-1][-1] == "ROLLBACK"
    assert all(e.state == "pending" for e in wh.ledger.values()) and not wh.loads


def test_zero_row_entries_are_marked_loaded_but_not_in_the_manifest():
    s3, clock = FakeS3(), Clock(T0)
    entries = staged(s3, 1)
    empty = ledger_row("pfx/staged/empty.csv.gz", [], staged_at=T0)
    empty.state = "pending"  # a ledger writer that leaves 0-row batches pending
    wh = FakeWarehouse(entries + [empty])
    loader = pg_loader(wh, s3, clock, **{"loader.max_interval_s": "0"})
    assert loader.step().state == "loaded"
    assert wh.ledger["pfx/staged/empty.csv.gz"].state == "loaded"
    manifest = next(b for _, k, b in s3.puts if k.endswith(".manifest")).decode()
    assert "empty.csv.gz" not in manifest and "f0000.csv.gz" in manifest


def test_unknown_table_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown target table"):
        Loader(settings(), "nope", dialect=PostgresDialect(FakeS3()), s3=FakeS3(),
               connect=FakeWarehouse())


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
