"""Incoming messages (MO): decoding, long-MO reassembly, storage, auto-reply rules, blacklists.

What it does, for a batch of `mid.inbox` MO rows, inside the caller's transaction:

- decodes each deliver_sm / data_sm (smsmta.smpp.text.decode_short_message: every data_coding,
  UDH or not) and puts long MOs back together (smsmta.smpp.text.Reassembler, concatenation UDH or
  SAR TLVs). A part whose message is incomplete stays in the inbox, `held`, so a restart
  loses nothing (`MoHandler.reload` feeds the held parts back); a message still missing
  parts after the reassembly timeout is stored with `[...]` where they are missing;
- stores the whole message in `mid.in_sms` when the account's `store_mo` is on;
- applies the account's auto-reply rules in order (`match_rule`, SPEC section 4): the
  keyword is the first alphanumeric word, case-insensitive; an empty keyword or short code
  matches anything; the first match wins; its action (`blacklist` / `unblacklist` the
  sender for THAT short code, the MO's destination) runs even without a reply text;
- limits the replies (`ReplyLimiter`): at most one per (account, sender, short code, rule)
  per `reply_interval` seconds, so that two auto-responders answering each other cannot loop;
  the rule's action runs on every MO all the same;
- returns the replies to send after the commit (`Reply`), and deletes the handled rows.

The inbox rows are the queue layer's (smsmta.queue.inbox: `hold`, `delete`), the
blacklist's entries smsmta.blacklist's (`add_by_keyword`, `remove_by_keyword`): this
module calls them on its connection, in its transaction, and writes only `mid.in_sms`.

Addresses: the MO's sender is stored in the canonical form (smsmta.numbers.canonical with
its TON/NPI and the account's default_country: `+<E.164 digits>`), the form queued MTs
carry, so that a STOP and a later MT to the same handset meet whatever the SMSC's
TON/NPI; a sender that cannot be canonicalised is kept as received (it can match nothing
queued) and logged masked. The short code the MO was sent to is the blacklist's scope,
in the form of smsmta.numbers.sender_key (a short code's digits, a long number canonical),
the form the MTA's claim computes for the short code a message is sent from.

Touches: the database through the caller's transaction (`mid.in_sms`; `mid.inbox` and
`mid.short_code_blacklist` through their owners); no sockets (replies go through
sms_process.replies).
"""

from __future__ import annotations

import re
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import structlog

from smsmta import blacklist, obs
from smsmta.numbers import NumberError, canonical, sender_key
from smsmta.queue import inbox
from smsmta.settings import Account, AutoReply, ReplyAction
from smsmta.smpp import codec
from smsmta.smpp.constants import EsmClass
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import Pdu
from smsmta.smpp.text import BadSegment, PartialMessage, Reassembler, decode_short_message

log = structlog.get_logger("sms_process.mo")

_WORD = re.compile(r"[^\W_]+")
_TAG_MESSAGE_PAYLOAD = 0x0424
_TAG_SAR_REF = 0x020C
_TAG_SAR_TOTAL = 0x020E
_TAG_SAR_SEQ = 0x020F


def keyword_of(text: str) -> str:
    """The MO's keyword: its first alphanumeric word, upper-cased ('' when none)."""
    match = _WORD.search(text)
    return match.group(0).upper() if match else ""


def match_rule(rules: Sequence[AutoReply], keyword: str, short_code: str) -> AutoReply | None:
    """The first rule matching (keyword, short code); empty rule fields match anything."""
    wanted = keyword.casefold()
    for rule in rules:
        if rule.keyword and keyword_of(rule.keyword).casefold() != wanted:
            continue
        if rule.short_code and rule.short_code.lstrip("+") != short_code.lstrip("+"):
            continue
        return rule
    return None


def address(ton: int, addr: str, npi: int | None = None, default_country: str = "") -> str:
    """An MO sender as stored: its canonical form (`+<E.164 digits>`), else as received."""
    try:
        return canonical(addr, ton=ton, npi=npi, default_country=default_country)
    except NumberError as error:
        log.warning(
            "sms_process.mo_sender_not_canonical",
            ton=ton,
            npi=npi,
            sender=obs.mask_number(addr),
            error=str(error),
        )
        return addr


@dataclass(frozen=True)
class Reply:
    """An auto-reply to send after the commit, on the account's transmitter bind."""

    account_id: int
    source_addr: str  # the short code the MO was sent to
    source_ton: int
    source_npi: int
    destination_addr: str  # the MO's sender
    dest_ton: int
    dest_npi: int
    text: str


class ReplyLimiter:
    """At most one auto-reply per (account, sender, short code, rule) per `interval` seconds.

    Per rule too, so that a STOP then a START within the interval still get their two
    different answers; a loop repeats one rule, and every rule answers a pair at most once
    per interval.

    The state is in memory, an LRU of the last reply time per key, capped at `max_entries`
    (the oldest reply forgotten first; entries older than the interval are dropped as
    replies go on): the SMS process is a single instance (SPEC section 1) and this is
    checked on every MO, so a table would cost a write per MO for nothing. What a restart
    forgets is at most one more reply per pair. Decisions made in a batch are `commit`ted
    once its transaction is (a batch rolled back leaves no trace: `discard`); a suppressed
    reply is counted (smsmta_auto_replies_rate_limited) and logged once per interval and
    account, never once per MO.
    """

    def __init__(self, interval: float, max_entries: int = 100_000) -> None:
        self.interval = interval
        self.max_entries = max_entries
        self._last: OrderedDict[tuple[int, str, str, str], float] = OrderedDict()
        self._pending: dict[tuple[int, str, str, str], float] = {}
        self._suppressed: Counter[int] = Counter()  # this batch's, by account id
        self._unlogged: Counter[int] = Counter()  # counted since the account's last log line
        self._logged_at: dict[int, float] = {}
        self._example: dict[int, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def allow(
        self, account_id: int, sender: str, short_code: str, now: float, rule: str = ""
    ) -> bool:
        """Whether this MO may have its reply; a pending decision until `commit`."""
        if self.interval <= 0:
            return True
        key = (account_id, sender, short_code, rule)
        last = self._pending.get(key, self._last.get(key))
        if last is not None and 0 <= now - last < self.interval:
            self._suppressed[account_id] += 1
            self._example[account_id] = (sender, short_code)
            return False
        self._pending[key] = now
        return True

    def discard(self) -> None:
        """Forget the decisions of a batch whose transaction did not commit."""
        self._pending.clear()
        self._suppressed.clear()

    def commit(self, names: Mapping[int, str], now: float) -> None:
        """The batch committed: remember its replies; count and log what was suppressed."""
        for key, at in self._pending.items():
            self._last[key] = at
            self._last.move_to_end(key)
        self._pending.clear()
        while self._last and (
            len(self._last) > self.max_entries
            or now - next(iter(self._last.values())) >= self.interval
        ):
            self._last.popitem(last=False)
        for account_id, n in self._suppressed.items():
            name = names.get(account_id, f"#{account_id}")
            obs.SP_AUTO_REPLIES_RATE_LIMITED.labels(name).inc(n)
            self._unlogged[account_id] += n
        self._suppressed.clear()
        for account_id, n in list(self._unlogged.items()):
            if now - self._logged_at.get(account_id, -self.interval) < self.interval:
                continue
            sender, short_code = self._example.pop(account_id, ("", ""))
            log.warning(
                "sms_process.auto_replies_rate_limited",
                account=names.get(account_id, f"#{account_id}"),
                suppressed=n,
                sender=obs.mask_number(sender),
                short_code=short_code,
                reply_interval=self.interval,
                why="a sender had an auto-reply from this short code less than "
                "reply_interval ago: an auto-responder loop, or a repeated keyword",
            )
            self._logged_at[account_id] = now
            del self._unlogged[account_id]


@dataclass
class MoOutcome:
    stored: int = 0
    messages: list[tuple[str, str]] = field(default_factory=list)  # (account, keyword)
    replies: list[Reply] = field(default_factory=list)
    blacklist_changes: list[tuple[str, str]] = field(default_factory=list)  # (account, action)
    held: int = 0


@dataclass(slots=True)
class _Part:
    inbox_id: int
    account_id: int
    pdu: Pdu
    received_at: float  # epoch seconds


COPY_IN_SMS = (
    "COPY mid.in_sms (account_id, source_addr, destination_addr, text, data_coding, parts, "
    "keyword, received_at) FROM STDIN"
)
HELD_ROWS = "SELECT id, account_id, pdu, received_at FROM mid.inbox WHERE held ORDER BY id"


def _concat(pdu: Pdu, udh_concat: object) -> tuple[int, int, int] | None:
    """(reference, total, seq) of a part of a long MO, from the UDH or the SAR TLVs."""
    if udh_concat is not None:
        return udh_concat.reference, udh_concat.total, udh_concat.seq  # type: ignore[attr-defined]
    ref = pdu.tlv(_TAG_SAR_REF)
    total = pdu.tlv(_TAG_SAR_TOTAL)
    seq = pdu.tlv(_TAG_SAR_SEQ)
    if isinstance(ref, int) and isinstance(total, int) and isinstance(seq, int) and total > 1:
        return ref, total, seq
    return None


class MoHandler:
    """Handles batches of inbox MO rows; holds the reassembly state between batches."""

    def __init__(
        self,
        accounts: Mapping[int, Account],
        names: Mapping[int, str],
        reassembly_timeout: float = 300.0,
        limiter: ReplyLimiter | None = None,
    ) -> None:
        self.accounts = dict(accounts)
        self.limiter = limiter if limiter is not None else ReplyLimiter(0.0)
        self.names = dict(names)
        self.reassembler = Reassembler(reassembly_timeout)
        self.timeout = reassembly_timeout
        # (key, ref, total) -> when its first part came, the inbox ids held, its first part
        self._held: dict[tuple[object, int, int], tuple[float, list[int], _Part]] = {}

    async def reload(self, conn: psycopg.AsyncConnection) -> int:
        """At start: feed the parts held in the inbox back to the reassembler."""
        cursor = await conn.execute(HELD_ROWS)
        rows = await cursor.fetchall()
        out = MoOutcome()
        parts = [
            _Part(inbox_id, account_id, codec.decode(pdu), received_at.timestamp())
            for inbox_id, account_id, pdu, received_at in rows
        ]
        complete = self._assemble(parts)
        if complete:  # cannot happen unless a part was stored twice meanwhile: handle anyway
            await self._finish(conn, complete, out, time.time())
        return len(rows)

    async def handle(
        self,
        conn: psycopg.AsyncConnection,
        rows: Iterable[tuple[int, int, bytes, datetime]],
        now: float | None = None,
    ) -> MoOutcome:
        """Handle MO rows (inbox id, account id, encoded PDU, received at) and due partials."""
        now = time.time() if now is None else now
        self.limiter.discard()  # decisions of a batch that did not commit, if any
        out = MoOutcome()
        parts: list[_Part] = []
        bad: list[int] = []
        for inbox_id, account_id, raw, received_at in rows:
            try:
                parts.append(
                    _Part(inbox_id, account_id, codec.decode(raw), received_at.timestamp())
                )
            except RemoteProtocolError as error:  # not from our Inbox: keep nothing we cannot read
                log.error("sms_process.mo_undecodable", inbox_id=inbox_id, error=str(error))
                bad.append(inbox_id)
        complete = self._assemble(parts)
        complete.extend(self._expired(now))
        if bad:
            await inbox.delete(conn, bad)
        finished = {inbox_id for _, _, _, ids in complete for inbox_id in ids}
        held = [p.inbox_id for p in parts if p.inbox_id not in finished]
        if held:
            await inbox.hold(conn, held)
        out.held = len(held)
        await self._finish(conn, complete, out, now)
        return out

    @property
    def pending(self) -> int:
        """Long MOs waiting for parts."""
        return len(self._held)

    # --- reassembly ------------------------------------------------------------------

    def _assemble(self, parts: list[_Part]) -> list[tuple[_Part | None, str, int, list[int]]]:
        """Whole messages among `parts` (with held siblings): (first part, text, parts, ids)."""
        complete: list[tuple[_Part | None, str, int, list[int]]] = []
        for part in parts:
            pdu = part.pdu
            data = pdu.short_message if hasattr(pdu, "short_message") else b""
            if not data:
                payload = pdu.tlv(_TAG_MESSAGE_PAYLOAD)
                if isinstance(payload, bytes | str):
                    data = payload.encode("latin-1") if isinstance(payload, str) else payload
            udhi = bool(pdu.esm_class & EsmClass.UDHI)
            decoded = decode_short_message(data, pdu.data_coding, udhi=udhi)
            concat = _concat(pdu, decoded.udh.concat if decoded.udh else None)
            if concat is None:
                complete.append((part, decoded.text, 1, [part.inbox_id]))
                continue
            ref, total, seq = concat
            key = (part.account_id, pdu.source_addr, pdu.destination_addr)
            ident = (key, ref, total)
            try:
                text = self.reassembler.add(key, ref, total, seq, decoded.text, part.received_at)
            except BadSegment as error:
                log.warning("sms_process.mo_bad_segment", inbox_id=part.inbox_id, error=str(error))
                complete.append((part, decoded.text, 1, [part.inbox_id]))
                continue
            _, ids, first = self._held.setdefault(ident, (part.received_at, [], part))
            ids.append(part.inbox_id)
            if text is None:
                continue
            del self._held[ident]
            complete.append((first, text, total, ids))
        return complete

    def _expired(self, now: float) -> list[tuple[_Part | None, str, int, list[int]]]:
        """Messages still missing parts after the timeout: stored as they are."""
        expired: list[PartialMessage] = self.reassembler.expired(now)
        complete: list[tuple[_Part | None, str, int, list[int]]] = []
        for partial in expired:
            ident = (partial.key, partial.reference, partial.total)
            entry = self._held.pop(ident, None)
            if entry is None:
                continue
            _, ids, first = entry
            log.warning(
                "sms_process.mo_incomplete",
                account=self.names.get(first.account_id),
                source=obs.mask_number(first.pdu.source_addr),
                missing=list(partial.missing),
            )
            complete.append((first, partial.joined(), partial.total, ids))
        # held parts no partial stands for (late duplicates of finished messages): drop them
        deadline = now - self.timeout
        for ident in [i for i, (began, _, _) in self._held.items() if began <= deadline]:
            _, ids, _ = self._held.pop(ident)
            complete.append((None, "", 0, ids))
        return complete

    # --- storing and rules -----------------------------------------------------------

    async def _finish(
        self,
        conn: psycopg.AsyncConnection,
        complete: list[tuple[_Part | None, str, int, list[int]]],
        out: MoOutcome,
        now: float,
    ) -> None:
        done: list[int] = []
        stored: list[tuple[object, ...]] = []
        for part, text, parts, ids in complete:
            done.extend(ids)
            if part is None:  # a late duplicate part: nothing to store
                continue
            # PostgreSQL text cannot hold U+0000 (a Latin-1 or UCS-2 NUL octet from the
            # phone or the SMSC): store the replacement character rather than fail the batch
            text = text.replace("\x00", "\ufffd")
            account = self.accounts.get(part.account_id)
            pdu = part.pdu
            country = account.default_country if account is not None else ""
            source = address(pdu.source_addr_ton, pdu.source_addr, pdu.source_addr_npi, country)
            short_code = pdu.destination_addr
            scope = sender_key(
                short_code,
                ton=pdu.dest_addr_ton,
                npi=pdu.dest_addr_npi,
                default_country=country,
            )
            keyword = keyword_of(text)
            name = self.names.get(part.account_id, f"#{part.account_id}")
            out.messages.append((name, keyword))
            if account is None or account.channel.store_mo:
                stored.append(
                    (
                        part.account_id,
                        source[:21],
                        short_code[:21],
                        text,
                        pdu.data_coding,
                        max(parts, 1),
                        keyword[:64] or None,
                        datetime.fromtimestamp(part.received_at, UTC),
                    )
                )
            rule = match_rule(account.auto_replies, keyword, short_code) if account else None
            if rule is None:
                continue
            if rule.action is ReplyAction.BLACKLIST:
                await blacklist.add_by_keyword(conn, scope, source, keyword)
                out.blacklist_changes.append((name, "blacklist"))
            elif rule.action is ReplyAction.UNBLACKLIST:
                await blacklist.remove_by_keyword(conn, scope, source)
                out.blacklist_changes.append((name, "unblacklist"))
            allowed = rule.reply and self.limiter.allow(
                part.account_id, source, scope, now, f"{rule.keyword}|{rule.short_code}"
            )
            if allowed:
                out.replies.append(
                    Reply(
                        part.account_id,
                        pdu.destination_addr,
                        pdu.dest_addr_ton,
                        pdu.dest_addr_npi,
                        pdu.source_addr,
                        pdu.source_addr_ton,
                        pdu.source_addr_npi,
                        rule.reply,
                    )
                )
        if stored:
            async with conn.cursor() as cursor, cursor.copy(COPY_IN_SMS) as copy:
                for row in stored:
                    await copy.write_row(row)
            out.stored = len(stored)
        if done:
            await inbox.delete(conn, done)
