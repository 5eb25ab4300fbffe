"""The pure parts of reprocess, redrive and transform versions (issue 12)."""
from __future__ import annotations

import argparse
import gzip
from datetime import datetime, timedelta, timezone

import pytest

from shardline import codec, layout, positions
from shardline.errors import ConfigError
from shardline.ops import reprocess, reprocess_diff, reprocess_sources
from shardline.cli.kit import UsageError
from shardline.transforms import page_views
from shardline.workers import transform as transform_mod
from shardline.records.ledger import LOADED, PENDING, StagedFile
from shardline.loaders.loader import load_group
from tests.fakes import FakeS3

T0 = datetime(2026, 11, 26, 7, 0)
UTC = timezone.utc


def rec(i: int, arrival_s: float = 0.0) -> codec.Record:
    ms = int((T0.replace(tzinfo=UTC).timestamp() + arrival_s) * 1000)
    return codec.Record(str(10 ** 55 + i), 0, f"k{i}", b"{}", ms)


def entry(key: str, *, generation=None, version="v1", rows=1, staged=0) -> StagedFile:
    return StagedFile(s3_key=key, target_table="page_views", stream="s", shard_id="sh",
                      first_sequence="1", first_sub_sequence=0, last_sequence="2",
                      last_sub_sequence=0, row_count=rows, byte_count=10,
                      staged_at=T0 + timedelta(seconds=staged), generation=generation,
                      transform_version=version)


def test_transform_version_declared_or_a_hash_of_the_code(tmp_path, monkeypatch):
    assert transform_mod.transform_version(transform_mod.page_view) == page_views.VERSION
    (tmp_path / "tv_plain.py").write_text("def t(e):\n    return e\n")
    (tmp_path / "tv_long.py").write_text(f"VERSION = {'x' * 65!r}\ndef t(e):\n    return e\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plain = transform_mod.load_transform("tv_plain:t")
    version = transform_mod.transform_version(plain)
    assert version.startswith("sha1:") and len(version) == 17
    (tmp_path / "tv_plain2.py").write_text("def t(e):\n    return dict(e)\n")
    assert transform_mod.transform_version(transform_mod.load_transform("tv_plain2:t")) != version
    with pytest.raises(ConfigError):
        transform_mod.transform_version(transform_mod.load_transform("tv_long:t"))


def test_reprocess_entries_are_pending_without_rows_redrive_ones_are_not():
    assert entry("a", generation="g1", rows=0).state == PENDING
    assert entry("a", generation="r1", rows=0).state == LOADED
    assert entry("a", rows=0).state == LOADED
    assert entry("a", generation="g1").replaces and not entry("a", generation="r1").replaces


def test_load_group_one_kind_and_version_reprocess_waits_for_older_versions():
    old, new = entry("o", version="v1"), entry("n", version="v2", staged=1)
    r1, r2 = entry("r1", generation="g1", version="v2", staged=2), \
        entry("r2", generation="g1", version="v2", staged=4)
    assert load_group([old, r1, new, r2]) == [old]
    assert load_group([r1, new, r2]) == [r1, r2]  # a file of the same version may wait
    assert load_group([r1, old, r2]) == [r1]  # one of an older transform loads first
    assert load_group([new, r1, entry("n2", version="v2", staged=5)]) == \
        [new, load_group([entry("n2", version="v2", staged=5)])[0]]
    assert load_group([]) == []


def test_within_is_inclusive_position_range():
    sql = positions.within("s", "u")
    assert sql.count("%s") == len(positions.within_params(("12", 0), ("13", 2))) == 10


def test_job_payload_carries_the_generation():
    batch = codec.Batch("s", "sh", [rec(1), rec(2)])
    assert codec.decode_job(codec.encode_job(batch)) == (None, batch)
    assert codec.encode_job(batch) == codec.encode(batch)  # the consumers' jobs: unchanged
    assert codec.decode_job(codec.encode_job(batch, "g20261126T0700001a2b")) == \
        ("g20261126T0700001a2b", batch)


def test_keys_of_a_generation_and_of_the_archive():
    batch = codec.Batch("s", "sh", [rec(1, 3600.5), rec(2, 3700)])
    plain, tagged = layout.staged_key("p", "t", batch), layout.staged_key("p", "t", batch, "g1")
    assert plain != tagged and tagged.endswith(".g1.csv.gz")
    assert layout.archive_key("p", batch).startswith("p/archive/s/2026-11-26/08/sh/")
    assert layout.archive_key("p", batch).startswith(layout.archive_prefix("p", "s",
                                                     T0.replace(tzinfo=UTC, hour=8)))


def test_archive_yields_each_record_once_in_order_within_the_time_range():
    s3 = FakeS3(bucket="b")
    first = codec.Batch("s", "sh", [rec(i, i) for i in range(1, 6)])
    again = codec.Batch("s", "sh", [rec(i, i) for i in range(3, 9)])  # a replay's overlap
    other = codec.Batch("s", "sh2", [rec(1, 1)])
    for b in (again, first, other):
        s3.put_object(Bucket="b", Key=layout.archive_key("p", b),
                      Body=gzip.compress(codec.encode(b)))
    got = list(reprocess_sources.archive_batches(s3, "b", "p", "s"))
    assert [(b.shard_id, [r.sequence_number for r in b.records]) for b in got] == [
        ("sh", [rec(i).sequence_number for i in range(1, 6)]),
        ("sh", [rec(i).sequence_number for i in range(6, 9)]),
        ("sh2", [rec(1).sequence_number])]
    since = T0.replace(tzinfo=UTC) + timedelta(seconds=4)
    got = list(reprocess_sources.archive_batches(s3, "b", "p", "s", shards={"sh"}, since=since,
                                                 until=since + timedelta(seconds=2)))
    assert [r.sequence_number for b in got for r in b.records] == \
        [rec(4).sequence_number, rec(5).sequence_number]


def test_compare_counts_added_changed_removed_and_retagged():
    p = [positions.position(str(i)) for i in range(5)]
    new = {p[0]: ("a",), p[1]: ("B",), p[2]: ("c",), p[4]: ("e",)}
    stored = {p[0]: (("a",), "v2"), p[1]: (("b",), "v1"), p[2]: (("c",), "v1"),
              p[3]: (("d",), "v1")}
    d = reprocess_diff.compare(new, stored, "v2")
    assert (d.added, d.changed, d.removed, d.unchanged, d.retagged) == (1, 1, 1, 2, 1)


def _args(**kw) -> argparse.Namespace:
    base = dict(shard=None, all_shards=True, trim_horizon=False, at_timestamp=None,
                at_sequence=None, from_archive=False, since=None, until=None, reason="r")
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("kw, message", [
    ({"all_shards": False}, "which shards"),
    ({}, "where from"),
    ({"trim_horizon": True, "since": "2026-01-01"}, "--from-archive"),
    ({"at_sequence": "12"}, "one shard"),
    ({"trim_horizon": True, "reason": " "}, "--reason"),
    ({"at_timestamp": "yesterday"}, "ISO-8601"),
])
def test_reprocess_usage_errors(kw, message):
    with pytest.raises(UsageError, match=message):
        reprocess.validate(_args(**kw))


def test_reprocess_sources_and_generation():
    assert reprocess.validate(_args(from_archive=True, since="2026-11-26T00:00:00Z")) == "archive"
    assert reprocess.validate(_args(shard="x", all_shards=False, at_sequence="12")) == "sequence"
    gen = reprocess.new_generation(T0.replace(tzinfo=UTC).timestamp())
    assert gen.startswith("g20261126T070000") and len(gen) == 20


def test_reprocess_and_redrive_are_commands():
    from shardline import cli

    assert {"reprocess", "redrive"} <= set(cli.COMMANDS)
    from shardline.exitcodes import ExitCode

    assert cli.main(["reprocess", "--all-shards", "--reason", "x"]) == ExitCode.USAGE


def test_a_run_checks_the_versions_its_batches_were_staged_with():
    from shardline.controlstore import MemoryStore
    from shardline.settings import Settings

    settings = Settings().replace(**{"s3.prefix": "p"})
    batches = [codec.Batch("s", "sh", [rec(i)]) for i in range(60)]
    keep: list = []
    assert list(reprocess.sampled(iter(batches), keep)) == batches
    assert keep == batches[:25] + batches[-25:]
    store = MemoryStore(lambda: 0.0)
    for i, b in enumerate(keep):
        key = layout.staged_key("p", "page_views", b, "g1")
        store.record_file(StagedFile(
            s3_key=key, target_table="page_views", stream="s", shard_id="sh",
            first_sequence="1", first_sub_sequence=0, last_sequence="1", last_sub_sequence=0,
            row_count=1, byte_count=1, staged_at=T0, generation="g1",
            transform_version="v1" if i < 3 else "v2"))
    assert reprocess.wrong_versions(store, settings, "g1", keep, "v2") == {"v1": 3}
    assert reprocess.wrong_versions(store, settings, "g1", keep[3:], "v2") == {}
