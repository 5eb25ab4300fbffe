"""The per-shard consumer: lease a shard, read it, batch, dispatch to Gearman, checkpoint.

Modules are small and mostly pure so the rules (cadence, window, watermark,
pacing, iterator age) are unit-tested without sleeping or a network:
``consumer.Consumer.step()`` is one turn of the loop; ``main`` wires real clients.
"""
