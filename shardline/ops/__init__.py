"""Operating the fleet: the ``status``, ``replay``, ``create-stream`` and
``supervisor-config`` commands, the gearmand admin-protocol client, and ``fleet`` (a real
supervisord fleet for the demo, tests and benchmarks). Nothing in the pipeline's data path
imports from here.
"""
