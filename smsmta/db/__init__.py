"""The database: typed models of both sides, engines, the embedded PostgreSQL, migrations.

Import models from here: `from smsmta.db import BroadLog, MessageStatus`.
"""

from smsmta.db.base import MARKETING_SCHEMA, MID_SCHEMA, MarketingBase, MidBase
from smsmta.db.marketing import (
    DeliveryError,
    DeliveryMessage,
    DeliveryTemplate,
    MarketingDelivery,
    MarketingDeliveryState,
    MarketingMessageStatus,
    Recipient,
)
from smsmta.db.mid import (
    BindSlot,
    BroadLog,
    BroadLogMsg,
    Delivery,
    DeliveryState,
    ExternalAccount,
    FailureType,
    Inbox,
    InboxKind,
    InSms,
    MessageStatus,
    MtaLease,
    Operator,
    ProviderMsgId,
    RateShare,
    Receipt,
    ReceiptOutcome,
    ReceiptResult,
    ShortCodeBlacklist,
    TransmissionMode,
)

SIDES = {"mid": MidBase.metadata, "marketing": MarketingBase.metadata}

__all__ = [
    "MARKETING_SCHEMA",
    "MID_SCHEMA",
    "SIDES",
    "BindSlot",
    "BroadLog",
    "BroadLogMsg",
    "Delivery",
    "DeliveryError",
    "DeliveryMessage",
    "DeliveryState",
    "DeliveryTemplate",
    "ExternalAccount",
    "FailureType",
    "InSms",
    "Inbox",
    "InboxKind",
    "MarketingBase",
    "MarketingDelivery",
    "MarketingDeliveryState",
    "MarketingMessageStatus",
    "MessageStatus",
    "MidBase",
    "MtaLease",
    "Operator",
    "ProviderMsgId",
    "RateShare",
    "Receipt",
    "ReceiptOutcome",
    "ReceiptResult",
    "Recipient",
    "ShortCodeBlacklist",
    "TransmissionMode",
]
