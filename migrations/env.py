"""Alembic environment: one side at a time, its metadata from smsmta.db, its URL from settings.

`smsmta db upgrade` passes the URL and the side through `config.attributes`; the plain
`alembic` command is not needed. The side's schema is created if missing and holds that
side's own version table.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from smsmta.db import SIDES

config = context.config
side: str = config.attributes["side"]
target_metadata = SIDES[side]
schema = target_metadata.schema


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Compare only this side's schema (the other side may share the database)."""
    if type_ == "schema":
        return name == schema
    return True


def run_migrations_online() -> None:
    engine = create_engine(config.attributes["url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=include_name,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("smsmta migrations run online only: give a database URL")
run_migrations_online()
