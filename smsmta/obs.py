"""Observability shared by every service: structlog JSON logging and Prometheus metrics.

`configure_logging()` sends one JSON object a line to stderr (or readable console lines)
with the service name, an ISO timestamp and the level; a processor masks the value of
any key that names a secret (password, secret, token, authorization) anywhere in an
event, so a password cannot reach the log through a careless `log.info(..., **settings)`.
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
from prometheus_client import REGISTRY, CollectorRegistry, Info, start_http_server

from smsmta import __version__

MASK = "**********"
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|credential", re.IGNORECASE)

BUILD_INFO = Info("smsmta_build", "smsmta version and the service this process runs")


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: MASK if _SECRET_KEY.search(str(key)) else _mask(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_mask(item) for item in value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask every value whose key names a secret, at any depth."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEY.search(key):
            event_dict[key] = MASK
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _mask(value)
    return event_dict


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Set up structlog (and the standard logging it may forward to) for one service."""
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
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    BUILD_INFO.info({"version": __version__, "service": service})


def serve_metrics(
    host: str, port: int | None, registry: CollectorRegistry = REGISTRY
) -> int | None:
    """Expose /metrics on host:port (0 picks a free port); return the port, None when off."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
