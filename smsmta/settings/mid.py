"""Settings of a mid server (`kind: mid`): its SMPP external accounts and its services.

`Account` holds every setting of SPEC section 4 for one SMPP external account (connection,
receiver, channel, throughput, SMSC specifics, auto-replies); `MidService`, `MtaService`
and `SmsProcessService` the options of the mid HTTP API, the MTA and the SMS process;
`MidConfig` the whole file. `smpp_server_key` and `receivers_on_login` say when two binds
use one SMPP login (the cross checks and smsmta.binds rely on them).

Touches nothing (the models validate values; secrets are read by smsmta.settings.base).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from smsmta.settings.base import (
    Country,
    Database,
    Logging,
    MetricsPort,
    Octet,
    Port,
    Seconds,
    Secret,
    Service,
    _Model,
)
from smsmta.smpp.receipt import (
    DEFAULT_ERROR_REGEX,
    DEFAULT_ID_REGEX,
    DEFAULT_SUCCESS_REGEX,
    IdFormat,
    check_id_regex,
    check_stat_regex,
)
from smsmta.smpp.text import EncodingName

# --- the SMPP external account (SPEC section 4) ------------------------------------


class Mode(StrEnum):
    TX_RX = "tx_rx"  # separate transmitter and receiver connections
    TRX = "trx"  # one transceiver connection carries MT, MO and SR


class Connection(_Model):
    """How to reach and bind to the SMSC."""

    mode: Mode = Mode.TX_RX
    smsc_name: str = Field(
        "smsc", min_length=1, description="SMSC implementation name, used in SR message-log texts"
    )
    server: str = Field(min_length=1)
    port: Port = 2775
    system_id: str = Field(min_length=1, max_length=15, description="SMPP account (system_id)")
    password: Secret | None = Field(None, description="at most 8 characters on the wire")
    system_type: str = Field("", max_length=12)
    connections: int = Field(1, ge=1, le=64, description="binds per MTA child")
    tls: bool = False
    tls_ca_file: Path | None = Field(None, description="CA bundle for the SMSC's certificate")
    verbose_trace: bool = Field(False, description="every PDU to the log, password masked")

    @field_validator("password")
    @classmethod
    def _password_fits_bind(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) > 8:
            raise ValueError("SMPP 3.4 passwords are at most 8 characters")
        return value


class Receiver(_Model):
    """Settings of the receiver binds when they differ from the transmitter's."""

    server: str = Field(min_length=1)
    port: Port = 2775
    system_id: str = Field(min_length=1, max_length=15)
    password: Secret | None = None
    system_type: str = Field("", max_length=12)

    @field_validator("password")
    @classmethod
    def _password_fits_bind(cls, value: SecretStr | None) -> SecretStr | None:
        return Connection._password_fits_bind(value)


class Channel(_Model):
    transliteration: bool = False
    store_mo: bool = True
    realtime_kpi: bool = True
    source_number: str = Field("", max_length=20, description="default source_addr")
    short_code: str = Field("", max_length=20)
    source_ton: Octet = 0
    source_npi: Octet = 0
    dest_ton: Octet = 1
    dest_npi: Octet = 1
    alphanumeric_ton: Octet = Field(
        5, description="source TON of a From with letters (5 alphanumeric; some SMSCs want 0)"
    )
    alphanumeric_npi: Octet = Field(
        0, description="source NPI of a From with letters (0 unknown; some SMSCs want 1)"
    )
    service_type: str = Field("", max_length=5)


class Throughput(_Model):
    window: int = Field(10, ge=1, le=10_000, description="submit_sm outstanding per bind")
    max_mt_per_second: float = Field(
        0, ge=0, description="cap for the whole account in any one-second span; 0 = unlimited"
    )
    max_binds: int = Field(
        0,
        ge=0,
        description="cap on every bind of the account's login, all services and hosts (MTA "
        "binds, the SMS process's receivers on the same login, the go-live check); 0 = none",
    )
    reconnect_delay: Seconds = 10.0
    mt_timeout: Seconds = 30.0
    bind_timeout: Seconds = 30.0
    enquire_link_period: Seconds = Field(
        60.0, description="enquire_link after this long idle; no answer in twice it: reconnect"
    )


class EncodingRule(_Model):
    data_coding: Octet
    encoding: EncodingName


DEFAULT_ENCODING_MAPPING = (
    EncodingRule(data_coding=0, encoding="gsm7"),
    EncodingRule(data_coding=8, encoding="ucs2"),
)


class Smsc(_Model):
    """SMSC specifics: encodings, addressing and how receipts are read."""

    encoding_mapping: tuple[EncodingRule, ...] = DEFAULT_ENCODING_MAPPING
    message_payload: bool = False
    send_full_phone_number: bool = False
    skip_tls_verification: bool = False
    bind_ton: Octet = 0
    bind_npi: Octet = 0
    address_range: str = Field("", max_length=40)
    sr_id_regex: str = DEFAULT_ID_REGEX
    sr_success_regex: str = DEFAULT_SUCCESS_REGEX
    sr_error_regex: str = DEFAULT_ERROR_REGEX
    mt_ack_id_format: IdFormat = IdFormat.AS_IS
    sr_id_format: IdFormat = IdFormat.AS_IS
    sr_id_in_optional_fields: bool = False
    sr_id_in_text_field: bool = False
    service_id_tlv_tag: int | None = Field(None, ge=0x0001, le=0xFFFF)

    @field_validator("encoding_mapping")
    @classmethod
    def _not_empty(cls, value: tuple[EncodingRule, ...]) -> tuple[EncodingRule, ...]:
        if not value:
            raise ValueError("at least one encoding is needed")
        return value

    @field_validator("sr_id_regex")
    @classmethod
    def _one_capture_group(cls, value: str) -> str:
        check_id_regex(value)
        return value

    @field_validator("sr_success_regex", "sr_error_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        check_stat_regex(value)
        return value


class ReplyAction(StrEnum):
    NONE = "none"
    BLACKLIST = "blacklist"
    UNBLACKLIST = "unblacklist"


class AutoReply(_Model):
    """One MO rule; an empty keyword or short code matches anything."""

    keyword: str = ""
    short_code: str = ""
    reply: str = ""
    action: ReplyAction = ReplyAction.NONE


class Account(_Model):
    """A mid external account: routing, SMS channel, bulk mode, extended generic SMPP."""

    name: str = Field(
        min_length=3, description="internal name: <operator login>_<marketing account name>"
    )
    operator: str = Field(min_length=1, description="operator login on this mid server")
    marketing_account: str | None = Field(
        None, description="marketing account internal name; derived from name when absent"
    )
    label: str = ""
    enabled: bool = True
    connection: Connection
    receiver: Receiver | None = None
    channel: Channel = Channel()
    throughput: Throughput = Throughput()
    smsc: Smsc = Smsc()
    auto_replies: tuple[AutoReply, ...] = ()
    default_country: Country = Field(
        "",
        description="ISO 3166 alpha-2 country whose national numbers (leading 0, TON 2) "
        "are read as subscriber numbers; empty: national numbers are refused",
    )

    @property
    def receiver_settings(self) -> Receiver:
        """The receiver binds' settings: their own, or the transmitter's."""
        if self.receiver is not None:
            return self.receiver
        c = self.connection
        return Receiver(
            server=c.server,
            port=c.port,
            system_id=c.system_id,
            password=c.password,
            system_type=c.system_type,
        )


# --- the services ------------------------------------------------------------------


class MidService(Service):
    """The mid HTTP API (`smsmta mid`): uvicorn options, TLS, authentication limits.

    TLS is uvicorn's own: set `tls_certfile` and `tls_keyfile` (PEM) and the API answers
    HTTPS only; `tls_ca_certs` with `tls_client_cert: required` asks clients for a
    certificate too. Without them, put the API behind a TLS-terminating proxy.
    """

    listen: str = "127.0.0.1"
    port: Port = 8080
    metrics_port: MetricsPort | None = 9100
    tls_certfile: Path | None = Field(None, description="PEM certificate (chain): serve HTTPS")
    tls_keyfile: Path | None = Field(None, description="PEM private key of tls_certfile")
    tls_keyfile_password: Secret | None = None
    tls_ca_certs: Path | None = Field(None, description="CA bundle to verify client certificates")
    tls_client_cert: Literal["none", "optional", "required"] = "none"
    token_ttl: Seconds = Field(3600.0, description="lifetime of a token from POST /api/v1/token")
    token_max_lifetime: Seconds = Field(
        12 * 3600.0,
        description="absolute lifetime of a token, counted from its issue whatever token_ttl "
        "says; a new token needs the password",
    )
    password_check_workers: int = Field(
        2, ge=1, le=64, description="argon2 checks run at once (each: one core, 64 MiB)"
    )
    password_check_queue: int = Field(
        16, ge=0, le=10_000, description="password checks waiting for a worker; more get 503"
    )
    login_attempts_per_second: float = Field(
        1.0, gt=0, description="password attempts one client address gets a second (refill)"
    )
    login_attempts_burst: int = Field(
        10, ge=1, le=100_000, description="password attempts one client address may make at once"
    )
    login_clients_tracked: int = Field(
        10_000, ge=100, le=1_000_000, description="client addresses the rate limit remembers"
    )
    login_free_failures: int = Field(
        3,
        ge=0,
        le=100,
        description="failed logins of one login from one client address before that address "
        "is slowed down for it",
    )
    login_base_delay: Seconds = Field(
        1.0, description="first wait imposed on a login past its free failures; it doubles"
    )
    login_max_delay: Seconds = Field(
        60.0, description="longest wait imposed on a login after repeated failures"
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest request body accepted (a push chunk)"
    )
    pull_page_max: int = Field(10_000, ge=1, le=100_000, description="status changes per page")
    db_pool_size: int = Field(8, ge=1, le=200, description="database connections of the API")
    sync_lag_period: Seconds = Field(10.0, description="how often the sync-lag gauge is measured")
    # HTTP limits (issue 14; README "HTTP limits"): what one client may hold
    header_timeout: Seconds = Field(
        10.0, description="a request's headers must all arrive within this, else it is closed"
    )
    body_timeout: Seconds = Field(
        60.0, description="a request's body must all arrive within this after its headers"
    )
    keep_alive_timeout: Seconds = Field(5.0, description="an idle keep-alive connection closes")
    max_connections: int = Field(
        1000,
        ge=2,
        le=100_000,
        description="open connections (or requests in progress) beyond which a request gets 503",
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=4096, le=1024 * 1024, description="largest request line and headers"
    )
    max_body_bytes_in_flight: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="request bodies being received or handled at once, in bytes: a request "
        "that would go over gets 503 with Retry-After (one request alone always passes)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port]) besides the API's own allowed to "
        "send state-changing requests; any other Origin gets 403",
    )
    docs: bool = Field(
        False,
        description="serve /docs and /redoc (Swagger UI and ReDoc, which load their scripts "
        "from a public CDN); off: only /openapi.json",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> MidService:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together")
        if self.tls_client_cert != "none" and self.tls_ca_certs is None:
            raise ValueError("tls_client_cert needs tls_ca_certs")
        return self


class MtaService(Service):
    children: int = Field(2, ge=1, le=256)
    metrics_port: MetricsPort | None = 9101
    retry_period: Seconds = Field(300.0, description="between attempts after a soft failure")
    max_retries: int = Field(5, ge=0, le=1000, description="attempts after the first")
    default_validity: Seconds = Field(
        48 * 3600.0, description="a delivery without validity period ends this long after"
    )
    throttle_backoff: Seconds = Field(1.0, description="before a throttled part goes again")
    claim_batch: int = Field(1000, ge=1, le=50_000, description="rows claimed per query")
    lease_ttl: Seconds = Field(
        10.0, description="a silent child's claims return to the queue after this"
    )
    poll_interval: Seconds = Field(1.0, description="queue poll when no NOTIFY arrives")
    shutdown_timeout: Seconds = Field(
        60.0, description="SIGTERM: longest wait for in-flight answers before exiting"
    )


class SmsProcessService(Service):
    """The SMS process: receivers, receipt reconciliation, MO, auto-replies, purge."""

    metrics_port: MetricsPort | None = 9102
    receipt_match_wait: Seconds = Field(
        600.0, description="a receipt whose MT is not recorded yet is retried this long"
    )
    receipt_retry_interval: Seconds = Field(
        5.0, description="between two matching attempts of a receipt still unmatched"
    )
    multipart_status: Literal["first_part", "all_parts"] = Field(
        "first_part",
        description="first_part: part 1's receipt decides; all_parts: delivered only when "
        "every part is (needs receipts on every part)",
    )
    kpi_sync_period: Seconds = Field(
        60.0, description="delivery KPIs of accounts without real-time KPIs are synced this often"
    )
    batch_size: int = Field(2000, ge=1, le=50_000, description="inbox rows handled per transaction")
    reconcile_workers: int = Field(
        2,
        ge=1,
        le=8,
        description="inbox batches in flight at once, each on its own connection: one is "
        "decoded while another waits on the database",
    )
    poll_interval: Seconds = Field(1.0, description="inbox poll when no NOTIFY arrives")
    mo_reassembly_timeout: Seconds = Field(
        300.0, description="a long MO still missing parts after this is stored as it is"
    )
    reply_interval: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="at most one auto-reply per (account, sender, short code) in this many "
        "seconds, so that two auto-responders cannot loop (the rule's action still runs on "
        "every MO); 0: no limit",
    )
    reply_limit_entries: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="(sender, short code) pairs the reply limit remembers (in memory; the "
        "oldest are forgotten first)",
    )
    provider_msg_id_retention: Seconds = Field(
        7 * 86400.0, description="provider_msg_id rows older than this are purged"
    )
    receipt_retention: Seconds = Field(
        30 * 86400.0, description="receipt history rows older than this are purged"
    )
    broad_log_retention: Seconds = Field(
        90 * 86400.0,
        description="final messages (delivered, failed, cancelled) are purged this long after "
        "their final status, once the marketing side has pulled that status",
    )
    inbox_retention: Seconds = Field(
        7 * 86400.0,
        description="inbox rows still there this long after they arrived (held MO parts, "
        "receipts that could not be handled) are purged, counted and logged",
    )
    purge_period: Seconds = Field(600.0, description="how often the purge runs")
    purge_batch: int = Field(10_000, ge=100, le=1_000_000, description="rows deleted per statement")
    purge_pause: float = Field(
        0.05,
        ge=0,
        le=60,
        description="seconds between two purge statements, so that the MTA is not starved",
    )
    shutdown_timeout: Seconds = Field(
        30.0, description="SIGTERM: longest wait for stored work and replies before exiting"
    )

    @model_validator(mode="after")
    def _retentions_in_order(self) -> SmsProcessService:
        # a message's provider ids are older than its final status: with this order they
        # are purged before it, so a receipt never matches an id whose message is gone
        if self.broad_log_retention < self.provider_msg_id_retention:
            raise ValueError(
                f"broad_log_retention ({self.broad_log_retention:g} s) must be at least "
                f"provider_msg_id_retention ({self.provider_msg_id_retention:g} s)"
            )
        # the inbox purge is for rows that are stuck, never for receipts still waiting for
        # their MT nor for long MO parts still waiting for their siblings
        waits = {
            "receipt_match_wait": self.receipt_match_wait,
            "mo_reassembly_timeout": self.mo_reassembly_timeout,
        }
        for name, wait in waits.items():
            if self.inbox_retention <= wait:
                raise ValueError(
                    f"inbox_retention ({self.inbox_retention:g} s) must be longer than "
                    f"{name} ({wait:g} s)"
                )
        return self


class MidConfig(_Model):
    kind: Literal["mid"]
    host_id: str = Field("mid-1", min_length=1, description="this host's id in leases and claims")
    database: Database = Database()
    logging: Logging = Logging()
    mid: MidService = MidService()
    mta: MtaService = MtaService()
    sms_process: SmsProcessService = SmsProcessService()
    accounts: tuple[Account, ...] = ()

    def account(self, name: str) -> Account:
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)


# --- SMPP logins -------------------------------------------------------------------


LOOPBACK = "loopback"
LOOPBACK_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "loopback"}
)
_INET_ATON = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


def smpp_server_key(server: str) -> str:
    """One form for every spelling of one SMPP server, for comparing logins (no resolving).

    Lower case without a trailing dot or IPv6 brackets; an IP address in its canonical
    text, an IPv4-mapped IPv6 address as its IPv4 address, inet_aton's short forms (`127.1`,
    `0x7f.0.0.1`) expanded; `localhost` and the other loopback names (RFC 6761's
    `*.localhost` too), 127.0.0.1 and ::1 are one server, `loopback`. Other 127/8 addresses
    stay apart (a server may listen on one loopback address only); a name and the address
    it resolves to cannot be told apart without DNS, which the settings never use."""
    text = server.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text in LOOPBACK_NAMES or text.endswith(".localhost"):
        return LOOPBACK
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        if not _INET_ATON.match(text):
            return text
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")):
        return LOOPBACK
    return str(address)


def receivers_on_login(account: Account) -> int:
    """Receiver binds of the account on its transmitter's login (smsmta.binds reserves
    them): TRX none (the MTA's transceivers receive); a receiver on another login none."""
    if account.connection.mode is not Mode.TX_RX:
        return 0
    c, r = account.connection, account.receiver_settings
    same = (smpp_server_key(c.server), c.port, c.system_id) == (
        smpp_server_key(r.server),
        r.port,
        r.system_id,
    )
    return c.connections if same else 0
