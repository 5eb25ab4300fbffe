"""Sample traffic for the demo, tests and benchmarks: the seeded page-view generator
(``events`` with ``traffic``, ``malformed``, ``event_rules``), the retrying Kinesis producer
(``put``, ``put_records``) and the ``produce`` / ``create-stream`` commands. Not used by the
pipeline itself; the library calls of ``put`` are re-exported here.
"""
from shardline.producer.put import PutStats, aggregate, open_shards, put_events

__all__ = ["PutStats", "aggregate", "open_shards", "put_events"]
