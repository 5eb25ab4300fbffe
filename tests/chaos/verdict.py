"""The campaign's checks: full sets compared, then one line that says what survived.

- every valid event_id produced is in the target table exactly once, and nothing else is;
- every bad record (by content digest) is in a dead-letter object with a reason, and no
  valid record is;
- valid events carrying injection-looking strings are stored exactly as the transform
  says (content only ever travels as data);
- after the mid-run deploy and reprocess: every stored row is what the deployed transform
  (``tests.chaos.transforms``) makes: its version, its derived column (no stale row);
- nothing is wedged: every shard's checkpoint is at the end of its shard, no staged
  file is pending, no Gearman job is queued, every supervisord program is RUNNING.
"""
from __future__ import annotations

import base64
import collections
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests import pipeline
from tests.chaos.corpus import HOSTILE_COLUMNS, Ledger, digest


@dataclass
class Verdict:
    seed: int
    produced_valid: int = 0
    produced_bad: int = 0
    put_twice: int = 0
    loaded_rows: int = 0
    missing: int = 0
    duplicated: int = 0
    unexpected: int = 0
    dead_lettered: int = 0
    dead_missing: int = 0
    dead_unexpected: int = 0
    dead_without_reason: int = 0
    hostile: int = 0
    hostile_mismatched: int = 0
    reprocessed: bool = False  # the mid-run reprocess ran: rows checked against its transform
    stale_rows: int = 0  # rows not made by the deployed transform
    lake: bool = False  # page_views also went to the lake: checked like the warehouse
    lake_rows: int = 0
    lake_missing: int = 0
    lake_duplicated: int = 0
    lake_unexpected: int = 0
    lake_equals_warehouse: bool = False
    tail: bool = False  # a tail source wrote access-log lines beside the producer
    tail_lines: int = 0  # well-formed lines written
    tail_malformed: int = 0
    tail_rows: int = 0
    tail_missing: int = 0
    tail_duplicated: int = 0
    tail_unexpected: int = 0
    tail_mismatched: int = 0  # rows whose host, event id or content is not the line's
    tail_dead_lettered: int = 0
    tail_dead_missing: int = 0
    tail_dead_unexpected: int = 0
    tail_dead_wrong: int = 0
    tail_kills: int = 0
    tail_rotations: int = 0
    relay: bool = False  # a client sent page views through `shardline relay`
    relay_sent: int = 0
    relay_acked: int = 0  # answered OK: each must be exactly one row
    relay_missing: int = 0
    relay_duplicated: int = 0
    relay_unacked_landed: int = 0  # sent, no answer (a kill), landed once: allowed
    relay_refused: int = 0
    relay_kills: int = 0
    lagging_shards: list[str] = field(default_factory=list)
    stuck_programs: list[str] = field(default_factory=list)
    pending_files: int = 0
    queued_jobs: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    infra: dict[str, int] = field(default_factory=dict)
    reactions: dict[str, int] = field(default_factory=dict)
    chaos_s: float = 0.0
    settle_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected or self.dead_missing
                    or self.dead_unexpected or self.dead_without_reason
                    or self.hostile_mismatched or self.stale_rows or self.lagging_shards
                    or (self.lake and not self.lake_equals_warehouse)
                    or self.tail_missing or self.tail_duplicated or self.tail_unexpected
                    or self.tail_mismatched or self.tail_dead_missing
                    or self.tail_dead_unexpected or self.tail_dead_wrong
                    or self.relay_missing or self.relay_duplicated
                    or self.stuck_programs or self.pending_files or self.queued_jobs
                    or self.problems)

    def line(self) -> str:
        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

        return (f"chaos seed={self.seed}: {'PASS' if self.ok else 'FAIL'}: "
                f"produced {self.produced_valid + self.produced_bad:,} "
                f"({self.produced_valid:,} valid, {self.produced_bad:,} bad, "
                f"{self.put_twice:,} put twice), loaded {self.loaded_rows:,}, "
                f"dead-lettered {self.dead_lettered:,}, missing {self.missing}, "
                f"duplicated {self.duplicated}, unexpected {self.unexpected}, "
                f"dead-letters missing {self.dead_missing}, hostile strings "
                f"{self.hostile - self.hostile_mismatched}/{self.hostile} exact, "
                f"lagging shards {len(self.lagging_shards)}"
                + (f", reprocessed with {self.stale_rows} stale rows" if self.reprocessed else "")
                + (f"; lake {self.lake_rows:,} rows, missing {self.lake_missing}, duplicated "
                   f"{self.lake_duplicated}, unexpected {self.lake_unexpected}, "
                   f"{'equal to' if self.lake_equals_warehouse else 'DIFFERENT from'} the "
                   f"warehouse" if self.lake else "")
                + (f"; tail {self.tail_lines:,} lines + {self.tail_malformed} malformed "
                   f"({self.tail_rotations} rotations, {self.tail_kills} kills): rows "
                   f"{self.tail_rows:,}, missing {self.tail_missing}, duplicated "
                   f"{self.tail_duplicated}, dead letters {self.tail_dead_lettered}"
                   if self.tail else "")
                + (f"; relay {self.relay_acked:,} acknowledged of {self.relay_sent:,} sent "
                   f"({self.relay_kills} kills): missing {self.relay_missing}, duplicated "
                   f"{self.relay_duplicated}" if self.relay else "")
                + "; survived kills: "
                f"{counts(self.kills)}; outages: {counts(self.infra)}; kinesis faults: "
                f"{counts(self.faults)}; chaos {self.chaos_s:.0f} s, settled in "
                f"{self.settle_s:.0f} s")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "line": self.line()}


def check_rows(v: Verdict, ledger: Ledger, query: Callable[..., list[tuple]],
               others: frozenset[str] | set[str] = frozenset()) -> collections.Counter:
    """Compare the target table's event_ids with the valid events produced (full sets);
    ``others``: event_ids other sources sent (the relay's), checked by their source. The
    stored event_ids with their counts."""
    rows = collections.Counter(r[0] for r in query("SELECT event_id FROM page_views"))
    mine = collections.Counter({k: n for k, n in rows.items() if k not in others})
    v.loaded_rows = sum(mine.values())
    v.produced_valid, v.put_twice = len(ledger.good_ids), ledger.duplicates
    v.missing = len(ledger.good_ids - rows.keys())
    v.duplicated = sum(n - 1 for n in mine.values() if n > 1)
    v.unexpected = len(mine.keys() - ledger.good_ids)
    if v.missing:
        v.problems.append(f"missing e.g. {sorted(ledger.good_ids - rows.keys())[:3]}")
    if v.duplicated:
        v.problems.append(f"duplicated e.g. {[k for k, n in mine.items() if n > 1][:3]}")
    return rows


def check_hostile(v: Verdict, ledger: Ledger, query: Callable[..., list[tuple]]) -> None:
    """Injection-looking strings must come back exactly as the transform made them."""
    ids = list(ledger.hostile)
    v.hostile = len(ids)
    if not ids:
        return
    stored = {r[0]: dict(zip(HOSTILE_COLUMNS, r[1:], strict=True)) for r in query(
        f"SELECT event_id, {', '.join(HOSTILE_COLUMNS)} FROM page_views "
        f"WHERE event_id = ANY(%s)", (ids,))}
    bad = [i for i in ids if i in stored and stored[i] != ledger.hostile[i]]
    v.hostile_mismatched = len(bad)
    if bad:
        i = bad[0]
        v.problems.append(f"hostile row {i} stored {stored[i]!r}, expected {ledger.hostile[i]!r}")


def check_transform(v: Verdict, query: Callable[..., list[tuple]]) -> None:
    """After the reprocess, every row is the deployed transform's: its version, and its
    derived column recomputed from the row's own input column."""
    from shardline.transforms.page_views import device_class
    from tests.chaos import transforms

    v.reprocessed = True
    rows = query("SELECT event_id, transform_version, device_class, user_agent FROM page_views")
    stale = [r for r in rows if r[1] != transforms.VERSION or r[2] != device_class(r[3]).upper()]
    v.stale_rows = len(stale)
    if stale:
        v.problems.append(f"{len(stale)} rows not made by {transforms.VERSION}, e.g. "
                          f"{stale[0][:3]!r}")


def dead_letters(s3: Any, bucket: str, prefix: str) -> dict[tuple, dict]:
    """Every dead-letter entry under the prefix, by Kinesis position (re-staged batches
    can write one record into two objects: a position counts once)."""
    return {(d["shard_id"], d["sequence_number"], d["sub_sequence_number"]): d
            for d in pipeline.dead_letters(s3, bucket, prefix)}


def check_dead_letters(v: Verdict, ledger: Ledger, s3: Any, bucket: str, prefix: str,
                       other_source: Callable[[dict], bool] = lambda d: False) -> None:
    """The multiset of dead-lettered contents must equal the bad records produced (the
    entries ``other_source`` claims, such as the tail's, are checked by their source)."""
    entries = {k: d for k, d in dead_letters(s3, bucket, prefix).items()
               if not other_source(d)}
    found = collections.Counter(digest(base64.b64decode(d["data_b64"])) for d in entries.values())
    v.produced_bad = sum(ledger.bad.values())
    v.dead_lettered = len(entries)
    v.dead_missing = sum((ledger.bad - found).values())
    v.dead_unexpected = sum((found - ledger.bad).values())
    v.dead_without_reason = sum(1 for d in entries.values() if not d.get("reason"))
    if v.dead_unexpected:
        sample = next(d for d in entries.values()
                      if found[digest(base64.b64decode(d["data_b64"]))] > ledger.bad.get(
                          digest(base64.b64decode(d["data_b64"])), 0))
        v.problems.append(f"unexpected dead letter: {sample['reason']!r} "
                          f"{base64.b64decode(sample['data_b64'])[:200]!r}")


def lagging_shards(kinesis: Any, stream: str, checkpoints: dict[str, str]) -> list[str]:
    """Shards with records after their checkpoint (or records and no checkpoint)."""
    lagging = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        sid = shard["ShardId"]
        cp = checkpoints.get(sid)
        if cp == "SHARD_END":
            continue
        kw = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": cp}
              if cp else {"ShardIteratorType": "TRIM_HORIZON"})
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=sid, **kw)["ShardIterator"]
        if kinesis.get_records(ShardIterator=it, Limit=1)["Records"]:
            lagging.append(sid)
    return lagging


# How the fleet reacted, counted from its logs: evidence that the faults were felt and
# handled by the code paths meant for them (not part of pass/fail).
REACTIONS = {
    "consumer: batch job resubmitted": ("consumer-", r"batch job attempt \d+/\d+"),
    "consumer: GetRecords retried after an expired iterator":
        ("consumer-", r"after IteratorExpired"),
    "consumer: GetRecords retried after throttling": ("consumer-", r"after ThrottledError"),
    "consumer: GetRecords retried after a connection error or 5xx":
        ("consumer-", r"GetRecords retry \d+ after ServiceUnavailable"),
    "consumer: lease renewal retried": ("consumer-", r"lease renewal failed"),
    "stage worker: lost gearmand and reconnected": ("stage-worker", r"gearmand connection lost"),
    "stage worker: job failed, left to the consumer's retry": ("stage-worker", r"job failed"),
    "loader: load failed and retried": ("loader", r"load failed"),
    "lake loader: load failed and retried": ("lake-loader", r"lake load failed"),
    "lake loader: took over files a killed loader had committed":
        ("lake-loader", r"reconciled \d+ files the lake already held"),
    "supervisord: restart after SIGKILL": ("supervisord", r"terminated by SIGKILL"),
    "supervisord: restart after exit 69 (dependency down)": ("supervisord", r"exit status 69"),
    "supervisord: restart after exit 70 (batch kept failing)": ("supervisord", r"exit status 70"),
    "supervisord: restart after exit 75 (lease not yet free)": ("supervisord", r"exit status 75"),
}


def reactions(log_dir: Path) -> dict[str, int]:
    """Count the REACTIONS lines in the supervisord and program logs."""
    out = {}
    logs = sorted(log_dir.glob("*.log"))
    for name, (prefix, pattern) in REACTIONS.items():
        rx = re.compile(pattern)
        out[name] = sum(len(rx.findall(p.read_text(errors="replace")))
                        for p in logs if p.name.startswith(prefix))
    return out
