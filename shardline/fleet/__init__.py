"""Many hosts, one consumer per shard: the per-host agent (``shardline agent``).

- ``assign.py``: the pure, deterministic balanced and sticky assignment of shards to hosts.
- ``supervisor.py``: supervisord's XML-RPC interface (what ``supervisorctl update`` does).
- ``agent.py``: the agent's ``step(now)``: heartbeat, (leader) assign, reconcile supervisord.
- ``main.py``: the ``shardline agent`` command (real clients, signals, the loop).
"""
