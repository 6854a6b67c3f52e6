"""Declarative bases: one naming convention, one metadata per side.

The mid side (schema `mid`) and the marketing side (schema `marketing`) are separate
metadata objects because the marketing schema may live in another database; each has
its own alembic branch. Both share the naming convention below, so every constraint and
index has a predictable name that migrations can refer to.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import DateTime, Enum, Integer, MetaData, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MID_SCHEMA = "mid"
MARKETING_SCHEMA = "marketing"


class MidBase(DeclarativeBase):
    """Tables of the mid server, shared by the mid API, the MTA and the SMS process."""

    metadata = MetaData(schema=MID_SCHEMA, naming_convention=NAMING_CONVENTION)


class MarketingBase(DeclarativeBase):
    """Tables of the marketing service."""

    metadata = MetaData(schema=MARKETING_SCHEMA, naming_convention=NAMING_CONVENTION)


class DeliveryKpis:
    """The counters of a delivery (SPEC section 6), on both sides: the mid side counts them,
    the marketing side keeps the copy it pulls (plus its own `cancelled`)."""

    to_send: Mapped[int] = mapped_column(Integer, server_default="0")
    sent: Mapped[int] = mapped_column(Integer, server_default="0")
    delivered: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_hard: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_soft: Mapped[int] = mapped_column(Integer, server_default="0")
    no_receipt: Mapped[int] = mapped_column(Integer, server_default="0")


def created_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


def updated_at_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


def pg_enum(cls: type[enum.Enum], name: str) -> Enum:
    """A native PostgreSQL enum in the metadata's schema, stored by value ('pending')."""
    return Enum(
        cls,
        name=name,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )
