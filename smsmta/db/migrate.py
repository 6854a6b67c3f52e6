"""Run the alembic migrations of one side (`mid` or `marketing`) against a URL.

Each side is an alembic branch with its own version table in its own schema, so the
marketing schema can be migrated in another database than the mid schema. The scripts
live in the top-level `migrations/` package (installed with the distribution).
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, create_engine, pool

import migrations
from smsmta.db import SIDES
from smsmta.db.engine import normalize_url

SIDE_NAMES = tuple(SIDES)


def alembic_config(url: str | URL, side: str) -> Config:
    """An alembic Config for one side, without an ini file."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}: expected one of {', '.join(SIDE_NAMES)}")
    root = Path(migrations.__file__).parent
    config = Config()
    config.set_main_option("script_location", str(root))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", os.pathsep.join(str(root / "versions" / name) for name in SIDES)
    )
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["url"] = normalize_url(url)
    config.attributes["side"] = side
    return config


def upgrade(url: str | URL, side: str, revision: str = "head") -> None:
    """Migrate one side up to `revision` (default: its head)."""
    command.upgrade(alembic_config(url, side), f"{side}@{revision}")


def downgrade(url: str | URL, side: str, revision: str = "-1") -> None:
    """Migrate one side down to `revision` ('-1' one step, 'base' everything)."""
    command.downgrade(alembic_config(url, side), f"{side}@{revision}")


def heads(side: str) -> tuple[str, ...]:
    """The head revisions of one side's branch (a healthy tree has exactly one)."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://", side))
    return tuple(
        head for head in script.get_heads() if side in script.get_revision(head).branch_labels
    )


def current(url: str | URL, side: str) -> tuple[str, ...]:
    """The revisions the database is at for one side (empty when never migrated)."""
    schema = SIDES[side].schema
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
            return tuple(context.get_current_heads())
    finally:
        engine.dispose()
