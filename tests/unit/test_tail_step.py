"""The tailer's pure parts: fingerprints and event ids, line splitting under a length limit,
and ``Tracker.step`` (which files, what to read, what to checkpoint) on simulated files:
rotation both ways, identity by content, a reused inode, truncation, new files by glob."""
from __future__ import annotations

from dataclasses import dataclass, field

from shardline.tail.identity import FINGERPRINT_BYTES, event_id, fingerprint, line_event
from shardline.tail.lines import split
from shardline.tail.tracker import Handle, Seen, Tracker


# -- identity -------------------------------------------------------------------------
def test_fingerprint_is_the_first_line_and_waits_for_it():
    assert fingerprint(b"2026-12-08 first li") is None
    fp = fingerprint(b"2026-12-08 first line\n")
    assert fp is not None
    assert fingerprint(b"2026-12-08 first line\nsecond\nthird\n") == fp
    assert fingerprint(b"2026-12-08 other line\n") != fp
    long = b"x" * FINGERPRINT_BYTES
    assert fingerprint(long) == fingerprint(long + b"yyy\n")


def test_event_id_depends_on_host_file_and_offset_only():
    a = event_id("web1", "f" * 32, 100)
    assert a == event_id("web1", "f" * 32, 100)
    assert len({a, event_id("web2", "f" * 32, 100), event_id("web1", "e" * 32, 100),
                event_id("web1", "f" * 32, 101)}) == 4
    e = line_event("web1", "f" * 32, "/var/log/a.log", 100, b"caf\xc3\xa9 \xff\r\n", "t")
    assert e["event_id"] == a and e["line"] == "café \ufffd" and "truncated" not in e


# -- lines --------------------------------------------------------------------------------
def test_split_keeps_a_partial_last_line_for_later():
    got = split(b"a\nbb\ncc", 10, skipping=False, safe=10, max_line=100)
    assert got.lines == [(10, b"a\n", False), (12, b"bb\n", False)]
    assert (got.read_to, got.safe, got.skipping) == (15, 15, False)
    final = split(b"cc", 15, skipping=False, safe=15, max_line=100, final=True)
    assert final.lines == [(15, b"cc", False)] and final.safe == 17


def test_an_over_long_line_is_cut_once_and_its_rest_skipped():
    got = split(b"ok\n" + b"x" * 50, 0, skipping=False, safe=0, max_line=10)
    assert got.lines == [(0, b"ok\n", False), (3, b"x" * 10, True)]
    # the restart point stays at the long line's start until its end is found
    assert (got.read_to, got.safe, got.skipping) == (53, 3, True)
    more = split(b"x" * 20 + b"\nnext\n", 53, skipping=True, safe=3, max_line=10)
    assert more.lines == [(74, b"next\n", False)]
    assert (more.safe, more.skipping) == (79, False)
    # exactly max_line bytes plus the newline is not too long; one more byte is
    assert split(b"y" * 10 + b"\n", 0, skipping=False, safe=0, max_line=10).lines == \
        [(0, b"y" * 10 + b"\n", False)]
    assert split(b"y" * 11 + b"\n", 0, skipping=False, safe=0, max_line=10).lines == \
        [(0, b"y" * 10, True)]


# -- the tracker on simulated files -------------------------------------------------------
@dataclass
class Inode:
    number: int
    data: bytearray = field(default_factory=bytearray)


class World:
    """Paths -> inodes, a tracker, and a loop that reads everything and makes it durable
    at once (or not, with ``durable=False``)."""

    def __init__(self, *, first_start: bool = True, from_beginning: bool = False,
                 checkpoints: dict[str, int] | None = None):
        self.paths: dict[str, Inode] = {}
        self.next_ino = 1
        self.tracker = Tracker(checkpoints or {}, first_start=first_start,
                               from_beginning=from_beginning, rotate_wait_s=5)
        self.open: dict[str, Inode] = {}       # fingerprint -> inode held open
        self.sent: list[tuple[str, int, bytes]] = []   # (fingerprint, offset, line)
        self.seq = 0
        self.saved: dict[str, int] = dict(checkpoints or {})
        self.forgotten: list[str] = []
        self.pattern = "app.log*"

    def create(self, path: str, data: bytes = b"") -> Inode:
        ino = Inode(self.next_ino, bytearray(data))
        self.next_ino += 1
        self.paths[path] = ino
        return ino

    def append(self, path: str, data: bytes) -> None:
        self.paths[path].data += data

    def seen(self) -> list[Seen]:
        import fnmatch

        return [Seen(p, fingerprint(bytes(i.data[:FINGERPRINT_BYTES])), len(i.data),
                     (1, i.number))
                for p, i in sorted(self.paths.items()) if fnmatch.fnmatch(p, self.pattern)]

    def step(self, now: float, durable: bool = True) -> None:
        handles = {fp: Handle(len(i.data), (1, i.number)) for fp, i in self.open.items()}
        plan = self.tracker.step(now, self.seen(), handles)
        for fp in plan.close:
            self.open.pop(fp, None)
        for fp, path in plan.open:
            ino = self.paths[path]
            if fingerprint(bytes(ino.data[:FINGERPRINT_BYTES])) == fp:
                self.open[fp] = ino
        for fp, final in plan.read:
            t = self.tracker.reading(fp)
            if t is None or fp not in self.open:
                continue
            data = bytes(self.open[fp].data[t.read_to:])
            got = split(data, t.read_to, skipping=t.skipping, safe=t.safe, max_line=64,
                        final=final)
            for offset, line, _ in got.lines:
                self.seq += 1
                self.sent.append((fp, offset, line))
            self.tracker.advanced(now, fp, got.read_to, got.safe, got.skipping, self.seq)
        if durable:
            self.tracker.durable(self.seq)
        for fp, _, off in plan.checkpoint + self.tracker.take_checkpoints():
            self.saved[fp] = off
        for fp in plan.forget:
            self.saved.pop(fp, None)
            self.forgotten.append(fp)

    def lines(self) -> list[bytes]:
        return [line for _, _, line in self.sent]


def test_first_start_reads_only_new_lines_of_existing_files_and_new_files_whole():
    w = World()
    w.create("app.log", b"old 1\nold 2\n")
    w.step(0)
    w.append("app.log", b"new 1\n")
    w.create("app.log.other", b"born later\n")
    w.create("unrelated.txt", b"not matched\n")
    w.step(1)
    assert sorted(w.lines()) == [b"born later\n", b"new 1\n"]


def test_from_beginning_and_restart_from_checkpoint():
    w = World(from_beginning=True)
    w.create("app.log", b"old 1\nold 2\n")
    w.step(0)
    assert w.lines() == [b"old 1\n", b"old 2\n"]
    w.append("app.log", b"while down\n")
    # a restart: a new tracker with the saved checkpoints, not a first start
    w2 = World(first_start=False, checkpoints=w.saved)
    w2.paths, w2.next_ino = w.paths, w.next_ino
    w2.step(10)
    assert w2.lines() == [b"while down\n"]


def test_checkpoint_moves_only_when_durable():
    w = World(from_beginning=True)
    w.create("app.log", b"a\n")
    w.step(0, durable=False)
    fp = fingerprint(b"a\n")
    assert fp is not None and w.saved.get(fp) == 0
    w.append("app.log", b"b\n")
    w.step(1, durable=False)
    assert w.saved[fp] == 0 and w.seq == 2
    w.tracker.durable(1)  # only the first line's event is durable
    assert w.tracker.take_checkpoints() == [(fp, "app.log", 2)]
    w.tracker.durable(2)
    assert w.tracker.take_checkpoints() == [(fp, "app.log", 4)]


def test_rename_and_create_reads_the_rotated_file_to_its_end_then_lets_go():
    w = World(from_beginning=True)
    w.pattern = "app.log"  # the rotated name is not matched
    old = w.create("app.log", b"one\n")
    w.step(0)
    w.paths["app.log.1"] = w.paths.pop("app.log")     # rename
    old.data += b"two\n"                               # the writer still holds it
    w.create("app.log", b"fresh\n")                     # create
    w.step(1)
    old.data += b"three"                               # a last line without a newline
    w.step(2)
    assert sorted(w.lines()) == [b"fresh\n", b"one\n", b"two\n"]
    w.step(8)   # quiet for rotate_wait_s: the last partial line is a line ...
    assert w.lines()[-1] == b"three"
    w.step(9)
    assert fingerprint(b"one\n") in w.open
    w.step(14)  # ... and rotate_wait_s later it is let go
    fp_old = fingerprint(b"one\n")
    assert fp_old in w.forgotten and fp_old not in w.open
    assert len(w.open) == 1


def test_a_renamed_file_the_glob_still_matches_is_the_same_file():
    w = World(from_beginning=True)
    w.create("app.log", b"one\n")
    w.step(0)
    w.paths["app.log.1"] = w.paths.pop("app.log")
    w.append("app.log.1", b"two\n")
    w.step(1)
    w.step(2)
    assert w.lines() == [b"one\n", b"two\n"]   # never read again from its start
    t = w.tracker.reading(fingerprint(b"one\n") or "")
    assert t is not None and t.path == "app.log.1"


def test_copytruncate_goes_on_in_the_copy_and_the_new_content_is_a_new_file():
    w = World(from_beginning=True)
    w.create("app.log", b"one\ntwo\n")
    w.step(0)
    w.append("app.log", b"three\n")                  # not read yet ...
    w.create("app.log.1", bytes(w.paths["app.log"].data))   # ... copied
    w.paths["app.log"].data[:] = b""                  # truncated
    w.step(1)
    w.append("app.log", b"after\n")
    w.step(2)
    w.step(3)
    assert w.lines() == [b"one\n", b"two\n", b"three\n", b"after\n"]


def test_truncated_and_rewritten_under_the_same_inode_is_not_read_at_the_old_offset():
    w = World(from_beginning=True)
    w.create("app.log", b"first file line\n")
    w.step(0)
    # truncated and refilled past the old offset before the next scan (no copy matched)
    w.paths["app.log"].data[:] = b"second file, longer first line\nmore\n"
    w.step(1)
    w.step(2)
    assert w.lines() == [b"first file line\n", b"second file, longer first line\n",
                         b"more\n"]


def test_a_reused_inode_with_other_content_is_a_new_file():
    w = World(from_beginning=True)
    w.pattern = "app.log"
    a = w.create("app.log", b"a first\n")
    w.step(0)
    del w.paths["app.log"]     # deleted ...
    w.step(1)
    w.step(10)                 # ... let go after rotate_wait_s
    assert not w.open
    b = w.create("app.log", b"b first\nb second\n")
    b.number = a.number         # ... and its inode reused
    w.step(11)
    assert w.lines() == [b"a first\n", b"b first\n", b"b second\n"]


def test_a_copy_matched_by_the_glob_is_not_read_twice():
    w = World(from_beginning=True)
    w.create("app.log", b"one\ntwo\n")
    w.step(0)
    w.create("app.log.bak", b"one\ntwo\n")   # same content: the same file
    w.step(1)
    w.step(2)
    assert w.lines() == [b"one\n", b"two\n"]


def test_over_long_line_is_one_cut_line_and_the_checkpoint_waits_for_its_end():
    w = World(from_beginning=True)
    w.create("app.log", b"short\n" + b"z" * 200)
    w.step(0)
    fp = fingerprint(b"short\n")
    assert fp is not None
    assert w.lines() == [b"short\n", b"z" * 64]
    assert w.saved[fp] == 6          # a restart cuts the long line again (same event id)
    w.append("app.log", b"zz\nend\n")
    w.step(1)
    assert w.lines()[-1] == b"end\n" and len(w.lines()) == 3
    assert w.saved[fp] == 6 + 203 + 4


def test_a_file_without_a_complete_first_line_waits():
    w = World(from_beginning=True)
    w.create("app.log", b"no newline yet")
    w.step(0)
    assert w.lines() == []
    w.append("app.log", b"\n")
    w.step(1)
    assert w.lines() == [b"no newline yet\n"]


def test_truncation_says_whether_lines_were_lost(caplog):
    w = World(from_beginning=True)
    w.pattern = "app.log"          # the copy is not matched
    w.create("app.log", b"one\n")
    w.step(0)
    w.paths["app.log"].data[:] = b""   # truncated after it was read to its end
    with caplog.at_level("INFO", logger="shardline.tail"):
        w.step(1)
    assert [r.levelname for r in caplog.records] == ["INFO"]
    w.append("app.log", b"two\n")
    w.step(2)
    w.append("app.log", b"three\n")   # written and seen (size 10) ...
    w.step(3)
    fp = fingerprint(b"two\n")
    assert fp is not None
    t = w.tracker.reading(fp)
    assert t is not None
    t.read_to = 4                      # ... but, say, its read failed: still at offset 4
    w.paths["app.log"].data[:] = b""   # then truncated
    caplog.clear()
    with caplog.at_level("INFO", logger="shardline.tail"):
        w.step(4)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "at least 6 bytes" in caplog.records[0].getMessage()


def test_a_new_file_is_opened_and_read_once_per_step():
    w = World(from_beginning=True)
    w.create("app.log", b"one\n")
    plan = w.tracker.step(0, w.seen(), {})
    fp = fingerprint(b"one\n")
    assert plan.open == [(fp, "app.log")] and plan.read == [(fp, False)]
