"""Auto-replies to MOs: handed to the MTA through the outbox, never on a bind of our own.

Every bind smsmta opens counts against the contract's bind limit, and in TRX mode the
transceivers are the MTA's: so the SMS process opens no transmitter. The replies an MO
batch decides (sms_process.mo) are stored in `mid.reply_outbox` in the batch's own
transaction (smsmta.replies.store, called by sms_process.work.WorkLoops.work_once), and the MTA
children of the account send them on their binds (mta.replies): `registered_delivery` 0,
from the short code the MO was sent to, the MO's TON/NPI mirrored, the account's
encoding mapping (smsmta.replies.reply_pdus). A reply is no longer lost in a crash after
its MO's commit: it waits in the outbox until an MTA child has sent it.
Touches: nothing (a conversion).
"""

from __future__ import annotations

from sms_process.mo import Reply
from smsmta import replies


def outbox_reply(reply: Reply) -> replies.Reply:
    """The outbox form of a reply decided by the MO handler."""
    return replies.Reply(
        account_id=reply.account_id,
        source_addr=reply.source_addr,
        source_ton=reply.source_ton,
        source_npi=reply.source_npi,
        destination_addr=reply.destination_addr,
        dest_ton=reply.dest_ton,
        dest_npi=reply.dest_npi,
        text=reply.text,
    )
