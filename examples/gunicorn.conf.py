"""gunicorn settings for examples/pageview_app.py: 4 sync workers, the app preloaded in the
master (each worker still gets its own producer thread and client: fork safety)."""
import os

bind = os.environ.get("PAGEVIEW_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("PAGEVIEW_WORKERS", "4"))
preload_app = True
graceful_timeout = 15


def worker_exit(server, worker):  # noqa: ARG001 - gunicorn's hook signature
    """Send what is buffered before the worker goes (atexit does it too; this is earlier)."""
    from examples.pageview_app import producer

    producer.close()


def child_exit(server, worker):  # noqa: ARG001
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
