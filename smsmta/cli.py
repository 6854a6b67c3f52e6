"""`smsmta`: the one console script; every service and tool is a subcommand.

Exit codes: 0 success, 1 failure at run time, 2 bad input (invalid settings, usage).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import click

from smsmta import __version__, settings
from smsmta.cli_common import (
    MID_CONFIG_OPTION,
    URL_OPTION,
    db_target,
    load_mid,
    mid_db_options,
    mid_dsn,
    require_schema,
    run_service,
    service_logging,
)
from smsmta.db.engine import database

SIDE_CHOICES = click.Choice(["mid", "marketing", "all"])
T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="smsmta")
def main() -> None:
    """smsmta: bulk SMS over SMPP 3.4 with durable, reconciled delivery receipts."""


# --- config ------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Check settings files and print their schema."""


@config.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def config_check(files: tuple[str, ...]) -> None:
    """Validate FILES: print every problem and exit 2, or one line per account and exit 0."""
    try:
        loaded = settings.load_many(files)
    except settings.ConfigError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        count = len(exc.issues)
        click.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
        sys.exit(2)
    for path, cfg in zip(files, loaded, strict=True):
        if not cfg.accounts:
            click.echo(f"{path}: {cfg.kind}: no accounts")
        for account in cfg.accounts:
            click.echo(f"{path}: {_describe(cfg, account)}")


def _describe(
    cfg: settings.MidConfig | settings.MarketingConfig,
    account: settings.Account | settings.MarketingAccount,
) -> str:
    state = "enabled" if account.enabled else "disabled"
    if isinstance(account, settings.MarketingAccount):
        return f"marketing account {account.name} ({state}): {account.operator} @ {account.mid_url}"
    assert isinstance(cfg, settings.MidConfig)
    c, t = account.connection, account.throughput
    rate = f"{t.max_mt_per_second:g} MT/s" if t.max_mt_per_second else "no rate cap"
    return (
        f"mid account {account.name} ({state}): {c.mode.value} {c.system_id}@{c.server}:{c.port}"
        f"{' tls' if c.tls else ''}, {c.connections} connection(s) x {cfg.mta.children} "
        f"children, window {t.window}, {rate}"
    )


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of settings files (for editor completion)."""
    click.echo(json.dumps(settings.json_schema(), indent=2))


# --- db ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create and migrate the database schemas."""


def _db_options(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option(
        "--side",
        type=SIDE_CHOICES,
        default=None,
        help="Which schema: mid, marketing or all (default: the config file's kind, else all).",
    )(func)
    func = URL_OPTION(func)
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="A settings file naming the database.",
    )(func)
    return func


@db.command("upgrade")
@_db_options
@click.option("--revision", default="head", show_default=True)
def db_upgrade(config_path: str | None, url: str | None, side: str | None, revision: str) -> None:
    """Migrate the schemas up (to their heads by default)."""
    from smsmta.db import migrate

    with db_target(config_path, url, side) as (target, sides):
        for name in sides:
            migrate.upgrade(target, name, revision)
            click.echo(f"{name}: at {', '.join(migrate.current(target, name)) or 'base'}")


@db.command("downgrade")
@_db_options
@click.option("--revision", default="-1", show_default=True, help="'-1', 'base' or a revision.")
def db_downgrade(config_path: str | None, url: str | None, side: str | None, revision: str) -> None:
    """Migrate the schemas down (one step by default)."""
    from smsmta.db import migrate

    with db_target(config_path, url, side) as (target, sides):
        for name in reversed(sides):
            migrate.downgrade(target, name, revision)
            click.echo(f"{name}: at {', '.join(migrate.current(target, name)) or 'base'}")


@db.command("current")
@_db_options
def db_current(config_path: str | None, url: str | None, side: str | None) -> None:
    """Print the revision each schema is at."""
    from smsmta.db import migrate

    with db_target(config_path, url, side) as (target, sides):
        for name in sides:
            at = migrate.current(target, name)
            head = migrate.heads(name)
            state = "up to date" if set(at) == set(head) else f"head is {', '.join(head)}"
            click.echo(f"{name}: at {', '.join(at) or 'base'} ({state})")


# --- services ----------------------------------------------------------------------------


@main.command()
@MID_CONFIG_OPTION
def mta(config_path: str) -> None:
    """Run the MTA: a supervisor and its child processes holding the transmitter binds."""
    import os

    cfg = load_mid(config_path)
    metrics_dir = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # before prometheus_client is imported
        metrics_dir = tempfile.mkdtemp(prefix="smsmta-mta-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    import uvloop

    from mta.supervisor import Supervisor

    service_logging("mta", cfg)
    try:
        with database(settings.database_url(cfg), cfg.database.embedded_dir) as url:
            require_schema(url, "mid")
            rendered = url.render_as_string(hide_password=False)
            code = uvloop.run(Supervisor(config_path, cfg, rendered).run())
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(code)


# --- SMS process (sms_process) ----------------------------------------------------------


@main.command("sms-process")
@MID_CONFIG_OPTION
def sms_process_command(config_path: str) -> None:
    """Run the SMS process: receivers, receipt reconciliation, MO, auto-replies (one per
    instance; a second one against the same database refuses to start, exit code 1)."""
    from sms_process.process import run

    run_service("sms-process", load_mid(config_path), "mid", run)


@main.group()
def receipts() -> None:
    """Inspect delivery receipts."""


@receipts.command("unmatched")
@mid_db_options
@click.option("--account", help="Only this account (internal name).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def receipts_unmatched(
    config_path: str | None, url: str | None, account: str | None, limit: int, as_json: bool
) -> None:
    """List receipts that matched no MT (after the match wait) or had no readable id."""
    from sms_process.admin import unmatched_receipts

    with mid_dsn(config_path, url, check_schema=False) as dsn:
        total, rows = unmatched_receipts(dsn, account, limit)
    if as_json:
        for r in rows:
            fields = {**r.__dict__, "received_at": r.received_at.isoformat()}
            click.echo(json.dumps(fields, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{total} unmatched receipt(s), newest {len(rows)} shown")
    for column in ("id", "account", "provider id", "stat", "err", "result", "received", "why"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r.id),
            r.account,
            r.provider_id or "-",
            r.stat or "-",
            r.err or "-",
            r.result,
            r.received_at.isoformat(timespec="seconds"),
            r.note or "",
        )
    Console(width=200).print(table)


@main.group("message-log")
def message_log_group() -> None:
    """The message log: normalised failure texts and their qualification."""


@message_log_group.command("list")
@mid_db_options
@click.option("--type", "qualification", type=click.Choice(["hard", "soft", "ignored"]))
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def message_log_list(
    config_path: str | None, url: str | None, qualification: str | None, limit: int
) -> None:
    """List message-log entries, most frequent first."""
    from rich.console import Console
    from rich.table import Table

    from sms_process.admin import message_log

    with mid_dsn(config_path, url, check_schema=False) as dsn:
        entries = message_log(dsn, qualification, limit)
    table = Table(title=f"message log: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    for column in ("id", "type", "count", "message", "first seen text", "last seen"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            str(e.id),
            e.qualification,
            str(e.count),
            e.key,
            e.first_text,
            e.last_seen_at.isoformat(timespec="seconds"),
        )
    Console(width=200).print(table)


@message_log_group.command("set")
@mid_db_options
@click.argument("qualification", metavar="TYPE", type=click.Choice(["hard", "soft", "ignored"]))
@click.argument("entry_id", metavar="ID", type=int)
def message_log_set(
    config_path: str | None, url: str | None, qualification: str, entry_id: int
) -> None:
    """Qualify message-log entry ID as TYPE (hard, soft or ignored)."""
    from sms_process.admin import set_qualification

    with mid_dsn(config_path, url, check_schema=False) as dsn:
        entry = set_qualification(dsn, qualification, entry_id)
    if entry is None:
        click.echo(f"no message-log entry {entry_id}", err=True)
        sys.exit(1)
    click.echo(f"{entry.id}: {entry.qualification}: {entry.key}")


@main.group("blacklist")
def blacklist_group() -> None:
    """Per-short-code blacklists (opt-outs); numbers are put in the canonical form first."""


def _blacklist_options(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option(
        "--country",
        default="",
        help="ISO 3166 alpha-2 country of national numbers (0612345678); default: refused.",
    )(func)
    return mid_db_options(func)


def _blacklist_change_options(func: click.decorators.FC) -> click.decorators.FC:
    """`_blacklist_options` and the SHORT_CODE NUMBERS... arguments of `add` and `remove`."""
    func = click.argument("numbers", nargs=-1, required=True)(func)
    func = click.argument("short_code")(func)
    return _blacklist_options(func)


@blacklist_group.command("add")
@_blacklist_change_options
@click.option("--reason", default="operator", show_default=True, help="Kept with the entry.")
def blacklist_add_command(reason: str, **params: Any) -> None:
    """Stop messages from SHORT_CODE (or a long number) to NUMBERS."""
    from sms_process.admin import blacklist_add

    _blacklist_change(partial(blacklist_add, reason=reason), "added", "already there", **params)


@blacklist_group.command("remove")
@_blacklist_change_options
def blacklist_remove_command(**params: Any) -> None:
    """Let SHORT_CODE send to NUMBERS again."""
    from sms_process.admin import blacklist_remove

    _blacklist_change(blacklist_remove, "removed", "were not there", **params)


def _blacklist_change(
    change: Callable[..., tuple[str, list[str], int]],
    done: str,
    not_done: str,
    *,
    config_path: str | None,
    url: str | None,
    country: str,
    short_code: str,
    numbers: tuple[str, ...],
) -> None:
    """`blacklist add|remove`: `change(dsn, short_code, numbers, default_country=...)` (an
    admin function), then how many entries it changed and how many it did not."""
    scope, addresses, changed = _blacklist_call(
        config_path,
        url,
        lambda dsn: change(dsn, short_code, list(numbers), default_country=_country(country)),
    )
    click.echo(f"{scope}: {changed} {done}, {len(addresses) - changed} {not_done}")


@blacklist_group.command("list")
@_blacklist_options
@click.option("--short-code", help="Only this short code (or long number).")
@click.option("--number", help="Only this subscriber number (any written form).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def blacklist_list_command(
    config_path: str | None,
    url: str | None,
    country: str,
    short_code: str | None,
    number: str | None,
    limit: int,
) -> None:
    """List blacklist entries, newest first."""
    from rich.console import Console
    from rich.table import Table

    from sms_process.admin import blacklist

    entries = _blacklist_call(
        config_path,
        url,
        lambda dsn: blacklist(dsn, short_code, number, limit, _country(country)),
    )
    table = Table(title=f"blacklist: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    for column in ("short code", "number", "reason", "since"):
        table.add_column(column)
    for e in entries:
        table.add_row(e.short_code, e.address, e.reason, e.since.isoformat(timespec="seconds"))
    Console(width=200).print(table)


def _blacklist_call(config_path: str | None, url: str | None, call: Callable[[str], T]) -> T:
    """`call` on the mid database's DSN; a refused blacklist change is a click error."""
    from sms_process.admin import BlacklistError

    try:
        with mid_dsn(config_path, url, check_schema=False) as dsn:
            return call(dsn)
    except BlacklistError as error:
        raise click.ClickException(str(error)) from None


def _country(value: str) -> str:
    from smsmta.numbers import check_country

    try:
        return check_country(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--country") from None


def _register_simulator() -> None:
    from smsmta.simulator import cli_command

    main.add_command(cli_command())


_register_simulator()


# --- demo ------------------------------------------------------------------------------


@main.command()
@click.option("--messages", default=1000, show_default=True, help="Recipients of the delivery.")
@click.option("--keep-running", is_flag=True, help="Leave everything running after the delivery.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Keep the demo's database, settings and logs here (default: a fresh directory, "
    "removed at exit).",
)
def demo(messages: int, keep_running: bool, data_dir: str | None) -> None:
    """Run the whole stack against the SMSC simulator, with nothing configured."""
    from smsmta.demo import run

    sys.exit(run(messages, keep_running, data_dir))


# --- midsourcing: mid, marketing, operator, account, delivery (midsourcing.commands) ----------


def _register_midsourcing() -> None:
    from midsourcing.commands import register

    register(main)


_register_midsourcing()


# --- account test: the go-live check of a provider account (smsmta.golive) -----------------


def _register_account_test() -> None:
    account = main.commands.get("account")
    if not isinstance(account, click.Group):  # the midsourcing group is absent: make it
        account = click.Group("account", help="External accounts.")
        main.add_command(account)

    @account.command("test")
    @click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(dir_okay=False),
        help="The mid settings file.",
    )
    @click.argument("name")
    @click.option("--to", required=True, help="MSISDN of a test handset, e.g. +33612345678.")
    @click.option(
        "--wait",
        default=60.0,
        show_default=True,
        type=click.FloatRange(min=0.1),
        help="Seconds to wait for the receipt.",
    )
    @click.option("--text", default="smsmta go-live test", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="One JSON report on stdout.")
    def account_test(
        config_path: str, name: str, to: str, wait: float, text: str, as_json: bool
    ) -> None:
        """Go-live check of mid account NAME: bind, send one MT to --to, read its receipt.

        Says which id format and regex matched and, for each failed step, which settings
        to change. Exit 0 when every step passed, 1 when one failed, 2 for bad input.
        """
        from smsmta.golive import run_command

        sys.exit(run_command(config_path, name, to, wait=wait, text=text, as_json=as_json))


_register_account_test()

if __name__ == "__main__":
    main()
