"""The producer library a web front end embeds: ``Producer`` (non-blocking ``put``, the
background thread, the disk ``spool``, KPL aggregation in ``kpl``, ``metrics``), the WSGI/ASGI
page-view ``middleware`` (the event's fields and limits in ``page_view``), its options
(``config``), and the blocking ``put_events`` for tools and tests (``put``, sharing the retry
loop of ``put_records``). It imports nothing of the pipeline beyond small dependency-free
core modules, so ``pip install shardline`` without the ``pipeline`` extra is enough for it.
Sample traffic is in ``shardline.sample``; docs/producer.md describes the Producer.
"""
from shardline.producer.kpl import aggregate
from shardline.producer.producer import Producer
from shardline.producer.put import PutStats, put_events

__all__ = ["Producer", "PutStats", "aggregate", "put_events"]
