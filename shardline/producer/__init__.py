"""The producer side: what a web front end embeds (``Producer``, ``middleware``), the
blocking ``put_events`` for tools and tests, KPL aggregation (``kpl``), the disk spool
(``spool``), and the sample traffic (``events`` with ``traffic``, ``malformed``,
``event_rules``) behind the ``produce`` / ``create-stream`` commands.
docs/producer.md describes the Producer; docs/events.md the events.
"""
from shardline.producer.kpl import aggregate
from shardline.producer.producer import Producer
from shardline.producer.put import PutStats, put_events

__all__ = ["Producer", "PutStats", "aggregate", "put_events"]
