"""Auto-replies on an MTA child's binds: claimed from the outbox, sent between the MTs.

The SMS process opens no transmitter (every bind counts against the contract, and in TRX
mode the transceivers are the MTA's): it stores each reply in `mid.reply_outbox`
(smsmta.replies). `ReplyPump` runs beside an `AccountSender` of an account with
auto-reply rules: woken by the queue's NOTIFY (and a poll), it claims at most
`REPLY_BATCH` replies per cycle, so MTs keep flowing and replies take their turn, and
puts each part on one of the sender's bound connections when its window has room and the
account's rate limiter grants it (the same window and cap as MTs). When the SMSC has
answered every part the row is deleted; the result is counted in
`smsmta_auto_replies{result}`. A part with no answer counts the reply as failed (at most
once on the wire then, as before). Claims not sent when the child stops or dies go back
with its lease (another child claims them). A lost database is logged once an outage
(`mta.reply_claim_failed`, then `mta.reply_claim_recovered`: smsmta.backoff).
Touches: the database (one connection, `mid.reply_outbox`), SMPP connections, metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
import structlog

from smsmta import obs
from smsmta.backoff import Outage
from smsmta.replies import Reply, claim, forget, reply_pdus
from smsmta.smpp.aio import SmppConnection
from smsmta.smpp.constants import status_name
from smsmta.smpp.session import Expired, Response
from smsmta.smpp.text import TextError

if TYPE_CHECKING:
    from mta.sender import AccountSender

log = structlog.get_logger("mta.replies")

REPLY_BATCH = 20  # replies claimed per cycle: MTs are never held back for long


@dataclass
class ReplyPart:
    """The context of one submit_sm of a reply (told apart from MT parts by its type)."""

    reply: Reply
    parts: list[int] = field(default_factory=list)  # [unanswered, failed], shared by parts


class ReplyPump:
    def __init__(
        self,
        sender: AccountSender,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        poll_interval: float,
        *,
        password: str | None = None,
    ) -> None:
        self.sender = sender
        self.connect = connect
        self.poll_interval = poll_interval
        self.conn: psycopg.AsyncConnection | None = None
        self.done: list[int] = []  # answered replies still in the outbox
        self._wakeup = asyncio.Event()
        name = sender.account.name
        # logged once an outage, the password masked; the next cycle is the next attempt
        self.outage = Outage(
            f"replies {name}",
            password,
            event_prefix="mta",
            lost="reply_claim_failed",
            back="reply_claim_recovered",
            logger=log,
        )
        self.m_sent = obs.SP_AUTO_REPLIES.labels(name, "sent")
        self.m_failed = obs.SP_AUTO_REPLIES.labels(name, "failed")

    def wake(self) -> None:
        self._wakeup.set()

    async def _db(self) -> psycopg.AsyncConnection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = await self.connect()
            if self.outage.password is None:  # the connection knows what to mask
                self.outage.password = self.conn.info.password or None
        return self.conn

    async def run(self) -> None:
        sender = self.sender
        while True:
            got = 0
            if sender.bound and not sender.fenced:
                try:
                    await self.flush()
                    replies = await claim(
                        await self._db(), sender.account_id, sender.owner, REPLY_BATCH
                    )
                except psycopg.OperationalError as error:
                    self.outage.failed(error, account=sender.account.name)
                    replies = []
                else:
                    self.outage.recovered()
                got = len(replies)
                for reply in replies:
                    await self._send(reply)
            if got >= REPLY_BATCH:
                await asyncio.sleep(0)
                continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)

    async def _send(self, reply: Reply) -> None:
        sender = self.sender
        try:
            pdus = reply_pdus(sender.account, reply)
        except TextError as error:
            self.m_failed.inc()
            log.error("mta.reply_unencodable", account=sender.account.name, error=str(error))
            self.done.append(reply.id)
            return
        context = ReplyPart(reply, [len(pdus), 0])
        loop = asyncio.get_running_loop()
        for pdu in pdus:
            # the grant is taken only while a bind has room, and the part goes at once: a
            # grant used later could fall into a sliding second with later grants (the cap
            # counts sends), and a window filled meanwhile would refuse the submit
            while True:
                conn = await self._ready()
                now = loop.time()
                if sender.limiter.acquire(1, now):
                    break
                # capped: a share of 0 (no grant in sight) may be raised at the next beat
                wait = sender.limiter.next_grant_at(now) - now
                await asyncio.sleep(min(0.05, max(0.001, wait)))
            conn.submit(pdu, context)

    async def _ready(self) -> SmppConnection:
        """A bound connection of the sender with room in its window."""
        while True:
            for client in list(self.sender.clients):
                if client.is_bound:
                    with contextlib.suppress(ConnectionError):
                        conn = await client.wait_ready()
                        if not self.sender.fenced:
                            return conn
            await asyncio.sleep(0.05)

    def on_response(self, conn: SmppConnection, response: Response) -> None:
        context: ReplyPart = response.context
        status = response.pdu.command_status
        if status:
            context.parts[1] += 1
            log.warning(
                "mta.reply_refused", account=self.sender.account.name, status=status_name(status)
            )
        self._answered(context)

    def on_expired(self, conn: SmppConnection, expired: Expired, reason: str) -> None:
        context: ReplyPart = expired.context
        context.parts[1] += 1
        log.warning("mta.reply_unanswered", account=self.sender.account.name, reason=reason)
        self._answered(context)

    def _answered(self, context: ReplyPart) -> None:
        context.parts[0] -= 1
        if context.parts[0]:
            return
        (self.m_failed if context.parts[1] else self.m_sent).inc()
        self.done.append(context.reply.id)
        self._wakeup.set()

    async def flush(self) -> None:
        """Delete the answered replies from the outbox."""
        if self.done:
            done, self.done = self.done, []
            try:
                await forget(await self._db(), done)
            except psycopg.OperationalError:
                self.done.extend(done)
                raise

    async def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            await self.flush()
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self.conn.close()
