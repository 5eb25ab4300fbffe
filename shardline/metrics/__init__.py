"""The pipeline's Prometheus metrics (consumer, stage worker, loader, end-to-end latency) and
the per-host scrape target that serves them (docs/metrics.md).

``pipeline``: the metric objects and the small exporters each process pushes its counts
through (plain ints on the hot path, deltas at the consumer's report interval / per job /
per load). ``multiproc``: prometheus_client's multiprocess mode as supervisord runs it (one
``PROMETHEUS_MULTIPROC_DIR`` per host, dead processes swept) and the HTTP server the agent or
``shardline metrics --serve`` runs on it.
"""
