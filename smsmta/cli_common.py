"""What every `smsmta` subcommand does before its own work: settings, database, logging.

What it does: loads a settings file of the kind a command needs (printing each problem
and exiting 2 otherwise), finds the database a command works on (`--url`, the settings
file's, else an embedded one started for the command), refuses a schema not migrated to
this version (exit 2), configures a service's logging, and runs a service to its exit
code. The click options shared by several commands are here too.

Contract: kernel, not a tool. Both the CLI (`smsmta.cli`) and the services' own command
modules (`midsourcing.commands`) use it, so it imports neither services nor tools. Exit
codes are the CLI's: 2 for bad input (settings, usage, schema not at head).

Touches: the settings files, the database (an embedded PostgreSQL is started and stopped
around the command), stderr; `smsmta.obs` is imported only when logging is configured, so
that the MTA can set PROMETHEUS_MULTIPROC_DIR first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import click
from sqlalchemy import URL

from smsmta import settings
from smsmta.db.engine import database, libpq_dsn

__all__ = [
    "MID_CONFIG_OPTION",
    "URL_OPTION",
    "db_target",
    "load_config",
    "load_mid",
    "mid_db_options",
    "mid_dsn",
    "require_schema",
    "run_service",
    "schema_dsn",
    "service_logging",
]

C = TypeVar("C", settings.MidConfig, settings.MarketingConfig)
F = TypeVar("F", bound=Callable[..., object])


#: ``--config`` of the mid services: the mid settings file, required.
MID_CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The mid settings file.",
)


#: ``--url`` of a tool working on a database (see `db_target` for the default).
URL_OPTION = click.option(
    "--url", help="Database URL; default: SMSMTA_DATABASE_URL, the config's, else embedded."
)


def load_config(config_path: str, kind: type[C], needed: str = "service") -> C:
    """Load `config_path` as `kind` (MidConfig or MarketingConfig); print the errors, exit 2."""
    try:
        cfg = settings.load(config_path)
    except settings.ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        sys.exit(2)
    if not isinstance(cfg, kind):
        side = "mid" if kind is settings.MidConfig else "marketing"
        click.echo(f"{config_path}: this {needed} needs a 'kind: {side}' settings file", err=True)
        sys.exit(2)
    return cfg


def load_mid(config_path: str) -> settings.MidConfig:
    """`load_config` for a mid settings file."""
    return load_config(config_path, settings.MidConfig)


def require_schema(url: URL, side: str) -> None:
    """Refuse to start against a database that is not migrated to this version (exit 2)."""
    from smsmta.db import migrate

    at, head = migrate.current(url, side), migrate.heads(side)
    if set(at) != set(head):
        click.echo(
            f"the {side} schema is at {', '.join(at) or 'nothing'}, this smsmta needs "
            f"{', '.join(head)}: run 'smsmta db upgrade' first",
            err=True,
        )
        sys.exit(2)


@contextmanager
def db_target(
    config_path: str | None, url: str | None, side: str | None
) -> Iterator[tuple[URL, list[str]]]:
    """The database URL a command works on and the schemas it names ("mid", "marketing").

    `url` wins, then the settings file's database, then SMSMTA_DATABASE_URL, else an
    embedded PostgreSQL (started for the block). `side` None or "all" means both schemas,
    unless the settings file gives its kind. A bad settings file is a click usage error.
    """
    embedded_dir = None
    if config_path is not None:
        try:
            cfg = settings.load(config_path)
        except settings.ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        url = url or settings.database_url(cfg)
        embedded_dir = cfg.database.embedded_dir
        side = side or cfg.kind
    sides = ["mid", "marketing"] if side is None or side == "all" else [side]
    with database(url, embedded_dir) as target:
        yield target, sides


def mid_db_options(func: F) -> F:
    """``--config`` (a mid settings file) and ``--url``: where a mid-side tool's database is."""
    func = URL_OPTION(func)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        help="The mid settings file naming the database.",
    )(func)


@contextmanager
def mid_dsn(config_path: str | None, url: str | None, *, check_schema: bool) -> Iterator[str]:
    """The libpq DSN of the mid database `mid_db_options` name (see `db_target`).

    With `check_schema`, exit 2 unless the mid schema is at this version's head.
    """
    with db_target(config_path, url, "mid") as (target, _sides):
        if check_schema:
            require_schema(target, "mid")
        yield libpq_dsn(target)


@contextmanager
def schema_dsn(cfg: settings.MidConfig | settings.MarketingConfig, side: str) -> Iterator[str]:
    """The libpq DSN of `cfg`'s database once its `side` schema is known to be at head."""
    with database(settings.database_url(cfg), cfg.database.embedded_dir) as url:
        require_schema(url, side)
        yield libpq_dsn(url)


def service_logging(service: str, cfg: settings.MidConfig | settings.MarketingConfig) -> None:
    """Configure structlog for `service` with the settings file's level and format."""
    from smsmta import obs

    obs.configure_logging(
        service,
        cfg.logging.level,
        cfg.logging.format,
        show_personal_data=cfg.logging.show_personal_data,
    )


def run_service(service: str, cfg: C, side: str, run: Callable[[C, str], int]) -> NoReturn:
    """Log as `service`, check the `side` schema, ``run(cfg, dsn)``, exit with its code."""
    service_logging(service, cfg)
    with schema_dsn(cfg, side) as dsn:
        code = run(cfg, dsn)
    sys.exit(code)
