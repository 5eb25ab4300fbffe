"""The reconciliation rule (``shardline.reconcile.rule``) on hand-made counts, and the
ledger's part of the gathering (``sources.add_ledger``) on ledger entries."""
from __future__ import annotations

from datetime import datetime, timedelta

from shardline.reconcile.rule import HourCounts, alert_lines, judge, summary
from shardline.reconcile.sources import add_ledger
from shardline.records.ledger import StagedFile, epoch_hour, format_hour_counts

H = datetime(2027, 3, 1, 10)
NOW = H + timedelta(hours=3)
GRACE = timedelta(minutes=30)


def one(c: HourCounts, *, lake: bool = False, now: datetime = NOW):
    (v,) = judge({H: c}, now=now, grace=GRACE, has_lake=lake)
    return v


def test_duplicates_dropped_by_the_merge_agree() -> None:
    # 105 staged, 5 were producer retries the merge dropped: 100 rows, as it should be
    c = HourCounts(staged=105, record_staged=105, inserted=100, warehouse=100, lake=100)
    v = one(c, lake=True)
    assert (v.state, v.dropped, v.warehouse_diff, v.lake_diff) == ("agree", 5, 0, 0)


def test_a_lost_or_doubled_row_disagrees() -> None:
    lost = one(HourCounts(staged=105, record_staged=105, inserted=100, warehouse=99))
    doubled = one(HourCounts(staged=105, record_staged=105, inserted=100, warehouse=101))
    assert (lost.state, lost.warehouse_diff) == ("disagree", -1)
    assert (doubled.state, doubled.warehouse_diff) == ("disagree", 1)
    # a load the record does not hold (rows the ledger says loaded, never counted in)
    unrecorded = one(HourCounts(staged=110, record_staged=100, inserted=100, warehouse=100))
    assert (unrecorded.state, unrecorded.warehouse_diff) == ("disagree", -10)


def test_the_lake_is_compared_with_the_warehouse_plus_what_retention_took() -> None:
    c = HourCounts(staged=100, record_staged=100, inserted=100, warehouse=100, lake=98)
    v = one(c, lake=True)
    assert (v.state, v.lake_diff) == ("disagree", -2)
    assert "lake has 98 rows, expected 100 (-2)" in alert_lines("t", [v])[0]
    retired = one(HourCounts(staged=100, record_staged=100, inserted=100, retired=100,
                             warehouse=0, lake=100), lake=True)
    assert (retired.state, retired.expected_warehouse) == ("agree", 0)


def test_reprocess_replaced_rows_agree() -> None:
    # 100 loaded, then a reprocess staged 100 again, removed the 100 and inserted 90
    c = HourCounts(staged=200, record_staged=200, inserted=190, replaced=100, warehouse=90)
    assert one(c).state == "agree"


def test_only_settled_hours_are_judged() -> None:
    bad = HourCounts(staged=10, record_staged=10, inserted=10, warehouse=0)
    assert one(bad, now=H + timedelta(hours=1, minutes=29)).state == "pending"  # grace
    assert one(bad, now=H + timedelta(hours=1, minutes=31)).state == "disagree"
    assert one(HourCounts(staged=10, pending=5, warehouse=0)).state == "pending"
    assert one(HourCounts(blocked=True)).state == "pending"  # e.g. the lake is behind
    assert one(HourCounts(unknown=True, warehouse=3)).state == "unknown"


def test_summary_names_the_lake_not_configured() -> None:
    v = one(HourCounts(staged=1, record_staged=1, inserted=1, warehouse=0))
    s = summary("page_views", [v], has_lake=False)
    assert s["lake"] == "not configured" and s["lake_diff_rows"] is None
    assert s["warehouse_diff_rows"] == -1 and s["hours"]["disagree"] == 1


def _file(key: str, state: str, counts: dict[datetime, int] | None,
          arrival: tuple[datetime, datetime] | None = None) -> StagedFile:
    ms = [int((a - datetime(1970, 1, 1)).total_seconds() * 1000) for a in arrival or ()]
    f = StagedFile(s3_key=key, target_table="t", stream="s", shard_id="sh", first_sequence="1",
                   first_sub_sequence=0, last_sequence="2", last_sub_sequence=0,
                   row_count=sum((counts or {}).values()) or 5, byte_count=1,
                   staged_at=NOW, state=state,
                   hour_counts=None if counts is None else format_hour_counts(
                       {epoch_hour(h): n for h, n in counts.items()}),
                   arrival_min_ms=ms[0] if ms else None, arrival_max_ms=ms[1] if ms else None)
    return f


def test_ledger_counts_by_state_and_pending_files_block_their_hours() -> None:
    h2 = H + timedelta(hours=1)
    out: dict[datetime, HourCounts] = {}
    add_ledger(out, [
        _file("a", "loaded", {H: 7, h2: 3}),
        _file("b", "quarantined", {H: 2}),
        _file("c", "pending", {h2: 4}, (h2, h2 + timedelta(minutes=5))),
        _file("d", "loaded", None, (H, h2)),  # before per-hour counts: both hours unknown
    ], H, H + timedelta(hours=5))
    assert (out[H].staged, out[H].quarantined, out[H].blocked, out[H].unknown) == (
        7, 2, False, True)
    assert (out[h2].staged, out[h2].pending, out[h2].blocked) == (3, 4, True)


def test_warehouse_retention_is_parsed_and_validated_in_the_tables_file() -> None:
    import pytest
    from importlib import resources

    from shardline import tables_file
    from shardline.errors import ConfigError

    base = (resources.files("shardline") / "default_tables.toml").read_text()

    def spec(retention: str):
        text = base.replace('dist_key = "event_id"\n',
                            f'dist_key = "event_id"\nwarehouse_retention = "{retention}"\n', 1)
        return tables_file.parse(text, "t.toml")["page_views"]

    assert spec("90d").warehouse_retention_h == 90 * 24
    assert spec("36h").warehouse_retention_h == 36
    assert tables_file.parse(base, "t.toml")["page_views"].warehouse_retention_h is None
    for bad in ("90 days", "0d", "-1d", "1.5d"):
        with pytest.raises(ConfigError, match=r"t.toml: \[tables.page_views\] "
                                              r"warehouse_retention: .* a whole number"):
            spec(bad)


def test_status_serve_reuses_the_last_reconciliation_for_refresh_s() -> None:
    from shardline.ops.status import ReconcileCache

    calls: list[float] = []

    def compute() -> list:
        calls.append(1)
        return [{"n": len(calls)}]

    cache = ReconcileCache(300)
    assert cache.get(1000.0, compute) == [{"n": 1}]
    assert cache.get(1299.0, compute) == [{"n": 1}]  # sampled again: not read again
    assert cache.get(1300.0, compute) == [{"n": 2}]
    assert ReconcileCache(0).get(5.0, compute) == [{"n": 3}]  # one-shot status: always read


def test_the_command_and_status_print_the_terms_of_a_disagreeing_hour() -> None:
    from shardline.ops.reconcile_cmd import render
    from shardline.ops.status_render import render_text
    from shardline.ops.status_report import build_report

    good = one(HourCounts(staged=105, record_staged=105, inserted=100, warehouse=100, lake=100),
               lake=True)
    bad = one(HourCounts(staged=50, record_staged=50, inserted=50, warehouse=47, lake=50),
              lake=True)
    text = render("page_views", [good, bad], True)
    lines = text.splitlines()
    assert lines[0] == "page_views: lake configured"
    assert lines[1].split() == ["HOUR", "(UTC)", "STAGED", "PENDING", "QUARANT", "DUPS",
                                "REPLACED", "RETIRED", "EXPECTED", "WAREHOUSE", "LAKE", "VERDICT"]
    assert lines[2].split()[2:] == ["105", "0", "0", "5", "0", "0", "100", "100", "100", "agree"]
    assert lines[3].split()[-6:] == ["50", "47", "(-3)", "50", "(+3)", "DISAGREE"]

    recon = [{**summary("page_views", [good, bad], has_lake=True),
              "alerts": alert_lines("page_views", [good, bad])}]
    report = build_report(now=NOW, streams=[], max_lag_ms=1, report_interval_s=1,
                          reconciliation=recon)
    out = render_text(report)
    assert "reconciliation page_views (lake configured): 1 hours agree, 1 disagree" in out
    assert "staged 50 - duplicates 0 - replaced 0 - retired 0 = 50; warehouse 47 (-3), " \
           "lake 50 (+3)" in out
    assert "page_views: hour 2027-03-01 10:00 UTC disagrees: warehouse has 47 rows, expected " \
           "50 (-3); lake has 50 rows, expected 47 (+3)" in out
