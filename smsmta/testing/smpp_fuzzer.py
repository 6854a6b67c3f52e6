"""Fuzzing a live SMPP session: mutated PDUs over real sockets, and what must come back.

What it does:

- The cases: `Mutator` and `expect` (smsmta.testing.smpp_mutations), mutated PDUs and
  what SMPP 3.4 says must come back for each.
- `FakeSmsc`: a raw asyncio SMPP server that binds our ESMEs (our client, the SMS
  process, the MTA) and answers what they send; `fuzz_esme` sends the cases on the live
  bound connection, re-waiting for the bind after each reset; `fuzz_smsc` does the same
  as a raw-socket ESME against an SMSC (our simulator).
- `Tally`: PDUs sent by mutation, answers by kind (generic_nack by status, *_resp by
  status, connection closes, no answer), mismatches and crashes; `table()` prints it.

Cases that may close the connection (framing lost, a valid unbind) are sent alone and
after every answer due so far has come back; the others go in batches, each followed by
an enquire_link probe whose answer says the peer has read the batch. Answers are matched
by sequence number (every case has its own). Touches: sockets on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from smsmta.smpp.aio import BindKind, BindSettings
from smsmta.smpp.codec import Framer, decode, encode
from smsmta.smpp.constants import RESPONSE_BIT, status_name
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import (
    BindTransceiver,
    EnquireLink,
    Pdu,
)
from smsmta.smpp.session import Timeouts
from smsmta.testing.smpp_mutations import (
    ANY_ERROR,
    BINDS,
    PROBE_BASE,
    C,
    Case,
    Expect,
    _with_header,
)

# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What was sent and what came back, for one target."""

    target: str
    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    closes: int = 0
    rebinds: int = 0
    crashes: int = 0

    def record(self, case: Case, got: list[Pdu], closed: bool) -> None:
        self.sent[case.mutation] += 1
        if closed:
            self.closes += 1
        if not got:
            self.answers["no answer" + (" (connection closed)" if closed else "")] += 1
        for pdu in got:
            kind = pdu.command_id.name
            if pdu.command_id == C.generic_nack or pdu.command_status:
                kind += f" {status_name(pdu.command_status)}"
            elif pdu.command_id & RESPONSE_BIT:
                kind += " ESME_ROK"
            self.answers[kind] += 1
        problem = _mismatch(case.expected, got, closed)
        if problem:
            self.mismatches.append(
                f"{case.mutation} seq={case.sequence_number}: expected {case.expected.describe()},"
                f" {problem}; frame {case.frame[:80].hex()}"
            )

    def table(self) -> str:
        lines = [f"== {self.target}: {sum(self.sent.values())} mutated PDUs sent"]
        lines += [f"   sent {name:<22} {n:>7}" for name, n in sorted(self.sent.items())]
        lines += [f"   got  {name:<48} {n:>7}" for name, n in sorted(self.answers.items())]
        lines.append(
            f"   connection closes {self.closes}, re-binds {self.rebinds},"
            f" crashes {self.crashes}, mismatches {len(self.mismatches)}"
        )
        lines += [f"   MISMATCH {m}" for m in self.mismatches[:20]]
        return "\n".join(lines)


def _mismatch(expected: Expect, got: list[Pdu], closed: bool) -> str | None:
    if expected.kind == "none":
        if got:
            return f"got {[repr(p) for p in got]}"
        return "connection closed" if closed else None
    if len(got) != 1:
        return f"got {len(got)} answers {[repr(p)[:120] for p in got]}"
    pdu = got[0]
    if pdu.command_id != expected.command_id:
        return f"got {pdu.command_id.name} {status_name(pdu.command_status)}"
    status = expected.status
    if status == ANY_ERROR and pdu.command_status == 0:
        return "got status ESME_ROK"
    if status not in (None, ANY_ERROR) and pdu.command_status != status:
        return f"got status {status_name(pdu.command_status)}"
    if expected.kind == "close" and not closed:
        return "the connection stayed open"
    if expected.kind == "answer" and closed:
        return "the connection was closed"
    return None


# --------------------------------------------------------------------------------------------
# The live connection both drivers use
# --------------------------------------------------------------------------------------------


class Link:
    """One connection's reading side: answers by sequence number, requests answered."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_request: Callable[[Link, Pdu], None],
    ) -> None:
        self.reader, self.writer = reader, writer
        self.on_request = on_request
        self.answers: dict[int, list[Pdu]] = {}
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.requests: list[Pdu] = []
        self.invalid: list[str] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        framer = Framer(0xFFFFFFFF)
        try:
            while data := await self.reader.read(65536):
                framer.feed(data)
                for frame in framer:
                    try:
                        pdu = decode(frame)
                    except RemoteProtocolError as error:  # our peers must send valid SMPP
                        self.invalid.append(f"{error}: {frame[:64].hex()}")
                        continue
                    if pdu.command_id & RESPONSE_BIT:
                        self.answers.setdefault(pdu.sequence_number, []).append(pdu)
                    else:
                        self.requests.append(pdu)
                        self.on_request(self, pdu)
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            self.changed.set()
            self.writer.close()

    def send(self, data: bytes) -> None:
        if not self.closed.is_set():
            self.writer.write(data)

    async def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until condition() or the connection closes; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not condition() and not self.closed.is_set():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    def abort(self) -> None:
        self.writer.transport.abort()


def has_answer(link: Link, sequence_number: int) -> bool:
    """Whether an answer to `sequence_number` came on `link`."""
    return sequence_number in link.answers


def _answer_esme_request(link: Link, pdu: Pdu) -> None:
    """The fake SMSC's side: bind OK, submit_sm accepted, enquire_link, unbind."""
    if pdu.command_id in BINDS:
        link.send(encode(pdu.make_resp(system_id="FUZZSMSC")))
    elif pdu.command_id == C.submit_sm:
        link.send(encode(pdu.make_resp(message_id=f"F{pdu.sequence_number}")))
    elif pdu.RESPONSE is not None:
        link.send(encode(pdu.make_resp()))


class FakeSmsc:
    """A raw SMPP server on 127.0.0.1 that binds ESMEs; `link` is the latest bound one."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: list[Link] = []
        self.all_links: list[Link] = []
        self.bound = asyncio.Event()
        self.submits = 0
        #: answer that many submit_sm with a malformed submit_sm_resp (their sequence numbers)
        self.bad_submit_resps = 0
        self.bad_resp_sequences: list[int] = []

    async def __aenter__(self) -> FakeSmsc:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for link in self.all_links:
            with contextlib.suppress(Exception):
                link.abort()
        tasks = [link.task for link in self.all_links]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def on_request(link: Link, pdu: Pdu) -> None:
            if pdu.command_id == C.submit_sm:
                self.submits += 1
                if self.bad_submit_resps > 0:  # a message_id without its NUL, over 65 octets
                    self.bad_submit_resps -= 1
                    bad = _with_header(b"9" * 70, C.submit_sm_resp, pdu.sequence_number)
                    self.bad_resp_sequences.append(pdu.sequence_number)
                    link.send(bad)
                    return
            _answer_esme_request(link, pdu)
            if pdu.command_id in BINDS:
                self.links.append(link)
                self.bound.set()

        link = Link(reader, writer, on_request)
        self.all_links.append(link)
        await link.task

    async def bound_link(self, timeout: float) -> Link:
        """The latest bound, open connection (waits for a re-bind after a reset)."""
        async with asyncio.timeout(timeout):
            while True:
                if self.links and not self.links[-1].closed.is_set():
                    return self.links[-1]
                self.bound.clear()
                await self.bound.wait()


# --------------------------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------------------------


async def _run(
    cases: list[Case],
    tally: Tally,
    get_link: Callable[[], Awaitable[Link]],
    *,
    batch: int = 40,
    timeout: float = 20.0,
) -> None:
    """Send `cases` on the link get_link() gives (re-asked after every close)."""
    probe = PROBE_BASE
    pending: list[tuple[Case, Link]] = []  # sent, answer not judged yet

    def answered(case: Case, link: Link) -> bool:
        return case.sequence_number in link.answers

    async def settle() -> None:
        """Judge every pending case once its due answer came (or its link closed)."""
        for case, link in pending:
            if case.expected.kind == "answer":
                await link.wait(functools.partial(answered, case, link), timeout)
            got = link.answers.pop(case.sequence_number, [])
            tally.record(case, got, closed=link.closed.is_set() and not got)
        pending.clear()

    i = 0
    while i < len(cases):
        try:
            link = await get_link()
        except (TimeoutError, OSError) as error:
            tally.mismatches.append(
                f"no bound connection after {i} of {len(cases)} cases ({error!r}):"
                f" the peer is gone; last cases {[c.mutation for c in cases[max(0, i - 5) : i]]}"
            )
            await settle()
            return
        if cases[i].expected.kind == "close":
            await settle()
            case = cases[i]
            i += 1
            link.send(case.frame)
            await link.wait(lambda: False, timeout)  # until the peer resets the link
            closed = link.closed.is_set()
            got = link.answers.pop(case.sequence_number, [])
            tally.record(case, got, closed)
            if closed:
                tally.rebinds += 1
            continue
        chunk: list[Case] = []
        while i < len(cases) and len(chunk) < batch and cases[i].expected.kind != "close":
            chunk.append(cases[i])
            i += 1
        probe += 1
        link.send(b"".join(c.frame for c in chunk) + encode(EnquireLink(sequence_number=probe)))
        ok = await link.wait(functools.partial(has_answer, link, probe), timeout)
        if not ok or link.closed.is_set():
            tally.mismatches.append(
                f"probe {probe} unanswered after {[c.mutation for c in chunk]}"
                f" (closed={link.closed.is_set()})"
            )
        link.answers.pop(probe, None)
        pending.extend((c, link) for c in chunk)
    await settle()


async def fuzz_esme(
    smsc: FakeSmsc, cases: list[Case], tally: Tally, *, timeout: float = 20.0
) -> None:
    """Send `cases` to whatever ESME is bound to `smsc`, waiting for re-binds."""

    async def get_link() -> Link:
        return await smsc.bound_link(timeout)

    await _run(cases, tally, get_link, timeout=timeout)


class EsmeLinks:
    """Raw-socket ESME connections to an SMSC: bind_transceiver, reconnect after a reset."""

    def __init__(self, host: str, port: int, system_id: str, password: str) -> None:
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password
        self.link: Link | None = None
        self.all_links: list[Link] = []
        self.connects = 0

    async def get(self, timeout: float = 20.0) -> Link:
        if self.link is not None and not self.link.closed.is_set():
            return self.link
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout
        )

        def on_request(link: Link, pdu: Pdu) -> None:
            if pdu.RESPONSE is not None:  # receipts of what we submitted: acknowledged
                link.send(encode(pdu.make_resp()))

        link = Link(reader, writer, on_request)
        self.all_links.append(link)
        link.send(
            encode(
                BindTransceiver(sequence_number=1, system_id=self.system_id, password=self.password)
            )
        )
        await link.wait(lambda: 1 in link.answers, timeout)
        [bind_resp] = link.answers.pop(1)
        if bind_resp.command_status:
            raise ConnectionError(f"bind refused: {status_name(bind_resp.command_status)}")
        self.connects += 1
        self.link = link
        return link

    def close(self) -> None:
        if self.link is not None:
            self.link.abort()
            self.link.task.cancel()


async def fuzz_smsc(links: EsmeLinks, cases: list[Case], tally: Tally) -> None:
    """Send `cases` to an SMSC as a bound transceiver, re-binding after each reset."""
    await _run(cases, tally, links.get)
    tally.rebinds = links.connects - 1


def receiver_settings(port: int) -> BindSettings:
    """Our SmppClient's receiver bind to a FakeSmsc on `port`, quick to reconnect."""
    return BindSettings(
        host="127.0.0.1",
        port=port,
        system_id="fuzz",
        password="secret",
        kind=BindKind.RECEIVER,
        reconnect_delay=0.05,
        timeouts=Timeouts(response=5, bind=5, enquire_link_period=30, unbind=1),
        name="fuzz-client",
    )
