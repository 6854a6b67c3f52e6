"""The mid server's status page: accounts, binds, rates, queue, deliveries in progress.

`collect()` reads what an operator wants at a glance, from the database (every host's
work shows there) and from the metrics endpoints of this host's MTA and SMS process
(binds exist only in those processes): per account its binds up, the binds the SMSC
refused (smsmta.binds: how many, and the command_status of the last), the MT rate over the
last 10 seconds (provider ids recorded), the configured cap and the rate in force, the
queue (due, oldest due, being sent); then the deliveries not finished, with their KPIs.
`render()` turns it into one HTML page that refreshes itself every 5 seconds; every
value is escaped. Served at /status behind the API's authentication: an operator with
ADMINISTRATION sees its own accounts (mid.external_account.operator_login) and their
deliveries only, so no label, count or bind of another operator shows; an operator with
the MONITORING right sees every account (`collect(..., operator=None)`).
Touches: the database (read only), this host's metrics endpoints over HTTP.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import psycopg

from smsmta.settings import MidConfig

REFRESH_SECONDS = 5

ACCOUNTS = """
SELECT a.id, a.internal_name, a.enabled,
       (SELECT count(*) FROM mid.provider_msg_id p
         WHERE p.account_id = a.id AND p.created_at > now() - interval '10 seconds') / 10.0,
       (SELECT count(*) FROM mid.broad_log b
         WHERE b.account_id = a.id AND b.status = 'pending' AND b.next_try_at <= now()),
       (SELECT extract(epoch FROM now() - min(b.next_try_at)) FROM mid.broad_log b
         WHERE b.account_id = a.id AND b.status = 'pending' AND b.next_try_at <= now()),
       (SELECT count(*) FROM mid.broad_log b WHERE b.account_id = a.id AND b.status = 'sending')
FROM mid.external_account a
WHERE %(operator)s::text IS NULL OR a.operator_login = %(operator)s
ORDER BY a.internal_name
"""

DELIVERIES = """
SELECT d.id, a.internal_name, d.marketing_delivery_id, d.label, d.state::text, d.to_send,
       d.sent, d.delivered, d.failed_hard, d.failed_soft, d.no_receipt, d.created_at
FROM mid.delivery d JOIN mid.external_account a ON a.id = d.account_id
WHERE d.state IN ('pending', 'running', 'paused')
  AND (%(operator)s::text IS NULL OR a.operator_login = %(operator)s)
ORDER BY d.created_at DESC
LIMIT 50
"""

_SAMPLE = re.compile(r"^(smsmta_[a-z_]+)\{([^}]*)\} ([0-9.eE+-]+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class AccountStatus:
    name: str
    enabled: bool
    mt_per_second: float
    due: int
    oldest_due_seconds: float | None
    sending: int
    cap: float | None = None
    rate_in_force: float | None = None
    binds: dict[str, int] = field(default_factory=dict)
    binds_refused: int = 0
    last_refusal: str | None = None  # the command_status name of the latest refused bind
    last_refusal_at: float = 0.0  # its Unix time


@dataclass
class DeliveryStatus:
    id: int
    account: str
    marketing_delivery_id: str
    label: str
    state: str
    to_send: int
    sent: int
    delivered: int
    failed_hard: int
    failed_soft: int
    no_receipt: int
    created_at: datetime


@dataclass
class Status:
    accounts: list[AccountStatus]
    deliveries: list[DeliveryStatus]
    metrics_errors: list[str]
    at: datetime


async def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """The labelled samples of a Prometheus text endpoint."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        response = await client.get(url)
        response.raise_for_status()
    samples = []
    for line in response.text.splitlines():
        if match := _SAMPLE.match(line):
            labels = dict(_LABEL.findall(match.group(2)))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def _metrics_url(host: str, port: int | None) -> str | None:
    if not port:
        return None
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{port}/metrics"


async def collect(conn: psycopg.AsyncConnection, config: MidConfig, operator: str | None) -> Status:
    """The status of `operator`'s accounts and deliveries; of every one with None."""
    scope = {"operator": operator}
    cursor = await conn.execute(ACCOUNTS, scope)
    accounts = {
        row[1]: AccountStatus(row[1], row[2], float(row[3]), row[4], row[5], row[6])
        for row in await cursor.fetchall()
    }
    for configured in config.accounts:
        if configured.name in accounts:
            accounts[configured.name].cap = configured.throughput.max_mt_per_second or None
    errors = []
    for service, url in (
        ("MTA", _metrics_url(config.mta.metrics_host, config.mta.metrics_port)),
        ("SMS process", _metrics_url(config.sms_process.metrics_host,
                                     config.sms_process.metrics_port)),
    ):  # fmt: skip
        if url is None:
            continue
        try:
            samples = await scrape(url)
        except (httpx.HTTPError, OSError) as error:
            errors.append(f"{service} metrics unreachable at {url}: {type(error).__name__}")
            continue
        for name, labels, value in samples:
            account = accounts.get(labels.get("account", ""))
            if account is None:
                continue
            if name == "smsmta_binds_up":
                kind = labels.get("kind", "?")
                account.binds[kind] = account.binds.get(kind, 0) + int(value)
            elif name == "smsmta_mt_rate_cap":
                account.rate_in_force = (account.rate_in_force or 0.0) + value
            elif name == "smsmta_binds_refused_total":
                account.binds_refused += int(value)
            elif (
                name == "smsmta_binds_last_refused_timestamp_seconds"
                and value > account.last_refusal_at
            ):
                account.last_refusal_at = value
                account.last_refusal = labels.get("reason", "?")
    cursor = await conn.execute(DELIVERIES, scope)
    deliveries = [DeliveryStatus(*row) for row in await cursor.fetchall()]
    return Status(list(accounts.values()), deliveries, errors, datetime.now(UTC))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rate(value: float | None) -> str:
    return "unlimited" if not value else f"{value:,.0f}/s"


def render(status: Status, operator: str) -> str:
    rows = []
    for a in status.accounts:
        binds = ", ".join(f"{kind} {n}" for kind, n in sorted(a.binds.items())) or "none up"
        oldest = "-" if a.oldest_due_seconds is None else f"{a.oldest_due_seconds:,.0f} s"
        state = "enabled" if a.enabled else "disabled"
        refused = "0"
        if a.binds_refused:
            when = datetime.fromtimestamp(a.last_refusal_at, UTC)
            refused = f"{a.binds_refused:,} (last {a.last_refusal} at {when:%H:%M:%S} UTC)"
        rows.append(
            f"<tr class='account' data-account='{_e(a.name)}'><td>{_e(a.name)}</td>"
            f"<td>{state}</td><td class='binds'>{_e(binds)}</td>"
            f"<td class='rate'>{a.mt_per_second:,.1f}/s</td><td>{_rate(a.cap)}</td>"
            f"<td>{_rate(a.rate_in_force) if a.rate_in_force is not None else '-'}</td>"
            f"<td class='due'>{a.due:,}</td><td>{oldest}</td><td>{a.sending:,}</td>"
            f"<td class='refused'>{_e(refused)}</td></tr>"
        )
    deliveries = []
    for d in status.deliveries:
        done = d.delivered + d.failed_hard + d.failed_soft + d.no_receipt
        share = f"{done / d.to_send:.0%}" if d.to_send else "-"
        deliveries.append(
            f"<tr class='delivery' data-delivery='{d.id}'><td>{d.id}</td><td>{_e(d.account)}</td>"
            f"<td>{_e(d.marketing_delivery_id)}</td><td>{_e(d.label)}</td><td>{_e(d.state)}</td>"
            f"<td>{d.to_send:,}</td><td>{d.sent:,}</td><td>{d.delivered:,}</td>"
            f"<td>{d.failed_hard:,}</td><td>{d.failed_soft:,}</td><td>{d.no_receipt:,}</td>"
            f"<td>{share}</td></tr>"
        )
    notes = "".join(f"<p class='warning'>{_e(error)}</p>" for error in status.metrics_errors)
    no_deliveries = "<tr><td colspan='12'>no delivery in progress</td></tr>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>smsmta status</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ background: #eee; }} td:first-child, th:first-child {{ text-align: left; }}
.warning {{ color: #a40; }}
</style></head>
<body>
<h1>smsmta status</h1>
<p>Signed in as {_e(operator)}; updated {status.at:%Y-%m-%d %H:%M:%S} UTC, every
{REFRESH_SECONDS} s.</p>
{notes}
<h2>Accounts</h2>
<table id="accounts"><tr><th>account</th><th>state</th><th>binds up</th><th>MT rate (10 s)</th>
<th>cap</th><th>rate in force</th><th>queue (due)</th><th>oldest due</th><th>being sent</th>
<th>binds refused</th></tr>
{"".join(rows) or "<tr><td colspan='10'>no account</td></tr>"}
</table>
<h2>Deliveries in progress</h2>
<table id="deliveries"><tr><th>id</th><th>account</th><th>marketing id</th><th>label</th>
<th>state</th><th>to send</th><th>sent</th><th>delivered</th><th>failed hard</th>
<th>failed soft</th><th>no receipt</th><th>done</th></tr>
{"".join(deliveries) or no_deliveries}
</table>
</body></html>
"""
