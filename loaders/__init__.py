"""The loaders: one process per target table, loading the staged files of the ledger into the
warehouse (``loader.py``, ``main.py`` for ``shardline loader``, ``warehouse/`` the dialects)."""
