"""The records every component shares, below all of them: ``ledger.py`` (the staged-file
ledger entry, its states and its column schema) and ``control.py`` (leases, checkpoints and
their history). They import nothing from the rest of shardline, so the consumers, stage
workers, loaders, the control store and the upgrade can all depend on them.
"""
