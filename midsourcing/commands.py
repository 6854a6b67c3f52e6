"""The midsourcing commands of the `smsmta` CLI, registered by smsmta.cli.

`smsmta mid` and `smsmta marketing` run the two services; `smsmta operator ...` manages
the mid server's operators (a password comes from a hidden prompt or, with
`--password-stdin`, from the first line of standard input, never from an argument);
`smsmta account test-connection`, `smsmta delivery ...` are the marketing side's tools.
Exit codes: 0 success, 1 failure at run time (mid server refused or unreachable), 2 bad
input. Touches: the settings files, the databases, the mid API.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from smsmta import settings
from smsmta.cli_common import (
    MID_CONFIG_OPTION,
    load_config,
    load_mid,
    mid_db_options,
    mid_dsn,
    run_service,
    schema_dsn,
)

T = TypeVar("T")

MARKETING_CONFIG = click.option(
    "--config",
    "config_path",
    required=True,
    envvar="SMSMTA_MARKETING_CONFIG",
    type=click.Path(exists=True, dir_okay=False),
    help="The marketing settings file (or SMSMTA_MARKETING_CONFIG).",
)


def _fail(message: str, code: int = 1) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _load_marketing(config_path: str) -> settings.MarketingConfig:
    from smsmta import obs

    cfg = load_config(config_path, settings.MarketingConfig, "command")
    # tools print their results on stdout; the log (warnings and errors only) goes to stderr
    obs.configure_logging("marketing-cli", "warning", cfg.logging.format, cache=False)
    return cfg


# --- services -------------------------------------------------------------------------------


@click.command("mid")
@MID_CONFIG_OPTION
def mid_command(config_path: str) -> None:
    """Run the mid server: the HTTP API the marketing side pushes to and pulls from."""
    from midsourcing.server import run

    run_service("mid", load_mid(config_path), "mid", run)


@click.command("marketing")
@MARKETING_CONFIG
def marketing_command(config_path: str) -> None:
    """Run the marketing service: push new deliveries, pull statuses into KPIs."""
    from midsourcing.marketing_service import run

    run_service("marketing", _load_marketing(config_path), "marketing", run)


# --- operators (mid side) ------------------------------------------------------------------


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True, default=""
        )
    if not password:
        _fail("the password is empty", 2)
    return password


PASSWORD_STDIN = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


def _describe_operator(op: Any) -> str:
    rights = ", ".join(op.rights) or "no rights"
    password = "" if op.has_password else " (no password: cannot use the API)"
    return f"{op.login} ({op.label}): {rights}{password}"


@click.group("operator")
def operator_group() -> None:
    """Operators of the mid server (login, label, password, named rights)."""


@operator_group.command("add")
@click.argument("login")
@click.option("--label", required=True, help="The operator's label (required).")
@click.option(
    "--right",
    "rights",
    multiple=True,
    default=("ADMINISTRATION",),
    show_default=True,
    help="A named right; repeat for several. ADMINISTRATION: push deliveries and see the "
    "status of its own accounts; MONITORING: see every operator's accounts on /status.",
)
@PASSWORD_STDIN
@click.option("--no-password", is_flag=True, help="No password (the API will refuse it).")
@mid_db_options
def operator_add(
    login: str,
    label: str,
    rights: tuple[str, ...],
    password_stdin: bool,
    no_password: bool,
    config_path: str | None,
    url: str | None,
) -> None:
    """Create operator LOGIN; the password is prompted for (or read with --password-stdin)."""
    from midsourcing import auth

    password = None if no_password else _read_password(password_stdin)
    with mid_dsn(config_path, url, check_schema=True) as dsn:
        try:
            op = auth.add_operator(dsn, login, label, password, list(rights))
        except auth.OperatorError as exc:
            _fail(str(exc), 2)
    click.echo(f"created {_describe_operator(op)}")


@operator_group.command("passwd")
@click.argument("login")
@PASSWORD_STDIN
@mid_db_options
def operator_passwd(
    login: str, password_stdin: bool, config_path: str | None, url: str | None
) -> None:
    """Set the password of LOGIN (its tokens are revoked)."""
    from midsourcing import auth

    password = _read_password(password_stdin)
    with mid_dsn(config_path, url, check_schema=True) as dsn:
        try:
            op = auth.set_password(dsn, login, password)
        except auth.OperatorError as exc:
            _fail(str(exc), 2)
    click.echo(f"password changed: {_describe_operator(op)}")


@operator_group.command("rights")
@click.argument("login")
@click.option("--add", "add", multiple=True, help="Grant a right; repeat for several.")
@click.option("--remove", "remove", multiple=True, help="Withdraw a right.")
@click.option("--set", "replace", help="Comma-separated rights replacing all of them.")
@mid_db_options
def operator_rights(
    login: str,
    add: tuple[str, ...],
    remove: tuple[str, ...],
    replace: str | None,
    config_path: str | None,
    url: str | None,
) -> None:
    """Show or change the rights of LOGIN (changing them revokes its tokens)."""
    from midsourcing import auth

    with mid_dsn(config_path, url, check_schema=True) as dsn:
        try:
            if not add and not remove and replace is None:
                ops = [o for o in auth.list_operators(dsn) if o.login == login]
                if not ops:
                    raise auth.OperatorError(f"no operator {login!r}")
                op = ops[0]
            else:
                new = [r for r in replace.split(",") if r.strip()] if replace is not None else None
                op = auth.set_rights(dsn, login, add=list(add), remove=list(remove), replace=new)
        except auth.OperatorError as exc:
            _fail(str(exc), 2)
    click.echo(_describe_operator(op))


@operator_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@mid_db_options
def operator_list(as_json: bool, config_path: str | None, url: str | None) -> None:
    """List the operators."""
    from midsourcing import auth

    with mid_dsn(config_path, url, check_schema=True) as dsn:
        ops = auth.list_operators(dsn)
    if as_json:
        for op in ops:
            fields = {
                "login": op.login,
                "label": op.label,
                "rights": list(op.rights),
                "has_password": op.has_password,
            }
            click.echo(json.dumps(fields))
        return
    if not ops:
        click.echo("no operators")
    for op in ops:
        click.echo(_describe_operator(op))


@operator_group.command("remove")
@click.argument("login")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@mid_db_options
def operator_remove(login: str, yes: bool, config_path: str | None, url: str | None) -> None:
    """Remove operator LOGIN (its tokens go with it)."""
    from midsourcing import auth

    if not yes:
        click.confirm(f"remove operator {login}?", abort=True, err=True)
    with mid_dsn(config_path, url, check_schema=True) as dsn:
        try:
            auth.remove_operator(dsn, login)
        except auth.OperatorError as exc:
            _fail(str(exc), 2)
    click.echo(f"removed {login}")


# --- marketing accounts -------------------------------------------------------------------


@click.group("account")
def account_group() -> None:
    """External accounts: a marketing account's mid link, a mid account's provider."""


@account_group.command("test-connection")
@click.argument("name")
@MARKETING_CONFIG
def account_test_connection(name: str, config_path: str) -> None:
    """Prove the mid URL, the operator's credentials and rights, and the routing of NAME."""
    from midsourcing.client import MidClient, MidError

    cfg = _load_marketing(config_path)
    try:
        account = cfg.account(name)
    except KeyError:
        names = ", ".join(a.name for a in cfg.accounts) or "none"
        _fail(f"no marketing account {name!r} in {config_path} (accounts: {names})", 2)

    async def test() -> Any:
        async with MidClient(account) as client:
            return await client.test_connection()

    try:
        result = _run(test())
    except MidError as exc:
        _fail(f"connection test of {name} FAILED: {exc}")
    expected = f"{account.operator}_{account.name}"
    click.echo(f"mid server {account.mid_url}: reachable")
    click.echo(
        f"operator {result.operator.login} ({result.operator.label}): "
        f"rights {', '.join(result.operator.rights)}"
    )
    routes = [a.name for a in result.accounts]
    click.echo(f"mid accounts this operator routes to: {', '.join(routes) or 'none'}")
    if expected not in routes:
        _fail(
            f"connection test of {name} FAILED: the mid server has no enabled mid account "
            f"named {expected!r} (<operator>_<marketing account>)"
        )
    click.echo(f"connection test of {name}: OK, deliveries route to {expected}")


# --- deliveries ---------------------------------------------------------------------------


@click.group("delivery")
def delivery_group() -> None:
    """Deliveries of the marketing side: preview, create, list, status, pause/resume/cancel."""


@delivery_group.command("preview")
@click.option("--template", "template_name", required=True, help="Delivery template name.")
@click.option("--text", required=True, help='Message text, e.g. "Hello {first_name}".')
@click.option("--recipients", type=click.Path(exists=True, dir_okay=False), help="CSV file.")
@click.option("--count", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--json", "as_json", is_flag=True)
@MARKETING_CONFIG
def delivery_preview(
    template_name: str,
    text: str,
    recipients: str | None,
    count: int,
    as_json: bool,
    config_path: str,
) -> None:
    """What the phone gets, computed by the mid server with the mid account's settings."""
    from midsourcing.client import MidClient, MidError
    from midsourcing.marketing import MarketingError, find_template, template_options
    from midsourcing.recipients import CsvError, read_csv, text_fields
    from midsourcing.schemas import PreviewRequest

    cfg = _load_marketing(config_path)
    try:
        template = find_template(cfg, template_name)
        if recipients:
            parsed = read_csv(recipients, text, cfg.account(template.account).default_country)
            texts = [row.text for row in parsed.rows[:count]]
            who = [f"row {row.line} ({row.mobile})" for row in parsed.rows[:count]]
            if not texts:
                raise CsvError(f"no valid recipient in {recipients}")
        else:
            text_fields(text)
            texts, who = [text], ["the text as written"]
    except (MarketingError, CsvError) as exc:
        _fail(str(exc), 2)
    request = PreviewRequest(
        marketing_account=template.account,
        options=template_options(template, None),
        texts=texts,
    )

    async def ask() -> Any:
        async with MidClient(cfg.account(template.account)) as client:
            return await client.preview(request)

    try:
        result = _run(ask())
    except MidError as exc:
        _fail(f"preview failed: {exc}")
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    click.echo(
        f"mid account {result.account}; sender shown: {result.sender} ({result.sender_origin})"
    )
    click.echo(
        f"encoding mapping: {', '.join(result.encoding_mapping)}; "
        f"transliteration {'on' if result.transliteration else 'off'}"
    )
    for label, p in zip(who, result.previews, strict=True):
        click.echo(f"\n{label}: {p.text!r}")
        if p.encoding is None:
            click.echo(f"  NOT SENDABLE: {p.error}")
            continue
        click.echo(
            f"  {p.encoding} (data_coding {p.data_coding}), {p.characters} characters, "
            f"{p.units} units, {p.parts} part(s) of {p.part_capacity}"
            + (" in message_payload" if p.message_payload else "")
        )
        click.echo(f"  parts end at characters: {', '.join(map(str, p.part_ends))}")
        if p.transliterated:
            changes = ", ".join(
                f"{t.char!r}->{t.replacement!r} at {t.index}" for t in p.transliterated
            )
            click.echo(f"  transliterated: {changes}")
        if p.forced_by is not None:
            click.echo(
                f"  {p.forced_by.char!r} at {p.forced_by.index} is not in "
                f"{p.forced_by.encoding}: it forces {p.encoding}"
            )
        verdict = "within" if p.within_max_parts else "OVER"
        click.echo(f"  max SMS per message {p.max_parts}: {verdict}")
        if p.sent_text is not None and p.sent_text != p.text:
            click.echo(f"  the phone shows: {p.sent_text!r}")
        if p.error:
            click.echo(f"  {p.error}")


@delivery_group.command("create")
@click.option("--template", "template_name", required=True, help="Delivery template name.")
@click.option(
    "--recipients", required=True, type=click.Path(exists=True, dir_okay=False), help="CSV file."
)
@click.option("--text", required=True, help='Message text, e.g. "Hello {first_name}".')
@click.option("--label", default="", help="A label for the delivery.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@MARKETING_CONFIG
def delivery_create(
    template_name: str, recipients: str, text: str, label: str, as_json: bool, config_path: str
) -> None:
    """Create a delivery: one message per valid CSV row; invalid rows are listed, not kept.

    The marketing service pushes it to the mid server.
    """
    import psycopg

    from midsourcing.marketing import MarketingError, create_delivery
    from midsourcing.recipients import CsvError

    cfg = _load_marketing(config_path)

    async def create(dsn: str) -> Any:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await create_delivery(conn, cfg, template_name, recipients, text, label)

    with schema_dsn(cfg, "marketing") as dsn:
        try:
            created = _run(create(dsn))
        except (MarketingError, CsvError) as exc:
            _fail(str(exc), 2)
    kept, rejected = created.recipients.rows, created.recipients.rejected
    if as_json:
        click.echo(
            json.dumps(
                {
                    "delivery_id": created.delivery_id,
                    "recipients": len(kept),
                    "rejected": [{"row": r.line, "reason": r.reason} for r in rejected],
                }
            )
        )
        return
    for rejection in rejected:
        click.echo(f"rejected {rejection}", err=True)
    click.echo(
        f"delivery {created.delivery_id} created: {len(kept)} recipient(s), "
        f"{len(rejected)} row(s) rejected"
    )


@delivery_group.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@MARKETING_CONFIG
def delivery_list(limit: int, config_path: str) -> None:
    """List the latest deliveries with their KPIs."""
    import psycopg
    from rich.console import Console
    from rich.table import Table

    from midsourcing.marketing import list_deliveries

    cfg = _load_marketing(config_path)

    async def fetch(dsn: str) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await list_deliveries(conn, limit)

    with schema_dsn(cfg, "marketing") as dsn:
        rows = _run(fetch(dsn))
    table = Table(title=f"{len(rows)} deliver{'y' if len(rows) == 1 else 'ies'}")
    columns = ("id", "label", "template", "state", "total", "to send", "sent", "delivered")
    for column in (*columns, "failed hard", "failed soft", "cancelled", "no receipt", "created"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["label"],
            r["template"],
            r["state"],
            str(r["total"]),
            str(r["to_send"]),
            str(r["sent"]),
            str(r["delivered"]),
            str(r["failed_hard"]),
            str(r["failed_soft"]),
            str(r["cancelled"]),
            str(r["no_receipt"]),
            r["created_at"].isoformat(timespec="seconds"),
        )
    Console(width=200).print(table)


@delivery_group.command("status")
@click.argument("delivery_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@MARKETING_CONFIG
def delivery_status_command(delivery_id: int, as_json: bool, config_path: str) -> None:
    """The KPIs of delivery DELIVERY_ID: to send, sent, delivered, failed, by error."""
    import psycopg
    from rich.console import Console
    from rich.table import Table

    from midsourcing.marketing import MarketingError, delivery_status

    cfg = _load_marketing(config_path)

    async def fetch(dsn: str) -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await delivery_status(conn, delivery_id)

    with schema_dsn(cfg, "marketing") as dsn:
        try:
            status = _run(fetch(dsn))
        except MarketingError as exc:
            _fail(str(exc), 2)
    if as_json:
        click.echo(json.dumps(status))
        return
    console = Console(width=160)
    title = (
        f"delivery {status['id']} {status['label']!r}: {status['state']} "
        f"(template {status['template']}, account {status['account']}, "
        f"mid delivery {status['mid_delivery_id'] or '-'} {status['mid_state'] or ''})"
    )
    table = Table(title=title)
    table.add_column("KPI")
    table.add_column("messages", justify="right")
    total = status["total"] or 1
    for key, name in (
        ("total", "recipients"),
        ("to_send", "to send"),
        ("sent", "sent (awaiting receipt)"),
        ("delivered", "delivered"),
        ("failed_hard", "failed (hard)"),
        ("failed_soft", "failed (soft)"),
        ("cancelled", "cancelled"),
        ("no_receipt", "no receipt (validity over)"),
        ("processed", "processed"),
        ("rejected", "rejected at import"),
    ):
        share = "" if key in ("total", "rejected") else f" ({100 * status[key] / total:.1f} %)"
        table.add_row(name, f"{status[key]}{share}")
    console.print(table)
    if status["errors"]:
        errors = Table(title="failures by error")
        for column in ("error", "type", "count"):
            errors.add_column(column)
        for e in status["errors"]:
            errors.add_row(e["error"], e["failure_type"], str(e["count"]))
        console.print(errors)
    if status["push_error"]:
        console.print(f"last push error: {status['push_error']}")


def _delivery_action(action: str) -> click.Command:
    @click.command(action)
    @click.argument("delivery_id", type=int)
    @MARKETING_CONFIG
    def command(delivery_id: int, config_path: str) -> None:
        import psycopg

        from midsourcing.client import MidClient, MidError
        from midsourcing.marketing import MarketingError, cancel_local, delivery_account

        cfg = _load_marketing(config_path)

        async def act(dsn: str) -> str:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                account, mid_id, state = await delivery_account(conn, delivery_id)
                if action == "cancel":
                    await cancel_local(conn, delivery_id)
                if mid_id is None:
                    return f"delivery {delivery_id} is not on the mid server yet ({state})"
                async with MidClient(cfg.account(account)) as client:
                    info = await client.action(mid_id, action)
                return f"delivery {delivery_id} (mid {mid_id}): {info.state.value}"

        with schema_dsn(cfg, "marketing") as dsn:
            try:
                click.echo(_run(act(dsn)))
            except MarketingError as exc:
                _fail(str(exc), 2)
            except MidError as exc:
                _fail(f"{action} failed: {exc}")

    command.help = {
        "pause": "Pause DELIVERY_ID on the mid server.",
        "resume": "Resume DELIVERY_ID on the mid server.",
        "cancel": "Cancel DELIVERY_ID: messages not sent yet end as cancelled.",
    }[action]
    return command


for _action in ("pause", "resume", "cancel"):
    delivery_group.add_command(_delivery_action(_action))


def register(main: click.Group) -> None:
    """Add the midsourcing commands to the `smsmta` group."""
    for command in (
        mid_command,
        marketing_command,
        operator_group,
        account_group,
        delivery_group,
    ):
        main.add_command(command)
