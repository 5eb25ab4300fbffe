"""Write the stage path's goldens: ``python -m tests.golden.regen`` (from the repository root).

Run it deliberately, when a staging rule is meant to change, and review the diff of
``tests/golden/expected/`` in the commit: every changed byte there is a changed row or
reason in production. ``--corpus`` also rebuilds the input corpus from the seeded
generators of tests/stage_corpus.py (only when the corpus itself should change: a new
kind of input).

corpus/<case>.jsonl: a header line ``{"case", "tables"}`` (``default``: the packaged tables
file; ``golden``: tests/golden/tables.toml), then one record per line: its batch number,
shard, sequence and sub-sequence numbers, partition key, arrival time and data (base64;
``data_gz``: gzip'd first, for the large ones). corpus/codec.json: batch payloads and
damaged copies of one. expected/<case>.<table>.csv: the CSV rows of every batch, as staged
(UTF-8); expected/<case>.dead-letters.jsonl: the dead letters as the dead-letter object
holds them (the data of a record over 4 KB as a SHA-256); expected/codec.json: what
``codec.decode`` makes of each payload.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path

from shardline import codec, tables_file
from shardline.tables import Tables
from shardline.transforms.page_views import page_view
from shardline.workers.rows import RowBuilder, dead_letter_lines
from shardline.workers.transform import load_table_transforms
from tests import stage_corpus as corpus

HERE = Path(__file__).resolve().parent
CORPUS, EXPECTED = HERE / "corpus", HERE / "expected"
BATCH = 500
GZ_OVER = 4096  # data longer than this is stored gzip'd (near-1 MB and deeply nested records)
STREAM = "events"

Case = tuple[str, list[codec.Batch]]


# -- reading the committed corpus and staging it --------------------------------------
def tables(kind: str) -> Tables:
    return tables_file.load(None if kind == "default" else HERE / "tables.toml")


def read_case(path: Path) -> tuple[str, list[codec.Batch]]:
    """(tables kind, batches) of one corpus file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    batches: dict[int, codec.Batch] = {}
    for line in lines[1:]:
        r = json.loads(line)
        data = base64.b64decode(r["data"]) if "data" in r else \
            gzip.decompress(base64.b64decode(r["data_gz"]))
        batch = batches.setdefault(r["batch"], codec.Batch(STREAM, r["shard"], []))
        batch.records.append(codec.Record(r["seq"], r["sub"], r["pk"], data, r["arrival_ms"]))
    return header["tables"], [batches[i] for i in sorted(batches)]


def stage(kind: str, batches: list[codec.Batch]) -> dict[str, bytes]:
    """Output file suffix -> bytes: each table's CSV rows, then the dead letters.

    Staged in a thread of its own: a record nested about as deep as the recursion limit
    gets a reason that depends on how deep the caller's stack already is (which bracket
    json.loads was at when it gave up, or whether it gave up at all), and a new thread's
    stack is the same however the goldens are made or checked (regen, pytest)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_stage, kind, batches).result()


def _stage(kind: str, batches: list[codec.Batch]) -> dict[str, bytes]:
    t = tables(kind)
    builder = RowBuilder.routed(t, load_table_transforms(t))
    csv: dict[str, list[str]] = {name: [] for name in t.names}
    dead: list[dict] = []
    for batch in batches:
        routed = builder.build_tables(batch, corpus.STAGED_AT)
        for name, staged in routed.tables.items():
            csv[name].append(staged.csv_text)
        dead += routed.dead_letters
    out = {f"{name}.csv": "".join(parts).encode("utf-8", "surrogatepass")
           for name, parts in csv.items()}
    out["dead-letters.jsonl"] = dead_letter_lines([_elided(d) for d in dead]).encode("utf-8")
    return out


def _elided(dead: dict) -> dict:
    """A dead letter as the goldens keep it: the data of a large record (its input is in the
    corpus) as the SHA-256 of its base64 text, so ~1 MB records do not make 10 MB goldens."""
    data = dead["data_b64"]
    if len(data) <= GZ_OVER:
        return dead
    return {**dead, "data_b64": "sha256:" + hashlib.sha256(data.encode("ascii")).hexdigest()}


def decode_outcome(payload: bytes) -> list:
    try:
        b = codec.decode(payload)
    except Exception as exc:  # the error's class and message are part of the behaviour
        return ["error", type(exc).__name__, str(exc)]
    return ["batch", b.stream, b.shard_id,
            [[r.sequence_number, r.sub_sequence_number, r.partition_key,
              base64.b64encode(r.data).decode("ascii"), r.arrival_ms, r.flags]
             for r in b.records]]


def codec_payloads() -> list[bytes]:
    spec = json.loads((CORPUS / "codec.json").read_text(encoding="utf-8"))
    whole = [bytes.fromhex(p) for p in spec["payloads"]]
    small = whole[-1]  # every prefix of it, one byte more, and seeded one-byte edits
    damaged = [small[:n] for n in range(len(small))] + [small + b"\x00"]
    for pos, byte in spec["edits"]:
        d = bytearray(small)
        d[pos] = byte
        damaged.append(bytes(d))
    return whole + damaged


def outputs() -> dict[str, bytes]:
    """Every expected file (name -> bytes) as today's code makes it from the corpus."""
    out = {}
    for path in sorted(CORPUS.glob("*.jsonl")):
        kind, batches = read_case(path)
        for suffix, body in stage(kind, batches).items():
            out[f"{path.stem}.{suffix}"] = body
    out["codec.json"] = outputs_codec()
    return out


def outputs_codec() -> bytes:
    return (json.dumps([decode_outcome(p) for p in codec_payloads()], indent=0)
            + "\n").encode("utf-8")


# -- building the corpus from the seeded generators ------------------------------------
def _batches(recs: list[codec.Record], shard: str = corpus.SHARD) -> list[codec.Batch]:
    return [codec.Batch(STREAM, shard, recs[i:i + BATCH]) for i in range(0, len(recs), BATCH)]


def _events(datas: list[dict]) -> list[bytes]:
    return [json.dumps(d, ensure_ascii=True).encode() for d in datas]


def _every_kind_rows(rng: random.Random) -> list[dict]:
    from tests.golden.golden_plugin import encode

    good = {"t_text": "ok", "t_char": "abcd", "t_ts": {"$datetime": "2026-12-01T10:00:00+00:00"},
            "t_big": 5, "t_int": 6, "t_float": 1.25, "t_bool": True, "t_long": "long"}
    odd = [encode(v) for v in corpus.odd_values()] + [
        2 ** 31, -(2 ** 31) - 1, 2 ** 31 - 1, 2 ** 63 - 1, 10 ** 400, False, 0.1, -0.0,
        {"$float": "nan"}, {"$float": "inf"}, 1e308, "abcde", "ab", "\\N"]
    rows = [dict(good)] + [{**good, name: None} for name in good]
    for name in good:  # every odd value in every column
        rows += [{**good, name: value} for value in odd]
    for _ in range(60):
        row = dict(good)
        for _ in range(rng.choice((1, 2))):
            row[rng.choice(list(good))] = rng.choice(odd)
        rows.append(row)
    rows += [{"$raise": "plugin says no " + "x" * 600}, {"$return": ["not", "a", "dict"]},
             {"$return": "text"}, {**good, "unknown_column": "x"},
             {k: v for k, v in good.items() if k != "t_text"}]
    return [{"type": "every_kind", "row": row} for row in rows]


def _pv_plugin_rows(rng: random.Random) -> list[dict]:
    from tests.golden.golden_plugin import encode

    good = {k: encode(v) for k, v in page_view(corpus.good_events(1, seed=31)[0]).items()}
    columns = list(good)
    odd = [encode(v) for v in corpus.odd_values()]
    rows = []
    for _ in range(250):
        row = dict(good)
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
            row[rng.choice(columns)] = rng.choice(odd)
        if rng.random() < 0.03:
            row.pop(rng.choice(columns))
        rows.append({"type": "pv_plugin", "row": row})
    return rows


def _clicks() -> list[dict]:
    good = {"type": "click", "event_id": "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "occurred_at": "2026-12-01T10:00:00.5+01:00", "session_id": "s-1",
            "url": "https://Shop.example.com/p?x=1", "element": "buy", "x": 3, "y": -4}
    changes: list[dict] = [{}, {"x": None}, {"y": 2 ** 31}, {"x": "3"}, {"x": 1.5},
                           {"event_id": None}, {"event_id": "x"}, {"url": "ftp://h/"},
                           {"url": "https:///p"}, {"occurred_at": "2026-12-01T10:00:00"},
                           {"occurred_at": 5}, {"session_id": ["s"]}, {"element": "e" * 257},
                           {"element": "a\x00b"}]
    out = [{**good, **c} for c in changes]
    out.append({k: v for k, v in good.items() if k != "element"})
    return out


FIELD_RULES: dict[str, list] = {  # docs/events.md's rules, each way in and out
    "event_id": ["0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950", 7],
    "occurred_at": ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "20261126T100000Z",
                    "2026-W48-4T10:00:00Z", "2026-11-26T10:00:00.1234567+05:30",
                    "2026-11-26T10:00:00", "2026-11-26 10:00:00Z", "2026-02-30T10:00:00Z"],
    "url": ["http://h:99999/", "http://h:x/", "http://[::1/", "http://[::1]x/", "http://[::1]:80/p",
            "HTTP://User:pw@Host.COM:8080", "https://h/p?#frag", "https://h/?q#f", "https://h",
            "http://exa mple.com/", "https://h/a\tb?c d\n", "//h/p", "https:/h/p", "https://@/",
            "https://h/é?ü=1"],
    "referrer": ["", None, "android-app://com.example", "not a url", "https://[x/", "http://R.COM:1/"],
    "user_agent": ["Googlebot/2.1", "Mozilla/5.0 (iPad; CPU OS 17_0)", "Android 14; Tablet",
                   "Mozilla/5.0 (Linux; Android 14) Mobile", "Mozilla/5.0 (X11; Linux)", "curl/8",
                   "", "HeadlessChrome/120", "Mozilla (Windows Phone 10)", "robot", "abbot/1"],
    "ip": ["::ffff:1.2.3.4", "2001:db8:1:2::5", "fe80::1%eth0", "01.2.3.4", "1.2.3", "::",
           "\u0661.\u0662.\u0663.\u0664", "255.255.255.255", "256.1.1.1", "2001:db8::", "::1",
           "1.2.3.4 ", ""],
    "user_id": [None, "", "u" * 128, "u" * 129],
    "session_id": ["", "s" * 128, "s" * 129, None],
}


def _field_rule_events() -> list[dict]:
    base = corpus.good_events(1, seed=3)[0]
    out = []
    for name, values in FIELD_RULES.items():
        out += [{**base, name: json.loads(f'"{v}"') if isinstance(v, str) and "\\" in v
                 else v} for v in values]
        out.append({k: v for k, v in base.items() if k != name})
    return out


def build_corpus() -> dict[str, tuple[str, list[codec.Batch]]]:
    rng = random.Random(2026)
    golden_events = (_every_kind_rows(rng) + _pv_plugin_rows(rng) + _clicks()
                     + [{"type": "view"}, {"no_type": 1}, {"type": 5}, {"type": None},
                        {"type": "x" * 200}])
    metadata = _batches(corpus.odd_metadata_records())
    goods = [json.dumps(e).encode() for e in corpus.good_events(5, seed=9)]
    for shard in corpus.ODD_SHARDS:
        metadata += _batches(corpus.records(goods), shard)
    return {
        "page_views_producer": ("default", _batches(corpus.records(
            corpus.producer_datas(700, seed=1)))),
        "page_views_field_rules": ("default", _batches(corpus.records(
            _events(_field_rule_events())))),
        "page_views_hostile_text": ("default", _batches(corpus.records(
            corpus.hostile_datas(repeat=1)))),
        "page_views_json_edges": ("default", _batches(corpus.records(
            corpus.json_edge_datas(n_base=15)))),
        "page_views_mutations": ("default", _batches(corpus.records(
            corpus.mutated_datas(400)))),
        "page_views_kinesis_metadata": ("default", metadata),
        "routed_plugin_and_clicks": ("golden", _batches(corpus.records(
            _events(golden_events)))),
    }


def _record_lines(kind: str, name: str, batches: list[codec.Batch]) -> Iterator[str]:
    yield json.dumps({"case": name, "tables": kind})
    for i, batch in enumerate(batches):
        for r in batch.records:
            line = {"batch": i, "shard": batch.shard_id, "seq": r.sequence_number,
                    "sub": r.sub_sequence_number, "pk": r.partition_key,
                    "arrival_ms": r.arrival_ms}
            if len(r.data) > GZ_OVER:
                line["data_gz"] = base64.b64encode(gzip.compress(r.data, mtime=0)).decode()
            else:
                line["data"] = base64.b64encode(r.data).decode()
            yield json.dumps(line)


def write_corpus() -> None:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*"):
        old.unlink()
    for name, (kind, batches) in build_corpus().items():
        (CORPUS / f"{name}.jsonl").write_text(
            "".join(line + "\n" for line in _record_lines(kind, name, batches)),
            encoding="utf-8")
    rng = random.Random(3)
    recs = [codec.Record(str(rng.randrange(10 ** 55, 10 ** 56)), rng.randrange(2 ** 32),
                         rng.choice(("pk", "é-key", "", "k" * 300)),
                         bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))),
                         rng.randrange(2 ** 64), rng.randrange(4)) for _ in range(60)]
    small = codec.encode(codec.Batch("s", "shard", recs[:3]))
    payloads = [codec.encode(codec.Batch("stream-é", "shardId-000000000001", recs)), small]
    edits = [[rng.randrange(len(small)), rng.randrange(256)] for _ in range(400)]
    (CORPUS / "codec.json").write_text(json.dumps({"payloads": [p.hex() for p in payloads],
                                                   "edits": edits}) + "\n", encoding="utf-8")


def write_outputs() -> list[str]:
    """Write the expected files; -> the names whose bytes changed."""
    EXPECTED.mkdir(exist_ok=True)
    new = outputs()
    changed = [name for name, body in new.items()
               if not (EXPECTED / name).exists() or (EXPECTED / name).read_bytes() != body]
    for old in EXPECTED.glob("*"):
        if old.name not in new:
            old.unlink()
            changed.append(old.name)
    for name, body in new.items():
        (EXPECTED / name).write_bytes(body)
    return sorted(changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden.regen",
                                     description="rewrite the stage path's golden outputs")
    parser.add_argument("--corpus", action="store_true",
                        help="also rebuild the input corpus from the seeded generators")
    args = parser.parse_args(argv)
    if args.corpus:
        write_corpus()
    changed = write_outputs()
    print(f"{len(changed)} golden file(s) changed: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
