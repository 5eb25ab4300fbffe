"""``shardline tail``: log files -> ``Producer`` -> Kinesis, one event per line, exactly once
into the warehouse by a deterministic event id (docs/tail.md).

``identity`` (a file's fingerprint, a line's event id and event), ``lines`` (splitting bytes
into lines under a maximum length), ``tracker`` (``Tracker.step(now, ...)``: the pure
decisions, which files, what to read, what to checkpoint), ``checkpoints`` (the offsets in
SQLite), ``loop`` (the I/O: globbing, reading, putting, waiting) and ``main`` (the command).
"""
