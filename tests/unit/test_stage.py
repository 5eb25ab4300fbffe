"""The stage job without the outside world: records -> CSV rows + dead letters, S3/ledger fakes."""
from __future__ import annotations

import base64
import gzip
import json
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from shardline import codec, layout, settings as settings_mod
from shardline.errors import ConfigError
from shardline.tables import PAGE_VIEWS
from tests.csvcheck import parse_csv
from shardline.workers import rows as rows_mod, stage as stage_mod
from tests.fakes import FakeS3
from shardline.records.ledger import LOADED, PENDING
from shardline.workers.rows import RowBuilder
from shardline.workers.stage import StageJob
from shardline.workers.transform import load_transform, page_view

UTC = timezone.utc
STAGED_AT = datetime(2026, 11, 26, 7, 0, 0, 123456, tzinfo=UTC)
ARRIVAL_MS = 1_764_140_400_250  # 2025-11-26 07:00:00.250 UTC
SHARD = "shardId-000000000003"
STREAM = "events"


def seq(n: int) -> str:
    return f"4959{n:052d}"


def good_event(i: int = 0, **over) -> dict:
    e = {
        "event_id": f"00000000-0000-4000-8000-{i:012d}",
        "occurred_at": "2026-11-26T12:30:00.5+05:30",
        "url": f"https://shop.example.com/p/{i}?color=red",
        "referrer": None,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        "ip": "198.51.100.42",
        "user_id": None,
        "session_id": f"s-{i}",
    }
    e.update(over)
    return e


def enc(obj, **kw) -> bytes:
    return json.dumps(obj, **kw).encode("utf-8")


def make_batch(datas: list[bytes], shard: str = SHARD, stream: str = STREAM) -> codec.Batch:
    records = [codec.Record(seq(i + 1), 0, f"pk-{i}", d, ARRIVAL_MS + i) for i, d in
               enumerate(datas)]
    return codec.Batch(stream, shard, records)


def expected_row(event: dict, rec: codec.Record, staged_at: datetime = STAGED_AT) -> list:
    derived = page_view(event)
    derived["occurred_at"] = derived["occurred_at"].replace(tzinfo=None).isoformat(
        " ", "microseconds")
    arrival = datetime.fromtimestamp(rec.arrival_ms / 1000, UTC).replace(tzinfo=None)
    derived.update(shard_id=SHARD, sequence_number=rec.sequence_number,
                   sub_sequence_number=str(rec.sub_sequence_number),
                   arrival_time=arrival.isoformat(" ", "microseconds"),
                   staged_at=staged_at.replace(tzinfo=None).isoformat(" ", "microseconds"))
    return [derived[name] for name in PAGE_VIEWS.column_names]


def build(datas, transform=page_view):
    batch = make_batch(datas)
    return batch, RowBuilder(PAGE_VIEWS, transform).build(batch, STAGED_AT)


# -- good rows --------------------------------------------------------------------
def test_good_row_in_column_order():
    batch, staged = build([enc(good_event(1))])
    assert staged.rows == 1 and staged.dead_letters == []
    rows = parse_csv(staged.csv_text)
    assert rows == [expected_row(good_event(1), batch.records[0])]
    row = dict(zip(PAGE_VIEWS.column_names, rows[0], strict=True))
    assert row["occurred_at"] == "2026-11-26 07:00:00.500000"
    assert row["arrival_time"] == "2025-11-26 07:00:00.250000"
    assert row["staged_at"] == "2026-11-26 07:00:00.123456"
    assert row["url_query"] == "color=red" and row["referrer"] is None
    assert row["sequence_number"] == seq(1) and row["sub_sequence_number"] == "0"


ODD = [
    'He said "hi", then left',
    "comma,separated,,values",
    "tab\there\tand\\backslash\\",
    "line1\nline2\r\nline3\rend",
    "ctrl \x01\x02\x1b\x1f\x7f\x85 chars",
    "emoji 😀🎉 and 𝄞",
    "non-ASCII: café naïve Ελληνικά 日本語 עברית",
    "\\N",  # the text \N, not NULL
    "",
    '"',
    ' leading and trailing spaces ',
    "'single' ; semicolon | pipe",
]


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_odd_values_survive_exactly(ensure_ascii):
    events = []
    for i, text in enumerate(ODD):
        events.append(good_event(i, user_agent=text, session_id=text, user_id=text,
                                 referrer=text or None,
                                 url=f"https://x.example/{i}?q=%22a,b%22"))
    batch, staged = build([enc(e, ensure_ascii=ensure_ascii) for e in events])
    assert staged.dead_letters == []
    rows = parse_csv(staged.csv_text)
    assert len(rows) == len(ODD)
    names = PAGE_VIEWS.column_names
    for text, row, event, rec in zip(ODD, rows, events, batch.records, strict=True):
        assert row == expected_row(event, rec)
        got = dict(zip(names, row, strict=True))
        assert got["user_agent"] == text and got["session_id"] == text
        assert got["user_id"] == text  # "\\N" stays text, "" stays the empty string


def test_gzip_round_trip_and_deterministic():
    _, staged = build([enc(good_event(i, user_agent="é\n\"x\"")) for i in range(20)])
    a = stage_mod.gzip_bytes(staged.csv_text)
    assert a == stage_mod.gzip_bytes(staged.csv_text)
    assert gzip.decompress(a).decode("utf-8") == staged.csv_text


# -- dead letters -----------------------------------------------------------------------
def _utf16() -> bytes:
    return json.dumps(good_event()).encode("utf-16")


MALFORMED = [
    (b"\xff\xfe{\"a\": 1}", "invalid UTF-8: invalid start byte at byte 0"),
    (b'{"event_id": "caf\xc3"}', "invalid UTF-8: invalid continuation byte at byte 17"),
    (_utf16(), "invalid UTF-8"),
    (b"", "not JSON: Expecting value"),
    (b'{"event_id": ', "not JSON: Expecting value"),
    (b"{'single': 'quotes'}", "not JSON: Expecting property name"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON: maximum recursion"),
    (b"[1, 2]", "not a JSON object: got array"),
    (b'"just a string"', "not a JSON object: got string"),
    (b"42", "not a JSON object: got number"),
    (b"null", "not a JSON object: got null"),
    (b"true", "not a JSON object: got boolean"),
    (enc({k: v for k, v in good_event().items() if k != "url"}),
     "transform: BadRecord: url: missing"),
    (enc(good_event(ip=12)), "transform: BadRecord: ip: expected a string, got int"),
    (enc(good_event(session_id=None)), "transform: BadRecord: session_id: expected a string"),
    (enc(good_event(occurred_at="2026-11-26T10:00:00")),
     "transform: BadRecord: occurred_at: no time zone"),
    (enc(good_event(occurred_at="soon")), "transform: BadRecord: occurred_at: not an ISO-8601"),
    (enc(good_event(url="mailto:a@b.c")), "transform: BadRecord: url: not an absolute http(s)"),
    (enc(good_event(ip="300.1.1.1")), "transform: BadRecord: ip: not an IP address"),
    (enc(good_event(event_id="123")), "transform: BadRecord: event_id: not a UUID"),
    (enc(good_event(user_agent="é" * 513)),
     "column user_agent: 1026 UTF-8 bytes, over the limit of 1024"),
    (enc(good_event(user_agent="a" * 1025)),
     "column user_agent: 1025 UTF-8 bytes, over the limit of 1024"),
    (enc(good_event(user_id="😀" * 33)), "column user_id: 132 UTF-8 bytes, over the limit of 128"),
    (enc(good_event(url="https://" + "h" * 256 + ".example/")),
     "column url_host: 264 UTF-8 bytes, over the limit of 255"),
    (enc(good_event(url="https://x.example/" + "p" * 2100)), "column url: 2118 UTF-8 bytes"),
    (enc(good_event(session_id="a\x00b")), "column session_id: contains a NUL character"),
    (enc(good_event(user_id="\x00")), "column user_id: contains a NUL character"),
    (enc(good_event(referrer="https://r.example/\x00")),
     "column referrer: contains a NUL character"),
    (b'{"event_id": "00000000-0000-4000-8000-000000000000", "occurred_at": '
     b'"2026-11-26T10:00:00Z", "url": "https://x.example/", "user_agent": "\\ud800", '
     b'"ip": "1.2.3.4", "session_id": "s"}',
     "column user_agent: not encodable as UTF-8"),
]


@pytest.mark.parametrize("data, reason", MALFORMED,
                         ids=[f"{i}-{r.split(':')[0]}" for i, (_, r) in enumerate(MALFORMED)])
def test_malformed_record_is_a_dead_letter(data, reason):
    batch, staged = build([enc(good_event(1)), data, enc(good_event(2))])
    assert staged.rows == 2, "a bad record never fails or drops its neighbours"
    assert len(staged.dead_letters) == 1
    dl = staged.dead_letters[0]
    assert dl["reason"].startswith(reason), dl["reason"]
    rec = batch.records[1]
    assert base64.b64decode(dl["data_b64"]) == data
    assert dl == {"data_b64": dl["data_b64"], "shard_id": SHARD,
                  "sequence_number": rec.sequence_number, "sub_sequence_number": 0,
                  "partition_key": "pk-1", "arrival_time": "2025-11-26T07:00:00.251000Z",
                  "reason": dl["reason"]}
    json.dumps(dl)  # serialisable as one JSON line


def test_dead_letter_lines_are_json_lines():
    _, staged = build([b"nope", b"[]", enc(good_event(1))])
    text = rows_mod.dead_letter_lines(staged.dead_letters)
    lines = text.splitlines()
    assert len(lines) == 2 and text.endswith("\n")
    assert [json.loads(line)["reason"].split(":")[0] for line in lines] == ["not JSON",
                                                                      "not a JSON object"]


# -- the transform contract, checked by the worker ---------------------------------------
def _derived(**over):
    d = page_view(good_event(1))
    d.update(over)
    return d


@pytest.mark.parametrize("result, reason", [
    (lambda e: [1], "transform: returned list, not a dict"),
    (lambda e: None, "transform: returned null, not a dict"),
    (lambda e: _derived(bogus=1), "transform: returned unknown column(s) bogus"),
    (lambda e: _derived(shard_id="x"), "transform: returned unknown column(s) shard_id"),
    (lambda e: {k: v for k, v in _derived().items() if k != "device_class"},
     "column device_class: missing (NOT NULL)"),
    (lambda e: _derived(occurred_at=datetime(2026, 1, 1)),
     "column occurred_at: naive datetime"),
    (lambda e: _derived(occurred_at="2026-01-01 00:00:00"),
     "column occurred_at: expected a datetime, got str"),
    (lambda e: _derived(url_host=42), "column url_host: expected text, got int"),
    (lambda e: _derived(user_id=b"bytes"), "column user_id: expected text, got bytes"),
    (lambda e: {}["missing"], "transform: KeyError: 'missing'"),
    (lambda e: 1 / 0, "transform: ZeroDivisionError: division by zero"),
])
def test_transform_output_checked(result, reason):
    _, staged = build([enc(good_event(1))], transform=result)
    assert staged.rows == 0
    assert staged.dead_letters[0]["reason"].startswith(reason), staged.dead_letters[0]["reason"]


def test_transform_aware_non_utc_datetime_converted():
    from datetime import timedelta

    ist = timezone(timedelta(hours=5, minutes=30))
    _, staged = build([enc(good_event(1))], transform=lambda e: _derived(
        occurred_at=datetime(2026, 1, 1, 3, 0, tzinfo=ist)))
    row = dict(zip(PAGE_VIEWS.column_names, parse_csv(staged.csv_text)[0], strict=True))
    assert row["occurred_at"] == "2025-12-31 21:30:00.000000"


# -- keys ---------------------------------------------------------------------------
def test_keys_follow_the_contract():
    batch = make_batch([b"a", b"b", b"c"])
    rng = f"{seq(1)}-0_{seq(3)}-0"
    assert layout.staged_key("pre/fix/", "page_views", batch) == \
        f"pre/fix/staged/page_views/{STREAM}/{SHARD}/{rng}.csv.gz"
    assert layout.dead_letter_key("pre", batch) == \
        f"pre/dead-letter/{STREAM}/{SHARD}/{rng}.jsonl.gz"
    assert layout.staged_key("", "t", batch) == f"staged/t/{STREAM}/{SHARD}/{rng}.csv.gz"


# -- StageJob with fake S3 and ledger ----------------------------------------------------------
class FakeLedger:
    def __init__(self, fail: Exception | None = None):
        self.rows: dict[str, object] = {}
        self.fail = fail
        self.closed = False

    def record_file(self, entry):
        if self.fail:
            raise self.fail
        if entry.s3_key in self.rows:
            return False
        self.rows[entry.s3_key] = entry
        return True

    def get_file(self, s3_key):  # ``fail`` is for the write: the read before it succeeds
        return self.rows.get(s3_key)

    def close(self):
        self.closed = True


def job_settings(**over):
    # the archive has tests of its own (test_stage_archive_and_reprocess_keys); off here so
    # the object lists below stay the staged and dead-letter objects
    base = {"s3.bucket": "bkt", "s3.prefix": "pfx", "warehouse.dsn": "host=nowhere",
            "s3.archive": "false"}
    base.update(over)
    return settings_mod.Settings().replace(**base)


def make_job(s3=None, ledger=None, **settings_over):
    return StageJob(job_settings(**settings_over), s3=s3 or FakeS3(bucket="bkt"),
                    ledger=ledger or FakeLedger(),
                    clock=lambda: STAGED_AT.timestamp())


def test_job_result_objects_and_ledger():
    datas = [enc(good_event(i)) for i in range(5)] + [b"not json", b"[]"]
    batch = make_batch(datas)
    job = make_job()
    assert job.run(codec.encode(batch)) == b""  # completing is the answer: nobody reads a result
    rng = f"{seq(1)}-0_{seq(7)}-0"
    key = f"pfx/staged/page_views/{STREAM}/{SHARD}/{rng}.csv.gz"
    dl_key = f"pfx/dead-letter/{STREAM}/{SHARD}/{rng}.jsonl.gz"
    assert list(job.ledger.rows) == [key]
    assert set(job.s3.objects) == {key, dl_key}
    rows = parse_csv(gzip.decompress(job.s3.objects[key]).decode())
    assert rows == [expected_row(good_event(i), batch.records[i]) for i in range(5)]
    dls = [json.loads(line) for line in gzip.decompress(job.s3.objects[dl_key]).splitlines()]
    assert [d["sequence_number"] for d in dls] == [seq(6), seq(7)]
    entry = job.ledger.rows[key]
    assert (entry.row_count, entry.dead_letter_count, entry.dead_letter_key, entry.state) == \
        (5, 2, dl_key, PENDING)
    assert entry.byte_count == len(job.s3.objects[key])
    assert (entry.first_sequence, entry.last_sequence, entry.stream, entry.shard_id,
            entry.target_table) == (seq(1), seq(7), STREAM, SHARD, "page_views")
    assert entry.staged_at == STAGED_AT.replace(tzinfo=None)


def test_a_lake_tables_file_is_lake_pending_and_no_other_is():
    job = make_job(**{"lake.tables": "page_views"})
    job.run(codec.encode(make_batch([enc(good_event(1))])))
    (entry,) = job.ledger.rows.values()
    assert (entry.state, entry.lake_state, entry.lake_load_id) == (PENDING, PENDING, None)
    empty = make_job(**{"lake.tables": "page_views"})  # no good rows: nothing for the lake
    empty.run(codec.encode(make_batch([b"x"])))
    assert [e.lake_state for e in empty.ledger.rows.values()] == [None]
    off = make_job()  # lake.tables empty: no lake state at all
    off.run(codec.encode(make_batch([enc(good_event(1))])))
    assert [e.lake_state for e in off.ledger.rows.values()] == [None]
    with pytest.raises(ConfigError, match="clickz"):
        make_job(**{"lake.tables": "clickz"})


def test_job_without_bad_records_has_no_dead_letter_object():
    job = make_job()
    assert job.run(codec.encode(make_batch([enc(good_event(1))]))) == b""
    (entry,) = job.ledger.rows.values()
    assert entry.dead_letter_count == 0 and entry.dead_letter_key is None
    assert list(job.s3.objects) == [entry.s3_key]


def test_job_with_only_bad_records_writes_no_staged_object():
    job = make_job()
    assert job.run(codec.encode(make_batch([b"x", b"y"]))) == b""
    (entry,) = job.ledger.rows.values()
    assert entry.dead_letter_key is not None
    assert list(job.s3.objects) == [entry.dead_letter_key]
    assert (entry.row_count, entry.byte_count, entry.state, entry.dead_letter_count) == \
        (0, 0, LOADED, 2)
    assert entry.params()[14] == entry.staged_at  # loaded_at set: nothing to load


def test_retried_job_overwrites_same_object_and_keeps_one_ledger_row():
    job = make_job()
    payload = codec.encode(make_batch([enc(good_event(1)), b"bad"]))
    job.ledger.fail = ConnectionError("store down")  # objects written, ledger row not
    with pytest.raises(ConnectionError):
        job.run(payload)
    first = dict(job.s3.objects)
    job.ledger.fail = None
    assert job.run(payload) == b""
    assert job.s3.objects == first  # same keys, same bytes (same clock): overwritten
    assert len(job.s3.objects) == 2 and len(job.s3.puts) == 4  # overwritten, not added
    assert len(job.ledger.rows) == 1


def test_batch_with_a_ledger_entry_writes_nothing_again():
    """A job retry after success, or a replay re-reading the same boundaries with another
    transform: the entry (maybe loaded) and its object stay as they are."""
    job = make_job()
    payload = codec.encode(make_batch([enc(good_event(1)), b"bad"]))
    assert job.run(payload) == b""
    first = dict(job.s3.objects)
    job.builder.transform = lambda event: 1 / 0  # a new transform would reject everything
    assert job.run(payload) == b""
    assert job.s3.objects == first and len(job.s3.puts) == 2
    assert len(job.ledger.rows) == 1


def test_s3_failure_fails_the_job_before_the_ledger():
    ledger = FakeLedger()
    job = make_job(s3=FakeS3(bucket="bkt", fail=ConnectionError("s3 down")), ledger=ledger)
    with pytest.raises(ConnectionError):
        job.run(codec.encode(make_batch([enc(good_event(1))])))
    assert ledger.rows == {}


def test_ledger_failure_fails_the_job():
    from shardline.errors import ServiceUnavailable

    job = make_job(ledger=FakeLedger(fail=ServiceUnavailable("warehouse down")))
    with pytest.raises(ServiceUnavailable):
        job.run(codec.encode(make_batch([enc(good_event(1))])))


def test_bad_payload_fails_the_job():
    job = make_job()
    with pytest.raises(codec.CodecError):
        job.run(b"garbage")


# -- pluggable transform setting -------------------------------------------------------------
@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "sl_test_plugin.py").write_text(textwrap.dedent("""
        from shardline.workers.transform import page_view

        NOT_CALLABLE = 42

        def shout(event):
            row = page_view(event)
            row["session_id"] = row["session_id"].upper()
            return row

        def picky(event):
            if event.get("user_id") is None:
                raise ValueError("anonymous views are not wanted")
            return page_view(event)
    """))
    (tmp_path / "sl_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "sl_test_plugin"
    for name in ("sl_test_plugin", "sl_broken_plugin"):
        sys.modules.pop(name, None)


def test_default_transform_setting():
    assert load_transform("shardline.workers.transform:page_view") is page_view


def test_plugin_transform_good(plugin_module):
    job = make_job(**{"worker.transform": f"{plugin_module}:shout"})
    job.run(codec.encode(make_batch([enc(good_event(1, session_id="abc"))])))
    (entry,) = job.ledger.rows.values()
    text = gzip.decompress(job.s3.objects[entry.s3_key]).decode()
    row = dict(zip(PAGE_VIEWS.column_names, parse_csv(text)[0], strict=True))
    assert row["session_id"] == "ABC"


def test_plugin_transform_rejecting(plugin_module):
    job = make_job(**{"worker.transform": f"{plugin_module}:picky"})
    batch = make_batch([enc(good_event(1)), enc(good_event(2, user_id="u2"))])
    job.run(codec.encode(batch))
    (entry,) = job.ledger.rows.values()
    assert (entry.row_count, entry.dead_letter_count) == (1, 1)
    dl = json.loads(gzip.decompress(job.s3.objects[entry.dead_letter_key]))
    assert dl["reason"] == "transform: ValueError: anonymous views are not wanted"


@pytest.mark.parametrize("path, message", [
    ("no_such_module_xyz:f", "cannot import no_such_module_xyz: ModuleNotFoundError"),
    ("sl_broken_plugin:f", "cannot import sl_broken_plugin: RuntimeError: boom at import"),
    ("sl_test_plugin:missing", "has no attribute missing"),
    ("sl_test_plugin:NOT_CALLABLE", "NOT_CALLABLE is a int, not a callable"),
])
def test_plugin_transform_bad_setting(plugin_module, path, message):
    with pytest.raises(ConfigError) as info:
        make_job(**{"worker.transform": path})
    assert "worker.transform" in str(info.value) and message in str(info.value)


def test_bad_transform_setting_stops_worker_with_exit_78(monkeypatch, capsys, tmp_path):
    from shardline import cli

    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("SHARDLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHARDLINE_S3_BUCKET", "bkt")
    monkeypatch.setenv("SHARDLINE_WAREHOUSE_DSN", "host=127.0.0.1 port=1")
    monkeypatch.setenv("SHARDLINE_WORKER_TRANSFORM", "no_such_module_xyz:fn")
    assert cli.main(["worker", "--functions", "stage"]) == 78
    err = capsys.readouterr().err
    assert "configuration error" in err and "worker.transform" in err

    monkeypatch.setenv("SHARDLINE_WORKER_TRANSFORM", "not a path")
    assert cli.main(["worker", "--functions", "stage"]) == 78
    assert "worker.transform" in capsys.readouterr().err


def test_unknown_function_name_is_a_config_error(monkeypatch, capsys, tmp_path):
    from shardline import cli
    from shardline.workers.main import parse_functions

    assert parse_functions("stage, stage") == ["stage"]
    with pytest.raises(ConfigError, match="unknown worker function.*load.*known: stage"):
        parse_functions("stage,load")
    with pytest.raises(ConfigError, match="at least one"):
        parse_functions(" , ")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["worker", "--functions", "stage,bogus"]) == 78
    assert "unknown worker function(s) bogus" in capsys.readouterr().err


def test_absurd_arrival_time_is_a_dead_letter_not_a_failed_batch():
    records = [codec.Record(seq(1), 0, "pk", enc(good_event(1)), 2 ** 63),
               codec.Record(seq(2), 0, "pk", enc(good_event(2)), ARRIVAL_MS)]
    staged = RowBuilder(PAGE_VIEWS, page_view).build(codec.Batch(STREAM, SHARD, records),
                                                     STAGED_AT)
    assert staged.rows == 1
    (dl,) = staged.dead_letters
    assert dl["reason"].startswith("arrival time") and dl["arrival_time"] == str(2 ** 63)


def test_long_exception_message_is_cut_in_the_reason():
    def noisy(event):
        raise ValueError("x" * 10_000)

    _, staged = build([enc(good_event(1))], transform=noisy)
    assert len(staged.dead_letters[0]["reason"]) == len("transform: ValueError: ") + 500


def test_on_redshift_a_value_equal_to_the_null_marker_is_a_dead_letter():
    """Redshift would load a quoted "\\N" as NULL: dead letter with the reason; PostgreSQL
    (the local stand-in) keeps it as text."""
    datas = [enc(good_event(1, user_id="\\N")), enc(good_event(2))]
    batch = make_batch(datas)
    job = make_job(**{"warehouse.dialect": "redshift",
                      "warehouse.iam_role": "arn:aws:iam::123456789012:role/r"})
    job.run(codec.encode(batch))
    (entry,) = job.ledger.rows.values()
    assert (entry.row_count, entry.dead_letter_count) == (1, 1)
    dl = json.loads(gzip.decompress(job.s3.objects[entry.dead_letter_key]).splitlines()[0])
    assert "NULL marker" in dl["reason"] and "user_id" in dl["reason"]
    pg = make_job()
    pg.run(codec.encode(batch))
    (entry,) = pg.ledger.rows.values()
    assert (entry.row_count, entry.dead_letter_count) == (2, 0)


def test_ledger_entry_counts_good_rows_per_hour_of_arrival():
    """A batch spanning an hour boundary: each hour gets its own good rows (a dead letter
    counts in none), which reconciliation compares with the targets' rows of that hour."""
    from shardline.records.ledger import parse_hour_counts

    hour_ms = 3_600_000
    boundary = (ARRIVAL_MS // hour_ms + 1) * hour_ms
    datas = [enc(good_event(i)) for i in range(5)] + [b"not json"]
    arrivals = [boundary - 2, boundary - 1, boundary, boundary + 1, boundary + 2, boundary - 3]
    pairs = enumerate(zip(datas, arrivals, strict=True))
    batch = codec.Batch(STREAM, SHARD, [codec.Record(seq(i + 1), 0, f"pk-{i}", d, a)
                                        for i, (d, a) in pairs])
    job = make_job()
    assert job.run(codec.encode(batch)) == b""
    (entry,) = job.ledger.rows.values()
    first = datetime(1970, 1, 1) + timedelta(milliseconds=boundary - hour_ms)
    assert parse_hour_counts(entry.hour_counts) == {first: 2, first + timedelta(hours=1): 3}
    assert entry.row_count == 5
