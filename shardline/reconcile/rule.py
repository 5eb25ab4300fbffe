"""The reconciliation rule, pure: per-hour counts in, one verdict per hour out.

See the package docstring for the rule. No I/O here: ``shardline.reconcile.run`` gathers
the counts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Mapping

HOUR = timedelta(hours=1)

PENDING = "pending"  # not settled yet: judged later
UNKNOWN = "unknown"  # a file staged before per-hour counts touches it: not judged
AGREE = "agree"
DISAGREE = "disagree"


@dataclass(frozen=True)
class HourVerdict:
    """One table's hour: every count, and whether they agree."""

    hour: datetime  # naive UTC, the hour's start
    staged: int  # valid rows of loaded files (ledger)
    pending: int  # rows of files still pending (ledger)
    quarantined: int  # rows of quarantined files (ledger; an alert of their own)
    dropped: int  # duplicates the merges removed (load record: staged - inserted)
    replaced: int  # stored rows reprocess loads removed
    retired: int  # rows warehouse retention deleted
    warehouse: int  # rows in the table now
    lake: int | None  # rows in the lake now; None: no lake for this table
    state: str  # pending | unknown | agree | disagree

    @property
    def expected_warehouse(self) -> int:
        return self.staged - self.dropped - self.replaced - self.retired

    @property
    def warehouse_diff(self) -> int:
        """Rows the warehouse holds beyond what it should (negative: missing)."""
        return self.warehouse - self.expected_warehouse

    @property
    def lake_diff(self) -> int | None:
        """Rows the lake holds beyond the warehouse's (plus what retention took from it)."""
        return None if self.lake is None else self.lake - (self.warehouse + self.retired)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["hour"] = self.hour.strftime("%Y-%m-%dT%H:00:00Z")
        out.update(expected_warehouse=self.expected_warehouse,
                   warehouse_diff=self.warehouse_diff, lake_diff=self.lake_diff)
        return out


@dataclass
class HourCounts:
    """The raw counts of one hour, as gathered; ``judge`` turns them into a verdict."""

    staged: int = 0
    pending: int = 0
    quarantined: int = 0
    record_staged: int = 0
    inserted: int = 0
    replaced: int = 0
    retired: int = 0
    warehouse: int = 0
    lake: int = 0
    blocked: bool = False  # a pending file (of any target) touches the hour
    unknown: bool = False  # a file without per-hour counts touches it


def judge(hours: Mapping[datetime, HourCounts], *, now: datetime, grace: timedelta,
          has_lake: bool) -> list[HourVerdict]:
    """A verdict per hour, oldest first. ``now`` naive UTC."""
    out = []
    for hour in sorted(hours):
        c = hours[hour]
        v = HourVerdict(hour=hour, staged=c.staged, pending=c.pending,
                        quarantined=c.quarantined, dropped=c.record_staged - c.inserted,
                        replaced=c.replaced, retired=c.retired, warehouse=c.warehouse,
                        lake=c.lake if has_lake else None, state="")
        if c.blocked or c.pending or hour + HOUR + grace > now:
            state = PENDING
        elif c.unknown:
            state = UNKNOWN
        elif v.warehouse_diff or v.lake_diff:
            state = DISAGREE
        else:
            state = AGREE
        out.append(HourVerdict(**{**asdict(v), "state": state}))
    return out


def disagreeing(verdicts: list[HourVerdict]) -> list[HourVerdict]:
    return [v for v in verdicts if v.state == DISAGREE]


def summary(table: str, verdicts: list[HourVerdict], *, has_lake: bool) -> dict[str, object]:
    """One table's reconciliation as status shows it (JSON-ready): counts of hours by state,
    the summed differences of the settled hours, and each disagreeing hour in full."""
    bad = disagreeing(verdicts)
    states = {s: sum(1 for v in verdicts if v.state == s)
              for s in (AGREE, DISAGREE, PENDING, UNKNOWN)}
    return {
        "target_table": table,
        "lake": "configured" if has_lake else "not configured",
        "hours": states,
        "warehouse_diff_rows": sum(v.warehouse_diff for v in bad),
        "lake_diff_rows": sum(v.lake_diff or 0 for v in bad) if has_lake else None,
        "disagreeing": [v.to_dict() for v in bad],
    }


def alert_lines(table: str, verdicts: list[HourVerdict]) -> list[str]:
    """One alert per disagreeing hour, saying which target and by how many rows."""
    out = []
    for v in disagreeing(verdicts):
        hour = v.hour.strftime("%Y-%m-%d %H:00")
        parts = []
        if v.warehouse_diff:
            parts.append(f"warehouse has {v.warehouse} rows, expected {v.expected_warehouse} "
                         f"({v.warehouse_diff:+d})")
        if v.lake_diff:
            parts.append(f"lake has {v.lake} rows, expected {v.warehouse + v.retired} "
                         f"({v.lake_diff:+d})")
        out.append(f"{table}: hour {hour} UTC disagrees: {'; '.join(parts)}")
    return out
