"""Settings of the marketing service (`kind: marketing`).

`MarketingAccount` routes deliveries to a mid server; `DeliveryTemplate` holds the SMS
options of SPEC section 6; `MarketingService` the push/pull client's timing;
`MarketingConfig` the whole file (every template routes through one of its accounts).

Touches nothing (the models validate values; secrets are read by smsmta.settings.base).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from smsmta.settings.base import (
    Country,
    Database,
    Logging,
    MetricsPort,
    Seconds,
    Secret,
    Service,
    _Model,
)


class MarketingAccount(_Model):
    """A marketing external account: routing, SMS channel, midsourcing mode."""

    name: str = Field(min_length=1, max_length=64, description="internal name")
    label: str = ""
    enabled: bool = True
    mid_url: str = Field(pattern=r"^https?://", description="base URL of the mid server")
    operator: str = Field(min_length=1, max_length=64, description="operator login on the mid")
    password: Secret | None = None
    verify_tls: bool = True
    ca_file: Path | None = Field(None, description="CA bundle of the mid server's certificate")
    timeout: Seconds = Field(30.0, description="one HTTP request to the mid server")
    default_country: Country = Field(
        "",
        description="ISO 3166 alpha-2 country of the national numbers of imported CSV "
        "files (leading 0); empty: national numbers are refused",
    )


class TransmissionMode(StrEnum):
    """dest_addr_subunit: normal 0, flash 1, mobile equipment 2, SIM 3 (absent: not sent)."""

    # SPEC section 6; the one definition (smsmta.db.mid and midsourcing.schemas use it)
    NORMAL = "normal"
    FLASH = "flash"
    MOBILE_EQUIPMENT = "mobile_equipment"
    SIM = "sim"


class DeliveryTemplate(_Model):
    """A delivery template: the routing account and the SMS options of SPEC section 6."""

    name: str = Field(min_length=1, max_length=64, description="internal name")
    label: str = ""
    account: str = Field(min_length=1, description="the marketing external account routing it")
    source_addr: str | None = Field(
        None, min_length=1, max_length=20, description="From; absent: the mid account's number"
    )
    max_parts: int = Field(5, ge=1, le=255, description="max SMS per message")
    transmission_mode: TransmissionMode | None = Field(
        None, description="dest_addr_subunit; absent: not sent"
    )
    validity: Seconds | None = Field(
        None, description="validity period in seconds from the push; absent: the MTA default"
    )
    priority: int = Field(0, ge=0, le=3, description="priority_flag")
    service_type: str | None = Field(None, max_length=5)
    service_id: str | None = Field(None, max_length=255, description="service-id TLV value")


class MarketingService(Service):
    metrics_port: MetricsPort | None = 9104
    pull_interval: Seconds = 10.0
    push_interval: Seconds = Field(1.0, description="how often new deliveries are looked for")
    push_chunk_size: int = Field(10_000, ge=1, le=10_000, description="recipients per chunk")
    retry_initial: Seconds = Field(1.0, description="first back-off after a failed request")
    retry_max: Seconds = Field(60.0, description="longest back-off between retries")
    pull_page_size: int = Field(5_000, ge=1, le=100_000, description="status changes per page")
    shutdown_timeout: Seconds = Field(30.0, description="SIGTERM: longest wait for a request")


class MarketingConfig(_Model):
    kind: Literal["marketing"]
    database: Database = Database()
    logging: Logging = Logging()
    marketing: MarketingService = MarketingService()
    accounts: tuple[MarketingAccount, ...] = ()
    templates: tuple[DeliveryTemplate, ...] = ()

    @model_validator(mode="after")
    def _templates_route_through_accounts(self) -> MarketingConfig:
        names = {account.name for account in self.accounts}
        seen: set[str] = set()
        for index, template in enumerate(self.templates):
            if template.account not in names:
                raise ValueError(
                    f"templates[{index}] ({template.name!r}): account {template.account!r} "
                    f"is not an account of this file"
                )
            if template.name in seen:
                raise ValueError(f"templates[{index}]: the name {template.name!r} is used twice")
            seen.add(template.name)
        return self

    def account(self, name: str) -> MarketingAccount:
        for account in self.accounts:
            if account.name == name:
                return account
        raise KeyError(name)

    def template(self, name: str) -> DeliveryTemplate:
        for template in self.templates:
            if template.name == name:
                return template
        raise KeyError(name)
