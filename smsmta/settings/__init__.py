"""Settings: pydantic models of the YAML files, and `load(path)`.

Two kinds of file, told apart by their top-level `kind:`:

- `kind: mid` describes a mid server: its database, its services (mid HTTP API, MTA,
  SMS process) and its SMPP external accounts, every setting of SPEC section 4
  (`smsmta.settings.mid`).
- `kind: marketing` describes the marketing service: its database and the marketing
  external accounts that route deliveries to a mid server (`smsmta.settings.marketing`).

`smsmta.settings.base` holds what both share (secrets, value types, the database, logging
and metrics sections); `smsmta.settings.load` reads a file and checks what spans fields.
Every model, `load` and its helpers are importable from `smsmta.settings`; the value types
(`Secret`, `Seconds`, `Port`, `Octet`, `Country`, `MetricsPort`) from `smsmta.settings.base`.

Contract: `load(path)` returns a validated, immutable model or raises `ConfigError`,
which lists every problem of the file, each naming the file, the line, the account
and the dotted field. Secrets (`password`, the database URL) may be written as
`${ENV_VAR}` or `{file: /path}`; they are resolved at load and held as `SecretStr`, so
they print as `**********` in reprs, logs and errors. Touches: the file system (the
YAML file, secret files) and the environment, nothing else.
"""

from smsmta.settings.base import DATABASE_URL_ENV, Database, Logging, Service
from smsmta.settings.load import (
    MAX_EXPANDED_NODES,
    RETIRED_FIELDS,
    Config,
    ConfigError,
    ConfigIssue,
    database_url,
    json_schema,
    load,
    load_many,
)
from smsmta.settings.marketing import (
    DeliveryTemplate,
    MarketingAccount,
    MarketingConfig,
    MarketingService,
    TransmissionMode,
)
from smsmta.settings.mid import (
    DEFAULT_ENCODING_MAPPING,
    LOOPBACK,
    LOOPBACK_NAMES,
    Account,
    AutoReply,
    Channel,
    Connection,
    EncodingRule,
    MidConfig,
    MidService,
    Mode,
    MtaService,
    Receiver,
    ReplyAction,
    Smsc,
    SmsProcessService,
    Throughput,
    receivers_on_login,
    smpp_server_key,
)
from smsmta.smpp.text import EncodingName

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_ENCODING_MAPPING",
    "LOOPBACK",
    "LOOPBACK_NAMES",
    "MAX_EXPANDED_NODES",
    "RETIRED_FIELDS",
    "Account",
    "AutoReply",
    "Channel",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Connection",
    "Database",
    "DeliveryTemplate",
    "EncodingName",
    "EncodingRule",
    "Logging",
    "MarketingAccount",
    "MarketingConfig",
    "MarketingService",
    "MidConfig",
    "MidService",
    "Mode",
    "MtaService",
    "Receiver",
    "ReplyAction",
    "Service",
    "SmsProcessService",
    "Smsc",
    "Throughput",
    "TransmissionMode",
    "database_url",
    "json_schema",
    "load",
    "load_many",
    "receivers_on_login",
    "smpp_server_key",
]
