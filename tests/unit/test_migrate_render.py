"""One DDL source, three targets: Redshift, plain PostgreSQL and the redshift-like stand-in."""
from __future__ import annotations

import pytest

from shardline import migrate


def all_sql(dialect: str) -> str:
    return "\n".join(s for _, _, p in migrate.migrations()
                     for s in migrate.render(p.read_text(), dialect))


def test_migrations_are_numbered_and_unique():
    found = migrate.migrations()
    assert [v for v, _, _ in found] == sorted({v for v, _, _ in found})
    assert found[0][0] == 1


def test_redshift_gets_its_layout_and_postgres_does_not():
    rs, pg = all_sql("redshift"), all_sql("postgres")
    assert "DISTKEY (event_id)" in rs and "SORTKEY (occurred_at)" in rs
    assert "DISTKEY" not in pg and "SORTKEY" not in pg
    assert "CREATE INDEX" in pg and "CREATE INDEX" not in rs
    # tables that grow with every load are not DISTSTYLE ALL; the one-row fence is
    assert rs.count("DISTSTYLE ALL") == 1 and "CREATE TABLE load_fence" in rs
    assert "SYSDATE" not in rs.split("INSERT")[0] or "DEFAULT SYSDATE" in rs  # staging only


def test_redshift_like_has_no_index_on_the_dedup_key_and_brin_on_the_sort_key():
    like, pg = all_sql("redshift-like"), all_sql("postgres")
    assert "PRIMARY KEY (event_id)" not in like and "UNIQUE INDEX" not in like
    assert "page_views USING brin (occurred_at)" in like
    assert "PRIMARY KEY (event_id)" in pg and "brin" not in pg


def test_render_drops_comments_and_empty_statements():
    sql = ("-- c\nCREATE TABLE t (a INT) /*redshift: DISTSTYLE ALL*/;\n"
           "/*postgres: CREATE INDEX i ON t (a)*/;\n")
    assert migrate.render(sql, "redshift") == ["CREATE TABLE t (a INT)  DISTSTYLE ALL"]
    assert migrate.render(sql, "postgres") == ["CREATE TABLE t (a INT)", "CREATE INDEX i ON t (a)"]


def test_every_table_the_pipeline_uses_is_created():
    pg = all_sql("postgres")
    for table in ("loads", "loaded_files", "load_fence", "page_views"):
        assert f"CREATE TABLE {table} (" in pg
    # the control tables are not in the warehouse any more (sql/control, or DynamoDB)
    for table in ("shard_leases", "checkpoints", "staged_files", "shard_watermarks"):
        assert f"CREATE TABLE {table} (" not in pg


def test_no_migrations_is_an_install_error_not_success(tmp_path):
    from shardline.cli import exit_for
    from shardline.errors import NoMigrations
    from shardline.exitcodes import ExitCode

    with pytest.raises(NoMigrations) as info:
        migrate.migrations(tmp_path)
    assert exit_for(info.value)[0] == ExitCode.NOT_INSTALLED
    with pytest.raises(NoMigrations):  # never touches the connection
        migrate.migrate(object(), "postgres", tmp_path / "missing")
