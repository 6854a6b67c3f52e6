"""Mid-side tables (schema `mid`): operators, accounts, deliveries and their messages.

`broad_log` is the queue: one row per recipient message, claimed by MTA children with
FOR UPDATE SKIP LOCKED under their lease (`lease_owner` names an `mta_lease` row that the
child renews every second) so that a dead child's claims return to the queue.
`provider_msg_id` maps each submitted part's provider id back to its `broad_log` row for
receipt reconciliation; it has no foreign keys on purpose: it is the hottest insert of
the system and is purged on its own retention, independently of `broad_log`.
`broad_log_msg` is the message log of SPEC section 7: one row per normalised failure
text, qualified hard / soft / ignored. `inbox` holds every deliver_sm / data_sm as
received, committed before its response goes out, until the SMS process has handled it;
`receipt` is the history of every receipt handled (matched or not), the message's
history of SPEC section 7 and the list of unmatched receipts. `rate_share` and
`bind_slot` hold an account's max MT/s and max_binds across every child and host
(bind slots are also held by the SMS process and the go-live check: every bind counts);
`reply_outbox` carries auto-replies from the SMS process to the MTA's binds.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy import (
    text as sql,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from smsmta.db.base import DeliveryKpis, MidBase, created_at_column, pg_enum, updated_at_column
from smsmta.settings.marketing import TransmissionMode


class MessageStatus(enum.StrEnum):
    PENDING = "pending"  # queued, due at next_try_at
    SENDING = "sending"  # claimed by an MTA child under a lease
    SENT = "sent"  # every part acknowledged by the SMSC
    DELIVERED = "delivered"  # final: success receipt
    FAILED = "failed"  # final: hard failure, retries exhausted or validity over
    CANCELLED = "cancelled"  # final: the delivery was cancelled before sending
    # final: acknowledged by the SMSC, no receipt by the end of the validity period plus
    # receipt_match_wait (smsmta.queue.expiry)
    NO_RECEIPT = "no_receipt"


class FailureType(enum.StrEnum):
    HARD = "hard"
    SOFT = "soft"
    IGNORED = "ignored"


class InboxKind(enum.StrEnum):
    RECEIPT = "receipt"  # a delivery receipt (esm_class SMSC receipt or intermediate notice)
    MO = "mo"  # an incoming message


class ReceiptOutcome(enum.StrEnum):
    """What the receipt's stat means (smsmta.smpp.receipt.Outcome)."""

    DELIVERED = "delivered"
    FAILED = "failed"
    INTERMEDIATE = "intermediate"


class ReceiptResult(enum.StrEnum):
    """What handling the receipt did."""

    APPLIED = "applied"  # it set its message's status (delivered, failed or back to pending)
    PART = "part"  # a part's final receipt, kept until every part has one (all_parts mode)
    INTERMEDIATE = "intermediate"  # a non-final stat: history only
    DUPLICATE = "duplicate"  # the message already had its outcome: nothing changed
    IGNORED = "ignored"  # a part that does not decide, or an earlier attempt of a retried MT
    UNMATCHED = "unmatched"  # no provider_msg_id matched within the receipt match wait
    INVALID = "invalid"  # no provider id could be read from it


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # being pushed in chunks
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class Operator(MidBase):
    __tablename__ = "operator"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str | None] = mapped_column(Text)
    rights: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class ExternalAccount(MidBase):
    """A mid account as last loaded from YAML; `settings` is a snapshot, never queried."""

    __tablename__ = "external_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    internal_name: Mapped[str] = mapped_column(String(128), unique=True)
    operator_login: Mapped[str] = mapped_column(String(64))
    marketing_account: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=sql("true"))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # the `host_id` of the settings file that wrote the row: only that host changes it
    # (smsmta.accounts); None: released, the next host that lists the account takes it
    owner_host_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class Delivery(DeliveryKpis, MidBase):
    __tablename__ = "delivery"
    __table_args__ = (UniqueConstraint("account_id", "marketing_delivery_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("external_account.id"))
    marketing_delivery_id: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(255), server_default="")
    state: Mapped[DeliveryState] = mapped_column(
        pg_enum(DeliveryState, "delivery_state"), server_default=DeliveryState.PENDING.value
    )
    # SPEC section 6 options
    source_addr: Mapped[str | None] = mapped_column(String(21))
    max_parts: Mapped[int] = mapped_column(SmallInteger, server_default="5")
    transmission_mode: Mapped[TransmissionMode | None] = mapped_column(
        pg_enum(TransmissionMode, "transmission_mode")
    )
    validity_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    priority: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    service_type: Mapped[str | None] = mapped_column(String(5))
    service_id: Mapped[str | None] = mapped_column(String(255))
    # KPIs: DeliveryKpis
    # when the SMS process ended the wait for this delivery's receipts (smsmta.queue.expiry)
    receipts_closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    account: Mapped[ExternalAccount] = relationship(lazy="raise")


class BroadLog(MidBase):
    """One recipient message; the MTA's queue."""

    __tablename__ = "broad_log"
    __table_args__ = (
        UniqueConstraint("delivery_id", "marketing_message_id"),
        # the queue claim: due pending rows of an account, oldest first
        Index(
            "ix_broad_log_claim",
            "account_id",
            "next_try_at",
            postgresql_where=sql("status = 'pending'"),
        ),
        # claims of dead children, returned to the queue by the survivors
        Index(
            "ix_broad_log_lease_owner",
            "lease_owner",
            postgresql_where=sql("status = 'sending'"),
        ),
        # the purge: final messages by the time of their final status (keyset on final_at, id)
        Index(
            "ix_broad_log_final",
            "final_at",
            "id",
            postgresql_where=sql("status IN ('delivered', 'failed', 'cancelled', 'no_receipt')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("delivery.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("external_account.id"))
    marketing_message_id: Mapped[int | None] = mapped_column(BigInteger)
    address: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[MessageStatus] = mapped_column(
        pg_enum(MessageStatus, "message_status"), server_default=MessageStatus.PENDING.value
    )
    parts: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    retry_count: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    next_try_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    lease_owner: Mapped[str | None] = mapped_column(String(64))  # an mta_lease.owner
    possible_duplicate: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    failure_type: Mapped[FailureType | None] = mapped_column(pg_enum(FailureType, "failure_type"))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    broad_log_msg_id: Mapped[int | None] = mapped_column(ForeignKey("broad_log_msg.id"))
    created_at: Mapped[datetime] = created_at_column()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    final_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = updated_at_column()
    # midsourcing: the transaction id of the last status change (0: never changed), set
    # by the trigger mid.broad_log_status_changed; the status pull's cursor (see
    # midsourcing.store)
    status_xid: Mapped[int] = mapped_column(BigInteger, server_default="0")

    delivery: Mapped[Delivery] = relationship(lazy="raise")


class BroadLogMsg(MidBase):
    """The message log: one row per normalised failure text (SPEC section 7)."""

    __tablename__ = "broad_log_msg"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)  # SR <smsc> <stat> <err>|#MESSAGE#
    first_text: Mapped[str] = mapped_column(Text)  # SR <smsc> <stat> <err>|MESSAGE=<text>
    qualification: Mapped[FailureType] = mapped_column(
        pg_enum(FailureType, "failure_type"), server_default=FailureType.HARD.value
    )
    count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = created_at_column()
    last_seen_at: Mapped[datetime] = created_at_column()


class ProviderMsgId(MidBase):
    """Provider message id of one submitted part -> its broad_log row."""

    __tablename__ = "provider_msg_id"
    __table_args__ = (Index("ix_provider_msg_id_lookup", "account_id", "provider_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer)
    provider_id: Mapped[str] = mapped_column(String(65))
    broad_log_id: Mapped[int] = mapped_column(BigInteger)
    delivery_id: Mapped[int] = mapped_column(BigInteger)
    part_no: Mapped[int] = mapped_column(SmallInteger, server_default="1")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class InSms(MidBase):
    """An incoming message (MO), decoded and reassembled."""

    __tablename__ = "in_sms"
    __table_args__ = (Index("ix_in_sms_account_received", "account_id", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("external_account.id"))
    source_addr: Mapped[str] = mapped_column(String(21))
    destination_addr: Mapped[str] = mapped_column(String(21))
    text: Mapped[str] = mapped_column(Text)
    data_coding: Mapped[int] = mapped_column(SmallInteger)
    parts: Mapped[int] = mapped_column(SmallInteger, server_default="1")
    keyword: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = created_at_column()


class ShortCodeBlacklist(MidBase):
    """An address that asked a short code to stop; applies to that short code only."""

    __tablename__ = "short_code_blacklist"

    short_code: Mapped[str] = mapped_column(String(21), primary_key=True)
    address: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), server_default="")
    since: Mapped[datetime] = created_at_column()


class MtaLease(MidBase):
    """A live holder of claims or binds (an MTA child, the SMS process, a go-live check):
    renewed every second; past `expires_at` its claims are reclaimed, its slots freed."""

    __tablename__ = "mta_lease"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # host:pid:index
    host_id: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RateShare(MidBase):
    """One child's share of an account's max MT/s, so that the shares never sum above it.

    A lowered share keeps counting at its old value for one second (`lowered_at`), the
    span of the sliding-second cap, before others may take what it gave up.
    """

    __tablename__ = "rate_share"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("external_account.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(
        ForeignKey("mta_lease.owner", ondelete="CASCADE"), primary_key=True
    )
    share: Mapped[float] = mapped_column(Float)
    previous_share: Mapped[float] = mapped_column(Float, server_default="0")
    lowered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BindSlot(MidBase):
    """One of an account's max_binds, held by a child for one of its binds."""

    __tablename__ = "bind_slot"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("external_account.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("mta_lease.owner", ondelete="CASCADE"))


class ReplyOutbox(MidBase):
    """An auto-reply decided by the SMS process, committed with its MO, until it is sent.

    Written by the SMS process (smsmta.replies.store), claimed by the MTA children of
    its account under their lease (`lease_owner`, SKIP LOCKED; a dead owner's rows are
    claimed again) and deleted once the SMSC answered the submit_sm.
    """

    __tablename__ = "reply_outbox"
    __table_args__ = (Index("ix_reply_outbox_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("external_account.id", ondelete="CASCADE"))
    source_addr: Mapped[str] = mapped_column(String(21))  # the short code the MO was sent to
    source_ton: Mapped[int] = mapped_column(SmallInteger)
    source_npi: Mapped[int] = mapped_column(SmallInteger)
    destination_addr: Mapped[str] = mapped_column(String(21))  # the MO's sender
    dest_ton: Mapped[int] = mapped_column(SmallInteger)
    dest_npi: Mapped[int] = mapped_column(SmallInteger)
    text: Mapped[str] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))  # an mta_lease.owner
    created_at: Mapped[datetime] = created_at_column()


class Inbox(MidBase):
    """A deliver_sm / data_sm as received, stored before its response was sent.

    No foreign key, like provider_msg_id: it is written at receipt rate and emptied by the
    SMS process as it handles the rows. `pdu` is the PDU as SMPP encodes it (smsmta.smpp.codec),
    so nothing the SMSC sent is lost. A receipt not matched yet waits here (`next_try_at`,
    `attempts`); a part of a long MO waits, `held`, until its message is complete.
    """

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_due", "next_try_at", "id", postgresql_where=sql("NOT held")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[InboxKind] = mapped_column(pg_enum(InboxKind, "inbox_kind"))
    pdu: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = created_at_column()
    next_try_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    held: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))


class Receipt(MidBase):
    """One handled receipt: the message's history, and the unmatched ones for inspection."""

    __tablename__ = "receipt"
    __table_args__ = (
        Index("ix_receipt_broad_log_id", "broad_log_id"),
        Index(
            "ix_receipt_unmatched",
            "account_id",
            "received_at",
            postgresql_where=sql("result IN ('unmatched', 'invalid')"),
        ),
        Index("ix_receipt_processed_at", "processed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer)
    provider_id: Mapped[str | None] = mapped_column(String(256))
    broad_log_id: Mapped[int | None] = mapped_column(BigInteger)
    part_no: Mapped[int | None] = mapped_column(SmallInteger)
    mt_sent_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True)
    )  # the matched provider_msg_id's created_at: which attempt of the message
    stat: Mapped[str | None] = mapped_column(String(64))
    err: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[ReceiptOutcome] = mapped_column(pg_enum(ReceiptOutcome, "receipt_outcome"))
    result: Mapped[ReceiptResult] = mapped_column(pg_enum(ReceiptResult, "receipt_result"))
    text: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)  # why it did not match, and the like
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime] = created_at_column()


# --- midsourcing: the mid HTTP API's own tables ------------------------------------------

# the status pull reads one delivery's changes in (status_xid, id) order
Index(
    "ix_broad_log_status_change",
    BroadLog.delivery_id,
    BroadLog.status_xid,
    BroadLog.id,
    postgresql_where=sql("status_xid > 0"),
)


class DeliverySync(MidBase):
    """The push and pull state of a delivery pushed through the mid API.

    `pushed_total` is set when the marketing side declares the push complete (the number
    of messages it pushed, checked against the queue); `pulled_xid`/`pulled_id` is the
    last cursor the marketing side acknowledged by pulling from it (for the sync lag).
    """

    __tablename__ = "delivery_sync"

    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("delivery.id", ondelete="CASCADE"), primary_key=True
    )
    pushed_total: Mapped[int | None] = mapped_column(Integer)
    push_completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pulled_xid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    pulled_id: Mapped[int] = mapped_column(BigInteger, server_default="0")
    pulled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OperatorToken(MidBase):
    """A bearer token obtained with login and password; only its SHA-256 is stored."""

    __tablename__ = "operator_token"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operator.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LoginFailure(MidBase):
    """Failed logins by login name (existing or not) and client address, to slow repeated
    guesses from that address down without locking the operator out of its own."""

    __tablename__ = "login_failure"

    login: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_address: Mapped[str] = mapped_column(String(64), primary_key=True, server_default="")
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    last_failure_at: Mapped[datetime] = created_at_column()
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
