"""One account's sending in one MTA child: claims, binds, rate, answers.

`AccountSender` holds the account's `connections` binds (transmitters, or transceivers in
TRX mode), a bounded buffer of claimed messages split into parts, and one pump per
bind that puts parts on the wire while three limits allow:

1. the bind's window, where a part holds its slot from submit_sm until its message's
   outcome is COMMITTED (not merely answered): so at any instant at most
   `window x connections` parts of this child are on the wire or answered-but-not-yet-
   durable, and a crash, whenever it comes, can resend at most that many;
2. the rate limiter (the child's share of the account's cap, lowered by AIMD);
3. the lease: a child that cannot renew it stops sending (fenced); one that lost it
   (another child reclaimed its rows) drops the claims it had not started sending.

Claims follow the binds: nothing is claimed while no bind of the child is up (a child
whose binds cannot come up - no bind slot left, a certificate that does not verify, an
SMSC down - would otherwise hold messages other children and hosts could send), and after
`UNBOUND_HANDBACK` seconds with no bind up the claims not yet started go back to the
queue. A lost database is one outage (smsmta.backoff): `mta.claim_failed`, a claim every
`poll_interval`, `mta.claim_recovered`.

In TRX mode the same binds receive receipts and MOs: each is stored in the inbox
(smsmta.queue.inbox) and answered only once committed; the SMS process handles them.

Every verdict is `smsmta.policy`'s (submit_sm_resp status, no answer, blacklisted or
unencodable messages, soft/hard and the retry schedule); this module does the I/O and
hands outcomes to the writer (`mta.writer`). Throttling answers feed AIMD and put the
part back after a back-off; a part with no answer (timeout, lost link) is sent again at
once, flagged as a possible duplicate, and a timeout resets its bind first: the parts in
flight on it are resent on a new bind.
Touches: SMPP connections (through smsmta.smpp.aio), the database (claims), metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog

from mta.queue import DeliveryCache, Mt, claim
from mta.replies import ReplyPart, ReplyPump
from mta.submit import MtBuilder
from mta.throttle import Aimd, RateLimiter, SmscWindow
from mta.writer import Callback, Writer
from smsmta import obs
from smsmta.backoff import Backoff, Outage
from smsmta.binds import BindWatch, bind_settings
from smsmta.policy import (
    NoAnswer,
    RetryPolicy,
    SubmitVerdict,
    Verdict,
    before_submit,
    submit_error_key,
    submit_verdict,
)
from smsmta.queue.inbox import Inbox, handle_request
from smsmta.settings import Account, Mode
from smsmta.smpp.aio import BaseHandler, BindKind, SmppClient, SmppConnection
from smsmta.smpp.constants import CommandStatus, status_name
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.receipt import IdFormat, format_id
from smsmta.smpp.session import Expired, Response
from smsmta.smpp.text import TextError

log = structlog.get_logger("mta.sender")

UNKNOWN_FATE = -1  # error_status of a message whose part got no answer too many times
UNBOUND_HANDBACK = 10.0  # seconds with no bind up before unsent claims go back to the queue


class AccountSender(BaseHandler):
    def __init__(
        self,
        *,
        account: Account,
        account_id: int,
        owner: str,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        writer: Writer,
        policy: RetryPolicy,
        claim_batch: int,
        poll_interval: float,
        inbox: Inbox | None = None,
        receipt_on_every_part: bool = False,
    ) -> None:
        self.account = account
        self.inbox = inbox
        self.on_fatal: Callable[[BaseException], None] | None = None
        self.account_id = account_id
        self.owner = owner
        self.connect = connect
        self.claims: psycopg.AsyncConnection | None = None
        self.writer = writer
        self.policy = policy
        self.builder = MtBuilder(account, receipt_on_every_part=receipt_on_every_part)
        self.cache = DeliveryCache()
        self.ack_format = account.smsc.mt_ack_id_format
        self.smsc_name = account.connection.smsc_name
        self.cap = account.throughput.max_mt_per_second or None
        self.limiter = RateLimiter(self.cap, asyncio.get_running_loop().time())
        self.aimd = Aimd(self.cap)
        self.smsc_window = SmscWindow(account.throughput.window)
        self.share: float | None = self.cap
        self.fenced = False
        self.parts: deque[tuple[Mt, int]] = deque()
        self.delayed: deque[tuple[float, Mt, int]] = deque()  # throttled parts, due times
        self.in_memory = 0  # claimed messages not yet durable
        window_total = account.throughput.window * account.connection.connections
        self.high_water = max(claim_batch, 2 * window_total)
        if self.cap:
            self.high_water = max(2 * window_total, min(self.high_water, int(self.cap * 2) + 1))
        self.claim_batch = claim_batch
        self.poll_interval = poll_interval
        self.claim_outage = Outage(
            f"claims {account.name}",
            writer.outage.password,  # the same database: the writer knows what to mask
            event_prefix="mta",
            backoff=Backoff(poll_interval, poll_interval),
            lost="claim_failed",
            back="claim_recovered",
            logger=log,
        )
        self.unpersisted: dict[SmppConnection, int] = {}
        self.clients: list[SmppClient] = []
        self.bound = 0  # binds of this sender up now
        self._unbound_since: float | None = asyncio.get_running_loop().time()
        self._tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        self._need_work = asyncio.Event()
        self._need_work.set()
        self._all_durable = asyncio.Event()
        self._all_durable.set()
        self._claiming = True
        self._draining = False
        trx = account.connection.mode is Mode.TRX
        self._kind = BindKind.TRANSCEIVER if trx else BindKind.TRANSMITTER
        name = account.name
        self.m_submitted = obs.MT_PARTS_SUBMITTED.labels(name)
        self.m_in_flight = obs.MT_WINDOW_IN_FLIGHT.labels(name)
        self.m_latency = obs.MT_SUBMIT_LATENCY.labels(name)
        self.m_rate = obs.MT_RATE_CAP.labels(name)
        self.m_binds = obs.BINDS_UP.labels(name, self._kind.name.lower())
        self.m_dups = obs.MT_POSSIBLE_DUPLICATES.labels(name)
        self.m_throttled = obs.MT_THROTTLED.labels(name)
        self.m_aimd = obs.AIMD_DECREASES.labels(name)
        obs.MT_CONFIGURED_CAP.labels(name).set(self.cap or 0)
        self.watch = BindWatch(name, account.connection.system_id, self._kind.name.lower())
        # auto-replies of the account (stored by the SMS process) go out on these binds
        self.replies = ReplyPump(self, connect, poll_interval) if account.auto_replies else None
        self._apply_rate()

    # --- binds ---------------------------------------------------------------------

    def set_binds(self, wanted: int) -> None:
        """Run `wanted` binds (bounded by the account's bind slots this child holds)."""
        while len(self.clients) < wanted:
            client = SmppClient(bind_settings(self.account, self._kind), self)
            self.clients.append(client)
            self._spawn(client.run())
            self._spawn(self._pump(client))
        while len(self.clients) > wanted:
            client = self.clients.pop()
            self._tasks.append(asyncio.create_task(client.stop(self.account.throughput.mt_timeout)))

    def on_bind_failed(self, client: SmppClient, error: BaseException) -> None:
        """A bind attempt failed (refused, timed out, no connection): counted, logged once."""
        self.watch.failed(error)

    def on_bound(self, conn: SmppConnection) -> None:
        self.watch.bound()
        self.m_binds.inc()
        self.bound += 1
        self._unbound_since = None
        self._need_work.set()
        self._wakeup.set()

    def on_unbound(self, conn: SmppConnection, reason: str) -> None:
        self.m_binds.dec()
        self.bound -= 1
        if self.bound == 0:
            self._unbound_since = conn.loop.time()
        obs.RECONNECTS.labels(self.account.name).inc()

    # --- claiming --------------------------------------------------------------------

    def start(self, binds: int) -> None:
        self.set_binds(binds)
        self._spawn(self._claim_loop())
        if self.replies is not None:
            self._spawn(self.replies.run())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a task of this sender; if it dies of an unexpected error, the child stops.

        A claim loop or a pump that ends silently would leave the queue unsent with
        nothing in the log: better to log it and exit, and let the supervisor restart us.
        """
        task = asyncio.create_task(coroutine)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error(
            "mta.task_failed",
            account=self.account.name,
            task=task.get_coro().__qualname__,  # type: ignore[union-attr]
            error=repr(error),
            exc_info=error,
        )
        if self.on_fatal is not None:
            self.on_fatal(error)

    def notify(self) -> None:
        """New messages or replies were queued (NOTIFY): claim if there is room."""
        self._need_work.set()
        if self.replies is not None:
            self.replies.wake()

    async def _claim_loop(self) -> None:
        while self._claiming:
            room = self.high_water - self.in_memory if self.bound else 0
            if room >= min(self.claim_batch, self.high_water // 2) or (room > 0 and not self.parts):
                try:
                    got = await self._claim(min(room, self.claim_batch))
                    self.claim_outage.recovered()
                except psycopg.OperationalError as error:
                    got = 0
                    await asyncio.sleep(self.claim_outage.failed(error, account=self.account.name))
                if got and got == min(room, self.claim_batch):
                    continue  # more may be due: claim again at once
            self._need_work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._need_work.wait(), self.poll_interval)

    async def _claim(self, limit: int) -> int:
        if self.claims is None or self.claims.closed or self.claims.broken:
            self.claims = await self.connect()
        channel = self.account.channel
        mts = await claim(
            self.claims,
            self.account_id,
            self.owner,
            limit,
            default_source=channel.source_number or channel.short_code,
            short_code=channel.short_code,
            default_country=self.account.default_country,
        )
        if not mts:
            return 0
        await self.cache.resolve(self.claims, mts)
        if not self._claiming:  # stopped while claiming: hand them straight back
            self.in_memory += len(mts)
            for mt in mts:
                self._release(mt)
            return len(mts)
        for mt in mts:
            self.in_memory += 1
            refused = before_submit(mt.blacklisted)
            if refused is None:
                try:
                    assert mt.options is not None
                    mt.set_pdus(self.builder.build(mt.id, mt.address, mt.text, mt.options))
                except TextError as error:
                    refused = before_submit(False, str(error))
            if refused is not None:
                callback = self._durable_callback(mt)
                self.writer.failed(mt, refused.failure_type, refused.reason, callback)
                continue
            self.parts.extend((mt, index) for index in range(len(mt.pdus)))
        self._all_durable.clear()
        self._wakeup.set()
        return len(mts)

    # --- sending ---------------------------------------------------------------------

    async def _pump(self, client: SmppClient) -> None:
        loop = asyncio.get_running_loop()
        while client in self.clients or (self._draining and self.parts):
            try:
                conn = await client.wait_ready()
            except ConnectionError:
                return
            now = loop.time()
            if self.delayed:
                self._release_delayed(now)
            if self._fill(conn, now):
                await asyncio.sleep(0)  # let answers in before the next batch
                continue
            timeout = None
            if self.parts and not self.fenced and self.limiter.rate is not None:
                timeout = max(0.001, self.limiter.next_grant_at(now) - now)
            if self.delayed:
                until = max(0.001, self.delayed[0][0] - now)
                timeout = until if timeout is None else min(timeout, until)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _fill(self, conn: SmppConnection, now: float) -> int:
        if self.fenced or not self.parts:
            return 0
        unanswered = conn.session.in_flight
        free = min(
            conn.window_free - self.unpersisted.get(conn, 0),
            self.smsc_window.limit - unanswered,
        )
        wanted = min(free, len(self.parts))
        if wanted <= 0:
            return 0
        granted = self.limiter.acquire(wanted, now)
        parts = self.parts
        for _ in range(granted):
            mt, index = parts.popleft()
            mt.started = True
            conn.submit(mt.pdus[index], (mt, index, now, unanswered))
            unanswered += 1
        if granted:
            self.m_submitted.inc(granted)
            self.m_in_flight.inc(granted)
            if len(parts) < self.high_water // 2:
                self._need_work.set()
        return granted

    def _release_delayed(self, now: float) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, mt, index = delayed.popleft()
            self.parts.appendleft((mt, index))

    # --- answers ---------------------------------------------------------------------

    def on_response(self, conn: SmppConnection, response: Response) -> None:
        if isinstance(response.context, ReplyPart):
            assert self.replies is not None
            self.replies.on_response(conn, response)
            self._wakeup.set()  # its window slot is free for MTs
            return
        mt, index, sent_at, unanswered = response.context
        pdu = response.pdu
        status = pdu.command_status
        now = conn.loop.time()
        self.m_latency.observe(now - sent_at)
        obs.MT_RESPONSES.labels(self.account.name, status_name(status)).inc()
        verdict = submit_verdict(status)
        if verdict is SubmitVerdict.SENT:
            self.aimd.on_clean(now)
            self.smsc_window.on_accepted(unanswered)
            provider_id = pdu.message_id
            if self.ack_format is not IdFormat.AS_IS:
                try:
                    provider_id = format_id(provider_id, self.ack_format)
                except ValueError as error:
                    log.warning("mta.ack_id_format", account=self.account.name, error=str(error))
            mt.provider_ids[index] = provider_id
            mt.acked += 1
        elif verdict is SubmitVerdict.THROTTLED:
            self.m_throttled.inc()
            self.m_in_flight.dec()
            observed = self.limiter.in_window(now)
            limit = self.smsc_window.limit
            if self.smsc_window.on_throttled(unanswered, now):
                if self.smsc_window.limit < limit:
                    log.warning(
                        "mta.smsc_window",
                        account=self.account.name,
                        window=self.smsc_window.limit,
                        configured=self.smsc_window.window,
                        why="throttled beyond this many unanswered submits: window lowered, "
                        "rate kept",
                    )
            elif self.aimd.on_throttled(now, float(observed)):
                self.m_aimd.inc()
                log.warning("mta.aimd_decrease", account=self.account.name, rate=self.aimd.rate)
                self._apply_rate()
            obs.MT_RETRIES.labels(self.account.name, "throttled").inc()
            self.delayed.append((now + self.policy.throttle_backoff, mt, index))
            return
        elif mt.error_status is None:  # SubmitVerdict.ERROR: the first error decides
            mt.error_status = status
        self._resolved(conn, mt, index)

    def on_expired(self, conn: SmppConnection, expired: Expired, reason: str) -> None:
        if isinstance(expired.context, ReplyPart):
            assert self.replies is not None
            self.replies.on_expired(conn, expired, reason)
            self._wakeup.set()  # its window slot is free for MTs
            return
        if reason == "timeout":
            # No answer within mt_timeout: the link is presumed dead (a network cut without
            # FIN looks exactly like this). Resending on it would put a second copy of every
            # part behind the first in the same stalled stream, and both would reach the
            # SMSC once it flows again: reset it, so that the parts in flight on this bind,
            # its window at most, are the only ones sent twice (Kannel's default too).
            conn.abort(f"no answer to a submit within {self.account.throughput.mt_timeout:g} s")
        mt, index, _, _ = expired.context
        self.m_in_flight.dec()  # off the wire; counted again if it goes back on
        self.m_dups.inc()
        mt.possible_duplicate = True
        mt.unknown_attempts += 1
        if self.policy.no_answer(mt.unknown_attempts, self._draining) is NoAnswer.RESEND:
            obs.MT_RETRIES.labels(self.account.name, "no answer").inc()
            self.parts.appendleft((mt, index))
            self._wakeup.set()
            return
        if mt.error_status is None:
            mt.error_status = UNKNOWN_FATE
        self._resolved(None, mt, index)

    def on_request(self, conn: SmppConnection, pdu: Pdu) -> None:
        """TRX mode: receipts and MOs on our transceivers, stored before they are answered."""
        if self.inbox is not None:
            handle_request(self.inbox, self.account_id, conn, pdu)
        elif pdu.RESPONSE is not None:  # a transmitter gets none: the session refuses them
            conn.respond(pdu.make_resp(command_status=CommandStatus.ESME_RINVBNDSTS))

    def on_stray(self, conn: SmppConnection, pdu: object) -> None:
        log.info("mta.late_response", account=self.account.name, pdu=repr(pdu))

    def _resolved(self, conn: SmppConnection | None, mt: Mt, index: int) -> None:
        """One part has its answer; when all have, the message goes to the writer."""
        mt.resolved += 1
        if conn is not None:
            mt.part_conns[index] = conn
            self.unpersisted[conn] = self.unpersisted.get(conn, 0) + 1
        if not mt.complete:
            return
        callback = self._durable_callback(mt)
        status = mt.error_status
        if status is None:
            self.writer.sent(self.account_id, mt, callback)
        elif status == UNKNOWN_FATE:
            self._unknown_fate(mt, callback)
        else:
            self.writer.submit_failed(mt, submit_error_key(self.smsc_name, status), callback)

    def _unknown_fate(self, mt: Mt, callback: Callback) -> None:
        decision, reason = self.policy.after_no_answer(
            self.smsc_name,
            mt.unknown_attempts,
            mt.retry_count,
            datetime.now(UTC),
            mt.validity_end(self.policy.default_validity),
        )
        if decision.verdict is Verdict.RETRY:
            assert decision.next_try_at is not None
            self.writer.retry(mt, decision.next_try_at, reason, callback=callback)
        else:
            self.writer.failed(mt, decision.failure_type, reason, callback)

    def _durable_callback(self, mt: Mt) -> Callback:
        """What runs once the message's outcome is committed: its window slots free up."""

        def durable() -> None:
            for conn in mt.part_conns:
                if conn is not None:
                    left = self.unpersisted[conn] - 1
                    if left:
                        self.unpersisted[conn] = left
                    else:
                        del self.unpersisted[conn]
                    self.m_in_flight.dec()
            self.in_memory -= 1
            if self.in_memory == 0:
                self._all_durable.set()
            self._wakeup.set()
            if self.in_memory < self.high_water // 2:
                self._need_work.set()

        return durable

    def _release(self, mt: Mt, reason: str = "released at shutdown") -> None:
        """Hand an unsent claimed message back to the queue."""
        self.writer.retry(
            mt,
            datetime.now(UTC),
            reason,
            counted=False,
            callback=self._durable_callback(mt),
        )

    # --- rate --------------------------------------------------------------------------

    def set_share(self, share: float | None) -> None:
        """This child's share of the account's cap (from the coordinator)."""
        self.share = share
        self.aimd.set_cap(share if share else None)
        self._apply_rate()

    def set_fenced(self, fenced: bool) -> None:
        if fenced != self.fenced:
            log.warning("mta.fenced" if fenced else "mta.unfenced", account=self.account.name)
        self.fenced = fenced
        self._wakeup.set()

    def _apply_rate(self) -> None:
        rates = [r for r in (self.share if self.cap else None, self.aimd.rate) if r is not None]
        rate = min(rates) if rates else None
        if self.cap and self.share == 0:
            rate = 1e-9  # no share yet: nothing may go
        self.limiter.set_rate(rate, asyncio.get_running_loop().time())
        self.m_rate.set(rate if rate and rate > 1e-6 else 0)
        self._wakeup.set()

    def tick(self) -> None:
        """Periodic: hand back claims no bind can send; let AIMD climb back and apply it."""
        now = asyncio.get_running_loop().time()
        self._hand_back_if_unbound(now)
        if self.smsc_window.tick(now):
            self._wakeup.set()
        if self.aimd.rate is not None or self.aimd.reference is not None:
            before = self.aimd.rate
            self.aimd.on_clean(asyncio.get_running_loop().time())
            if self.aimd.rate != before:
                self._apply_rate()

    def _hand_back_if_unbound(self, now: float) -> None:
        """No bind up for UNBOUND_HANDBACK s (or none to run): unsent claims go back."""
        since = self._unbound_since
        if since is None or not self._claiming or not (self.parts or self.delayed):
            return
        if self.clients and now - since < UNBOUND_HANDBACK:
            return
        unsent = self._take_unsent()
        for mt in unsent:
            self._release(mt, "no bind up: back to the queue")
        if unsent:
            log.warning(
                "mta.claims_handed_back",
                account=self.account.name,
                messages=len(unsent),
                unbound_for=round(now - since, 1),
            )

    # --- stopping ----------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Stop claiming, finish what is on the wire (bounded), release the rest, unbind."""
        self._claiming = False
        self._need_work.set()
        self._draining = True
        for mt in self._take_unsent():
            self._release(mt)
        self.parts.extend((mt, index) for _, mt, index in self.delayed)
        self.delayed = deque()
        self._wakeup.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_durable.wait(), timeout)
        clients, self.clients = self.clients, []
        await asyncio.gather(*(client.stop(0) for client in clients), return_exceptions=True)
        if self.replies is not None:  # answered replies out of the outbox
            await self.replies.close()
        self._wakeup.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def forget_unsent(self) -> int:
        """The lease was lost: drop the claimed messages none of whose parts went out.

        Another child returned them to the queue when our lease expired (possible
        duplicates), and may be sending them already: sending our copies too would
        double up to a whole claim buffer. They are not written back either: the rows
        are not ours any more. Messages with a part on the wire finish as usual (their
        window bounds the duplicates). Returns the number of messages dropped.
        """
        dropped = self._take_unsent()
        self.in_memory -= len(dropped)
        if self.in_memory <= 0:
            self.in_memory = 0
            self._all_durable.set()
        self._need_work.set()
        self._wakeup.set()
        return len(dropped)

    def _take_unsent(self) -> list[Mt]:
        """Remove the claimed messages none of whose parts went out; return them."""
        unsent: dict[int, Mt] = {}
        keep: deque[tuple[Mt, int]] = deque()
        for mt, index in self.parts:
            if mt.started:
                keep.append((mt, index))
            else:
                unsent[mt.id] = mt
        delayed = deque(item for item in self.delayed if item[1].started)
        unsent.update((mt.id, mt) for _, mt, _ in self.delayed if not mt.started)
        self.parts, self.delayed = keep, delayed
        return list(unsent.values())

    def leftovers(self) -> list[Mt]:
        """Messages still claimed after stop() (no answer in time): for the lease's end."""
        return [mt for mt, _ in self.parts]
