"""A page view's fields, and the byte limits the warehouse puts on them.

The middleware builds page views with these fields and cuts their text to ``MAX_BYTES``
so that no page view is dead-lettered for its size; the sample traffic and the reference
rules (``shardline.sample.event_rules``) check against the same limits. The limits are
read from the page_views table of the packaged tables definition
(``shardline/default_tables.toml``), never written here: widening a column there widens
what the middleware keeps.
"""
from __future__ import annotations

from shardline.tables import table_spec

TABLE = "page_views"
# Fields that must be present and non-null; REQUIRED + NULLABLE are all the fields.
REQUIRED = ("event_id", "occurred_at", "url", "user_agent", "ip", "session_id")
NULLABLE = ("referrer", "user_id")
FIELDS = ("event_id", "occurred_at", "url", "referrer", "user_agent", "ip", "user_id",
          "session_id")


def field_limits() -> dict[str, int]:
    """UTF-8 byte limit of each text field stored as it is in a column of the same name.

    Fields without such a column (``ip`` is stored as ``ip_prefix``) or with a type
    that has no byte width (``occurred_at``) have no limit here.
    """
    columns = {c.name: c for c in table_spec(TABLE).user_columns}
    return {name: width for name in FIELDS
            if name in columns and (width := columns[name].max_bytes) is not None}


MAX_BYTES: dict[str, int] = field_limits()
