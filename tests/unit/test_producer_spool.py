"""The spool: framed records survive a reopen, a torn or corrupt tail is skipped and counted,
acks persist, each process gets its own slot and idle slots are adopted."""
from __future__ import annotations

import os
import struct
import zlib

from shardline.producer.spool import Spool


def recs(start: int, n: int) -> list[tuple]:
    return [(start + i, 0, f"k{i % 7}", f"record-{start + i}".encode() * 3) for i in range(n)]


def drain(spool: Spool) -> list[tuple]:
    out = []
    while (chunk := spool.read_chunk(50, 10_000)) is not None:
        out += chunk.records
        spool.ack(chunk)
    return out


def test_records_come_back_in_order_after_a_reopen_and_acks_persist(tmp_path):
    a = Spool(tmp_path, segment_bytes=2_000, sync_interval_s=0)
    a.open()
    written = []
    for start in range(1, 201, 40):  # one write per call; segments rotate between writes
        written += recs(start, 40)
        a.append(recs(start, 40))
    first = a.read_chunk(30, 1_000_000)
    a.ack(first)
    a.close()
    assert len(list(a.slot.glob("*.seg"))) > 2  # rotated at 2,000 bytes

    b = Spool(tmp_path)
    b.open()
    assert b.slot == a.slot  # the released slot is claimed again, with its segments
    back = drain(b)
    assert [r[0] for r in back] == list(range(31, 201))
    assert [(r[2], r[3]) for r in back] == [(r[2], r[3]) for r in written[30:]]
    assert b.empty() and b.torn == 0
    assert b.reset_if_drained()
    assert not list(b.slot.glob("*.seg"))


def _segment(spool: Spool):
    (seg,) = sorted(spool.slot.glob("*.seg"))
    return seg


def test_a_torn_tail_is_ignored_and_counted(tmp_path):
    a = Spool(tmp_path)
    a.open()
    a.append(recs(1, 10))
    seg = _segment(a)
    a.close()
    size = seg.stat().st_size
    with open(seg, "r+b") as fh:  # a kill in the middle of the last frame
        fh.truncate(size - 5)
    b = Spool(tmp_path)
    b.open()
    assert [r[0] for r in drain(b)] == list(range(1, 10))
    assert b.torn == 1


def test_a_corrupt_frame_ends_the_segment_and_is_counted(tmp_path):
    a = Spool(tmp_path)
    a.open()
    a.append(recs(1, 10))
    seg = _segment(a)
    a.close()
    raw = bytearray(seg.read_bytes())
    length, _ = struct.unpack_from("<II", raw, 0)
    second = 8 + length
    raw[second + 12] ^= 0xFF  # one flipped byte inside frame 2's payload
    seg.write_bytes(bytes(raw))
    b = Spool(tmp_path)
    b.open()
    assert [r[0] for r in drain(b)] == [1]
    assert b.torn == 1
    # Frames written by the real writer check out (the corruption above is what fails).
    payload = bytes(raw[8:8 + length])
    assert zlib.crc32(payload) == struct.unpack_from("<II", raw, 0)[1]


def test_live_processes_get_their_own_slots_and_idle_slots_are_adopted(tmp_path):
    a, b = Spool(tmp_path), Spool(tmp_path)
    a.open()
    b.open()
    assert a.slot != b.slot
    b.append(recs(1, 5))
    b.close()  # b's process is gone; its records stay in its slot
    a_records = drain(a)
    assert a_records == []  # a opened before b wrote: nothing adopted yet
    c = Spool(tmp_path)
    c.open()  # claims b's free slot (the first free one)
    assert c.slot == b.slot and [r[0] for r in drain(c)] == [1, 2, 3, 4, 5]
    c.close()
    a.close()

    d, e = Spool(tmp_path), Spool(tmp_path)
    d.open()
    d.append(recs(10, 3))
    d.close()
    holder = Spool(tmp_path)
    holder.open()  # takes d's slot back...
    holder_slot = holder.slot
    holder.close()
    other = tmp_path / "slot-7"
    other.mkdir()
    os.rename(next(holder_slot.glob("*.seg")), other / "0000-1-000001.seg")
    e.open()  # ...and e adopts the idle slot-7's segment into its own
    assert [r[0] for r in drain(e)] == [10, 11, 12]
    assert e.adopted == 1


def test_full_spool_has_no_room(tmp_path):
    s = Spool(tmp_path, max_bytes=2_000)
    s.open()
    s.append(recs(1, 20))
    assert not s.has_room(2_000)
    assert s.has_room(1) == (s.bytes + 1 <= 2_000)
