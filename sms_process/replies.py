"""Auto-replies to MOs, sent on the SMS process's own transmitter bind of the account.

`ReplySender(account, account_id)` holds one transmitter bind, opened only for accounts
that have auto-reply rules, and sends each `Reply` (sms_process.mo) as submit_sm: the
account's encoding mapping and transliteration, split with a concatenation UDH when
long, from the short code the MO was sent to, to its sender, with the MO's TON/NPI
mirrored, and `registered_delivery` 0 (SPEC section 6: no receipt for auto-replies).

Replies are sent after the MO's commit, at most once: a crash between the commit and the
submit_sm loses the reply, never duplicates it. The queue is bounded; a reply that finds
it full is dropped and counted. Touches: one SMPP connection per account, metrics.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from mta.sender import bind_settings
from smpp.aio import BaseHandler, BindKind, SmppClient, SmppConnection
from smpp.constants import EsmClass, status_name
from smpp.pdu import Pdu, SubmitSm
from smpp.session import Expired, Response
from smpp.text import TextError, encode_message
from sms_process.mo import Reply
from smsmta import obs
from smsmta.settings import Account

log = structlog.get_logger("sms_process.replies")


def reply_pdus(account: Account, reply: Reply) -> tuple[Pdu, ...]:
    """The submit_sm PDUs of one auto-reply (raises smpp.text.TextError)."""
    mapping = tuple((rule.data_coding, rule.encoding) for rule in account.smsc.encoding_mapping)
    encoded = encode_message(
        reply.text, mapping, transliterate=account.channel.transliteration, max_parts=10
    )
    esm_class = EsmClass.UDHI if encoded.udh else 0
    return tuple(
        SubmitSm(
            service_type=account.channel.service_type,
            source_addr_ton=reply.source_ton,
            source_addr_npi=reply.source_npi,
            source_addr=reply.source_addr,
            dest_addr_ton=reply.dest_ton,
            dest_addr_npi=reply.dest_npi,
            destination_addr=reply.destination_addr,
            esm_class=esm_class,
            registered_delivery=0,
            data_coding=encoded.data_coding,
            short_message=part,
        )
        for part in encoded.parts
    )


class ReplySender(BaseHandler):
    def __init__(self, account: Account, account_id: int, queue_size: int = 10_000) -> None:
        self.account = account
        self.account_id = account_id
        self.client = SmppClient(bind_settings(account, BindKind.TRANSMITTER), self)
        self.queue: asyncio.Queue[Reply] = asyncio.Queue(queue_size)
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.m_sent = obs.SP_AUTO_REPLIES.labels(account.name, "sent")
        self.m_failed = obs.SP_AUTO_REPLIES.labels(account.name, "failed")

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.client.run()),
            asyncio.create_task(self._pump()),
        ]

    def send(self, reply: Reply) -> None:
        try:
            self.queue.put_nowait(reply)
            self._idle.clear()
        except asyncio.QueueFull:
            self.m_failed.inc()
            log.error("sms_process.reply_dropped", account=self.account.name, reason="queue full")

    async def _pump(self) -> None:
        while True:
            reply = await self.queue.get()
            try:
                pdus = reply_pdus(self.account, reply)
            except TextError as error:
                self.m_failed.inc()
                log.error(
                    "sms_process.reply_unencodable", account=self.account.name, error=str(error)
                )
                self._check_idle()
                continue
            for pdu in pdus:
                conn = await self.client.wait_ready()
                self.in_flight += 1
                conn.submit(pdu, reply)

    def _check_idle(self) -> None:
        if self.in_flight == 0 and self.queue.empty():
            self._idle.set()

    def on_response(self, conn: SmppConnection, response: Response) -> None:
        self.in_flight -= 1
        status = response.pdu.command_status
        reply: Reply = response.context
        if status == 0:
            self.m_sent.inc()
            log.info(
                "sms_process.reply_sent",
                account=self.account.name,
                to=reply.destination_addr,
                message_id=response.pdu.message_id,
            )
        else:
            self.m_failed.inc()
            log.warning(
                "sms_process.reply_refused",
                account=self.account.name,
                to=reply.destination_addr,
                status=status_name(status),
            )
        self._check_idle()

    def on_expired(self, conn: SmppConnection, expired: Expired, reason: str) -> None:
        self.in_flight -= 1
        self.m_failed.inc()
        log.warning("sms_process.reply_unanswered", account=self.account.name, reason=reason)
        self._check_idle()

    async def stop(self, timeout: float) -> None:
        """Send what is queued (bounded by `timeout`), unbind, stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        await self.client.stop(min(timeout, 5.0))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
