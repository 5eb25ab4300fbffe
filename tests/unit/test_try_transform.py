"""``shardline try-transform``: events from a JSON-lines file or the raw archive, through the
tables file's routing and transforms, offline: the rows and dead letters printed."""
from __future__ import annotations

import json
from pathlib import Path

from shardline import codec, layout
from shardline import settings as settings_mod
from shardline.cli import main
from shardline.controlstore.memory import MemoryStore
from shardline.exitcodes import ExitCode
from shardline.workers.stage import StageJob
from tests.fakes import FakeS3

ROOT = Path(__file__).resolve().parents[2]
CLICKS_FILE = ROOT / "examples" / "clicks" / "tables.toml"
UUID = "0F8FAD5B-D9CB-469F-A165-70867728950E"


def page_view(i: int, **over: object) -> dict:
    event = {"event_id": f"0f8fad5b-d9cb-469f-a165-{i:012d}",
             "occurred_at": "2026-11-26T10:15:30.250+05:30",
             "url": f"https://shop.example.com/p/{i}?color=blue", "referrer": None,
             "user_agent": "Mozilla/5.0 (X11; Linux)", "ip": "203.0.113.77", "user_id": None,
             "session_id": f"s-{i}"}
    event.update(over)
    return event


def click(**over: object) -> dict:
    event = {"type": "click", "event_id": UUID, "occurred_at": "2026-12-01T10:00:00Z",
             "session_id": "s", "url": "https://h.example/p", "element": "buy", "x": 3}
    event.update(over)
    return event


LINES = [json.dumps(page_view(1)), "", json.dumps(page_view(2, ip=12)), "not json",
         json.dumps(click()), json.dumps(click(x="3")), json.dumps(page_view(3))]


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_jsonl_rows_and_dead_letters_printed(tmp_path, capsys):
    code = main(["try-transform", "--set", f"tables.file={CLICKS_FILE}",
                 str(_write(tmp_path))])
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert "page_views: 2 row(s) (transform page_view-1)" in out
    assert "clicks: 1 row(s)" in out
    lines = out.splitlines()
    row1 = next(line for line in lines if line.strip().startswith("line 1 "))
    assert "0f8fad5b-d9cb-469f-a165-000000000001" in row1
    assert "2026-11-26 04:45:30.250000" in row1 and "203.0.113.0/24" in row1
    assert any(line.split()[:2] == ["line", "5"] and UUID.lower() in line for line in lines)
    dead = {" ".join(line.split()[:2]): line.split(None, 2)[2] for line in lines
            if line.startswith("  line ") and ("transform:" in line or "not JSON" in line)}
    assert dead == {"line 3": "transform: BadRecord: ip: expected a string, got int",
                    "line 4": "not JSON: Expecting value: line 1 column 1 (char 0)",
                    "line 6": "transform: BadRecord: x: expected an integer or null"}
    assert lines[-1] == "6 record(s): 3 row(s) (page_views 2, clicks 1), 3 dead letter(s)"


def test_jsonl_as_json_and_the_default_tables(tmp_path, capsys):
    assert main(["try-transform", "--json", str(_write(tmp_path))]) == ExitCode.OK
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 6 and out["transform_versions"] == {"page_views": "page_view-1"}
    rows = out["rows"]["page_views"]
    assert [r["source"] for r in rows] == ["line 1", "line 7"]
    assert rows[0]["row"]["url_path"] == "/p/1" and rows[0]["row"]["referrer"] is None
    # without the clicks table, click events go to page_views (the default route) and fail
    assert [(d["source"], d["reason"]) for d in out["dead_letters"]] == [
        ("line 3", "transform: BadRecord: ip: expected a string, got int"),
        ("line 4", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        ("line 5", "transform: BadRecord: user_agent: missing"),
        ("line 6", "transform: BadRecord: user_agent: missing")]


def test_bad_input_is_one_line_and_a_named_exit_code(tmp_path, capsys):
    events = _write(tmp_path)
    (tmp_path / "junk.slb.gz").write_bytes(b"not gzip")
    cases = [([str(tmp_path / "missing.jsonl")], ExitCode.USAGE, "cannot read"),
             ([], ExitCode.USAGE, "give either EVENTS.jsonl or --from-archive"),
             ([str(events), "--from-archive", str(tmp_path)], ExitCode.USAGE, "give either"),
             (["--against-warehouse", str(events)], ExitCode.USAGE, "needs records"),
             (["--from-archive", str(tmp_path / "none")], ExitCode.USAGE, "no such file"),
             (["--from-archive", str(tmp_path / "junk.slb.gz")], ExitCode.USAGE,
              "not a raw archive object"),
             (["--from-archive", str(events.parent / "empty")], ExitCode.USAGE, "no such"),
             (["--set", f"tables.file={tmp_path / 'nope.toml'}", str(events)],
              ExitCode.CONFIG, "tables.file")]
    for args, want, text in cases:
        assert main(["try-transform", *args]) == want, args
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, (args, err)
    (tmp_path / "empty").mkdir()
    assert main(["try-transform", "--from-archive", str(tmp_path / "empty")]) == ExitCode.USAGE
    assert "no archive objects" in capsys.readouterr().err


def _record(i: int, data: bytes) -> codec.Record:
    return codec.Record(f"4960{i:052d}", 0, f"k{i}", data, 1_764_576_000_000 + i)


def test_archive_written_by_the_stage_worker_read_back(tmp_path, capsys):
    """The stage worker's own archive objects, copied to disk as `aws s3 cp --recursive`
    would; two batches overlap (a replay), and every record comes out once."""
    settings = settings_mod.Settings().replace(**{
        "s3.bucket": "bkt", "s3.prefix": "p", "tables.file": str(CLICKS_FILE)})
    s3 = FakeS3(bucket="bkt")
    job = StageJob(settings, s3=s3, ledger=MemoryStore(), clock=lambda: 1_764_576_000.0)
    datas = [json.dumps(e).encode() for e in
             (page_view(0), click(), page_view(2, url="mailto:x"), page_view(3), click(y=1.5))]
    recs = [_record(i, d) for i, d in enumerate(datas)]
    job.stage(codec.Batch("s", "shardId-0", recs[:3]))
    job.stage(codec.Batch("s", "shardId-0", recs[1:]))  # overlaps the first
    job.stage(codec.Batch("s", "shardId-1", [_record(9, datas[0])]))
    archived = {k: v for k, v in s3.objects.items() if k.endswith(layout.ARCHIVE_SUFFIX)}
    assert len(archived) == 3
    for key, body in archived.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(body)

    code = main(["try-transform", "--json", "--set", f"tables.file={CLICKS_FILE}",
                 "--from-archive", str(tmp_path / "p" / "archive")])
    out = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK and out["records"] == 6
    pv = out["rows"]["page_views"]
    assert [r["source"] for r in pv] == [f"shardId-0 4960{0:052d}", f"shardId-0 4960{3:052d}",
                                         f"shardId-1 4960{9:052d}"]
    assert pv[0]["row"]["arrival_time"] == "2025-12-01 08:00:00.000000"
    assert [r["source"] for r in out["rows"]["clicks"]] == [f"shardId-0 4960{1:052d}"]
    assert [(d["sequence_number"], d["reason"]) for d in out["dead_letters"]] == [
        (f"4960{2:052d}", "transform: BadRecord: url: not an absolute http(s) URL: 'mailto:x'"),
        (f"4960{4:052d}", "transform: BadRecord: y: expected an integer or null")]
