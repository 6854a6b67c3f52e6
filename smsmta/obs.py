"""Observability shared by every service: structlog JSON logging and Prometheus metrics.

`configure_logging()` sends one JSON object a line to stderr (or readable console lines)
with the service name, an ISO timestamp and the level; a processor masks the value of
any key that names a secret (password, secret, token, authorization) anywhere in an
event, so a password cannot reach the log through a careless `log.info(..., **settings)`,
and the password of any URL written with credentials (`scheme://user:password@host`).
Personal data is masked where it is written, with `mask_number()` (a phone number keeps its
last 2 characters, its first 4 when international), `mask_text()` (a message text becomes
its length) and `mask_receipt_text()` (a receipt's `Text:` preview of the MT, for the
message log); the `logging.show_personal_data` setting (`configure_logging(
show_personal_data=True)`, for debugging) lets them through whole.
`serve_metrics()` exposes the default registry on the port of the service's settings.
Metrics are defined here, once, and imported by the services that update them.
Touches: stderr, one listening TCP socket for /metrics.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from smsmta import __version__

MASK = "**********"
_personal = {"show": False}
"""Whether personal data (numbers, texts) is written whole: logging.show_personal_data."""
_RECEIPT_TEXT = re.compile(r"(\btext:)(.*)\Z", re.IGNORECASE | re.DOTALL)


def show_personal_data(show: bool) -> None:
    """Write phone numbers and message texts whole (debugging) or masked (the default)."""
    _personal["show"] = show


def personal_data_shown() -> bool:
    """Whether numbers and texts are written whole (logging.show_personal_data)."""
    return _personal["show"]


def mask_number(number: str) -> str:
    """A phone number for a log line: its last 2 characters, and in international form
    (`+...`, 9 characters or more) its first 4 too (the country shows): `+336******11`."""
    if _personal["show"]:
        return number
    if number.startswith("+") and len(number) >= 9:
        return number[:4] + "*" * (len(number) - 6) + number[-2:]
    return "*" * max(0, len(number) - 2) + number[-2:]


def mask_text(text: str) -> str:
    """A message text for a log line: its length only."""
    return text if _personal["show"] else f"<{len(text)} characters>"


def mask_receipt_text(text: str) -> str:
    """A receipt text (or `SR ...|MESSAGE=<receipt text>`) whose Annex B `Text:` preview,
    the start of the MT, becomes its length; the id, stat and err stay for diagnosis."""
    if _personal["show"]:
        return text
    return _RECEIPT_TEXT.sub(lambda m: f"{m.group(1)}<{len(m.group(2))} characters>", text)


_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|credential", re.IGNORECASE)

BUILD_INFO = Info("smsmta_build", "smsmta version and the service this process runs")

# --- MTA (children write them; the supervisor serves the sum, see mta.supervisor) --------
# Gauges that children each hold a part of are summed across live processes ("livesum").

MT_PARTS_SUBMITTED = Counter(
    "smsmta_mt_parts_submitted", "submit_sm PDUs sent to the SMSC", ["account"]
)
MT_RESPONSES = Counter(
    "smsmta_mt_responses", "submit_sm_resp received, by command_status name", ["account", "status"]
)
MT_WINDOW_IN_FLIGHT = Gauge(
    "smsmta_mt_window_in_flight",
    "submit_sm awaiting their response or their durable outcome",
    ["account"],
    multiprocess_mode="livesum",
)
MT_SUBMIT_LATENCY = Histogram(
    "smsmta_mt_submit_latency_seconds",
    "submit_sm to submit_sm_resp",
    ["account"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MT_RATE_CAP = Gauge(
    "smsmta_mt_rate_cap",
    "MT parts per second this account may send now (shares x AIMD), 0 = unlimited",
    ["account"],
    multiprocess_mode="livesum",
)
MT_CONFIGURED_CAP = Gauge(
    "smsmta_mt_configured_cap",
    "the account's max MT per second from its settings, 0 = unlimited",
    ["account"],
    multiprocess_mode="max",
)
BINDS_UP = Gauge(
    "smsmta_binds_up",
    "SMPP binds currently bound",
    ["account", "kind"],
    multiprocess_mode="livesum",
)
BINDS_REFUSED = Counter(
    "smsmta_binds_refused",
    "binds the SMSC refused, by command_status name (smsmta.binds.BindWatch)",
    ["account", "reason"],
)
BINDS_LAST_REFUSED = Gauge(
    "smsmta_binds_last_refused_timestamp_seconds",
    "when a bind of the account was last refused with this status (Unix time)",
    ["account", "reason"],
    multiprocess_mode="max",
)
RECONNECTS = Counter("smsmta_reconnects", "binds lost or refused, then retried", ["account"])
QUEUE_DEPTH = Gauge(
    "smsmta_queue_depth", "pending messages due now", ["account"], multiprocess_mode="max"
)
QUEUE_OLDEST_AGE = Gauge(
    "smsmta_queue_oldest_age_seconds",
    "how long the oldest due pending message has been due",
    ["account"],
    multiprocess_mode="max",
)
MT_RETRIES = Counter(
    "smsmta_mt_retries", "parts or messages tried again, by reason", ["account", "reason"]
)
MT_POSSIBLE_DUPLICATES = Counter(
    "smsmta_mt_possible_duplicates",
    "parts sent again although the SMSC may have accepted them (timeout, lost link)",
    ["account"],
)
MT_THROTTLED = Counter(
    "smsmta_mt_throttled", "throttling answers (ESME_RTHROTTLED, ESME_RMSGQFUL)", ["account"]
)
AIMD_DECREASES = Counter(
    "smsmta_aimd_decreases", "times repeated throttling halved the sending rate", ["account"]
)
MTA_CHILD_RESTARTS = Counter("smsmta_mta_child_restarts", "MTA children restarted after dying")
DB_FLUSH_SECONDS = Histogram(
    "smsmta_db_flush_seconds",
    "one batched write of outcomes",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@")
"""The password of a URL with credentials (postgresql://user:password@host/db)."""


def _mask_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text) if "://" in text else text


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: MASK if _SECRET_KEY.search(str(key)) else _mask(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_mask(item) for item in value)
    if isinstance(value, str):
        return _mask_url_passwords(value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask every value whose key names a secret, at any depth, and
    the password of any URL written with credentials (a database URL in an error)."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEY.search(key):
            event_dict[key] = MASK
        elif isinstance(value, Mapping | list | tuple | str):
            event_dict[key] = _mask(value)
    return event_dict


def configure_logging(
    service: str,
    level: str = "info",
    fmt: str = "json",
    *,
    cache: bool = True,
    show_personal_data: bool = False,
) -> None:
    """Set up structlog (and the standard logging it may forward to) for one service.

    `cache`: loggers keep this set-up once used (fast, for services); a one-shot tool
    passes False so that code it runs in a bigger process (a test) is not pinned to it.
    `show_personal_data`: numbers and texts whole in the logs and the message log.
    """
    _personal["show"] = show_personal_data
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # the standard library's records (asyncio, uvicorn, psycopg...) in the same format, so
    # that a log is one kind of line from start to end
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                redact_secrets,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    BUILD_INFO.info({"version": __version__, "service": service})


def serve_metrics(
    host: str, port: int | None, registry: CollectorRegistry = REGISTRY
) -> int | None:
    """Expose /metrics on host:port (0 picks a free port); return the port, None when off."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)


# --- SMS process (sms_process; served by the one SMS process of the instance) ----------

SP_RECEIPTS = Counter(
    "smsmta_receipts", "receipts handled, by account and Annex B stat", ["account", "stat"]
)
SP_RECEIPT_RESULTS = Counter(
    "smsmta_receipt_results",
    "receipts handled, by what they did: applied, part, intermediate, duplicate, ignored, "
    "unmatched, invalid",
    ["account", "result"],
)
SP_RECEIPTS_MATCHED = Counter(
    "smsmta_receipts_matched", "receipts matched to their MT's provider_msg_id", ["account"]
)
SP_RECEIPTS_UNMATCHED = Counter(
    "smsmta_receipts_unmatched",
    "receipts kept as unmatched (no MT within the match wait, or no readable id)",
    ["account"],
)
SP_RECEIPT_ID_DISAGREEMENTS = Counter(
    "smsmta_receipt_id_disagreements",
    "receipts whose text id disagreed with receipted_message_id once formatted "
    "(the TLV decided): an id-format or sr_id_regex setting to fix, see the log",
    ["account"],
)
SP_RECEIPTS_WAITING = Gauge(
    "smsmta_receipts_waiting", "receipts in the inbox waiting for their MT to be recorded"
)
SP_RECEIPT_DELAY = Histogram(
    "smsmta_receipt_delay_seconds",
    "from a receipt's arrival to the commit of its broad_log update",
    ["account"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
)
SP_INBOX_BACKLOG = Gauge(
    "smsmta_inbox_backlog", "inbox rows not handled yet (receipts and MO parts)"
)
SP_MO = Counter("smsmta_mo", "incoming messages (whole, after reassembly)", ["account"])
SP_AUTO_REPLIES = Counter(
    "smsmta_auto_replies",
    "auto-replies to MOs, by result: queued (SMS process, into the outbox), sent or failed "
    "(MTA, on its binds)",
    ["account", "result"],
)
SP_AUTO_REPLIES_RATE_LIMITED = Counter(
    "smsmta_auto_replies_rate_limited",
    "auto-replies not sent: the same sender had one from the same short code less than "
    "sms_process.reply_interval ago (the rule's action still ran)",
    ["account"],
)
SP_BLACKLIST_CHANGES = Counter(
    "smsmta_blacklist_changes",
    "short-code blacklist changes by MO keyword (blacklist, unblacklist)",
    ["account", "action"],
)
SP_PURGED = Counter("smsmta_purged_rows", "rows deleted by the retention purge", ["table"])
SP_NO_RECEIPT = Counter(
    "smsmta_no_receipt_messages",
    "messages made final without a receipt: still sent past validity + receipt_match_wait",
    ["account"],
)


# --- midsourcing (the mid API, midsourcing.api; the marketing service,
# midsourcing.marketing_service)

MID_REQUESTS = Counter(
    "smsmta_mid_requests",
    "mid API requests, by route template, method (MID_METHODS, else 'other') and HTTP status",
    ["endpoint", "method", "status"],
)
MID_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The HTTP methods the mid API's request metric names; any other is counted as 'other'."""


def mid_method_label(method: str) -> str:
    """The `method` label of a request: one of MID_METHODS or 'other', never what was sent.

    A client may send any token as a method: as a label it would add a time series per
    invented method, for good (issue 14: 22,000 of them grew /metrics to 104 MB).
    """
    return method if method in MID_METHODS else "other"


MID_REQUEST_SECONDS = Histogram(
    "smsmta_mid_request_seconds",
    "mid API request duration, by route template",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MID_AUTH_FAILURES = Counter(
    "smsmta_mid_auth_failures",
    "refused authentications: bad_credentials, bad_token, missing, throttled, busy (hashing "
    "queue full), forbidden, token_renewal (renewal without the password)",
    ["reason"],
)
MID_PUSHED_CHUNKS = Counter("smsmta_mid_pushed_chunks", "push chunks accepted", ["account"])
MID_PUSHED_MESSAGES = Counter(
    "smsmta_mid_pushed_messages",
    "messages received in push chunks, by result (inserted, duplicate)",
    ["account", "result"],
)
MID_SYNC_LAG = Gauge(
    "smsmta_mid_status_sync_lag_seconds",
    "age of the oldest status change no marketing side has pulled yet",
)
MKT_REQUESTS = Counter(
    "smsmta_marketing_mid_requests",
    "requests of the marketing service to the mid API, by endpoint and HTTP status "
    "('error' when no answer came)",
    ["account", "endpoint", "status"],
)
MKT_PUSHED_CHUNKS = Counter(
    "smsmta_marketing_pushed_chunks",
    "push chunks sent to the mid server, by result (accepted, retried)",
    ["account", "result"],
)
MKT_PUSHED_MESSAGES = Counter(
    "smsmta_marketing_pushed_messages", "messages accepted by the mid server", ["account"]
)
MKT_STATUS_CHANGES = Counter(
    "smsmta_marketing_status_changes", "per-message status changes pulled", ["account"]
)
MKT_SYNC_LAG = Gauge(
    "smsmta_marketing_status_sync_lag_seconds",
    "age of the oldest status change the mid server holds that this service has not pulled",
    ["account"],
)
MKT_AUTH_FAILURES = Counter(
    "smsmta_marketing_auth_failures",
    "mid API answers refusing the operator (401, 403, 429)",
    ["account", "status"],
)
