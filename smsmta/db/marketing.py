"""Marketing-side tables (schema `marketing`): recipients, templates, deliveries, statuses.

This schema may live in another database than the mid side's. `delivery_message` is the
marketing side's copy of each message's status, pulled from the mid server; its `id` is
the `marketing_message_id` the mid side stores, which makes pushes idempotent. KPIs are
counters on `delivery`, with failures by error text in `delivery_error`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from smsmta.db.base import (
    DeliveryKpis,
    MarketingBase,
    created_at_column,
    pg_enum,
    updated_at_column,
)


class MarketingDeliveryState(enum.StrEnum):
    DRAFT = "draft"  # created, not pushed yet
    PUSHING = "pushing"  # chunks going to the mid server
    PUSHED = "pushed"  # every chunk accepted; statuses being pulled
    DONE = "done"  # every message has a final status
    CANCELLED = "cancelled"


class MarketingMessageStatus(enum.StrEnum):
    TO_SEND = "to_send"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED_HARD = "failed_hard"
    FAILED_SOFT = "failed_soft"  # soft failure that exhausted its retries
    CANCELLED = "cancelled"
    NO_RECEIPT = "no_receipt"  # acknowledged by the SMSC, no receipt within its validity


class Recipient(MarketingBase):
    __tablename__ = "recipient"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mobile: Mapped[str] = mapped_column(String(32), unique=True)  # one recipient per number
    first_name: Mapped[str] = mapped_column(String(255), server_default="")
    last_name: Mapped[str] = mapped_column(String(255), server_default="")
    # extra CSV columns used only to render texts; never queried
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = created_at_column()


class DeliveryTemplate(MarketingBase):
    """SPEC section 6 options and the routing external account."""

    __tablename__ = "delivery_template"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    internal_name: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(255))
    external_account: Mapped[str] = mapped_column(String(64))
    source_addr: Mapped[str | None] = mapped_column(String(21))
    max_parts: Mapped[int] = mapped_column(SmallInteger, server_default="5")
    transmission_mode: Mapped[str | None] = mapped_column(String(16))
    validity_seconds: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    service_type: Mapped[str | None] = mapped_column(String(5))
    service_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class MarketingDelivery(DeliveryKpis, MarketingBase):
    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("delivery_template.id"))
    label: Mapped[str] = mapped_column(String(255), server_default="")
    text: Mapped[str] = mapped_column(Text)
    state: Mapped[MarketingDeliveryState] = mapped_column(
        pg_enum(MarketingDeliveryState, "delivery_state"),
        server_default=MarketingDeliveryState.DRAFT.value,
    )
    mid_delivery_id: Mapped[int | None] = mapped_column(BigInteger)
    mid_state: Mapped[str | None] = mapped_column(String(16))  # as last pulled
    # the mid's opaque status-pull cursor ('' = from the start)
    status_cursor: Mapped[str] = mapped_column(String(64), server_default="")
    # push progress: messages with an id up to push_cursor were accepted by the mid
    push_cursor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    push_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_push_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    push_error: Mapped[str | None] = mapped_column(Text)
    validity_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total: Mapped[int] = mapped_column(Integer, server_default="0")  # messages created
    rejected: Mapped[int] = mapped_column(Integer, server_default="0")  # CSV rows refused
    # KPIs: DeliveryKpis, plus
    cancelled: Mapped[int] = mapped_column(Integer, server_default="0")
    pushed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_pull_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    template: Mapped[DeliveryTemplate] = relationship(lazy="raise")


class DeliveryMessage(MarketingBase):
    """The marketing side's copy of one message's status."""

    __tablename__ = "delivery_message"
    __table_args__ = (
        Index("ix_delivery_message_delivery_status", "delivery_id", "status"),
        Index("ix_delivery_message_delivery_id_id", "delivery_id", "id"),  # push chunks
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("delivery.id"))
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("recipient.id"))
    address: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[MarketingMessageStatus] = mapped_column(
        pg_enum(MarketingMessageStatus, "message_status"),
        server_default=MarketingMessageStatus.TO_SEND.value,
    )
    failure_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = updated_at_column()


class DeliveryError(MarketingBase):
    """KPI: failed messages of a delivery by error text."""

    __tablename__ = "delivery_error"

    delivery_id: Mapped[int] = mapped_column(ForeignKey("delivery.id"), primary_key=True)
    error: Mapped[str] = mapped_column(Text, primary_key=True)
    failure_type: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer, server_default="0")
