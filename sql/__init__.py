"""``shardline.sql``: the numbered migrations shipped as package data: ``migrations/*.sql``
for the warehouse, ``control/*.sql`` for the PostgreSQL control store."""
