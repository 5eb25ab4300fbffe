"""``shardline.sql``: the numbered migrations (``migrations/*.sql``), shipped as package data."""
