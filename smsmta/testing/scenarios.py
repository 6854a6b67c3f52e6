"""The promise scenarios against the SMSC we did not write, for the tests and the benchmark.

`run_scenario(harness, node, scenario)` starts smsc.js (smsmta.testing.independent)
with the scenario's SMSC options, writes a mid settings file for one account on it,
starts the real `smsmta sms-process` and `smsmta mta` (smsmta.testing.harness), injects
the scenario's MOs (and waits for their opt-outs), enqueues `scenario.count` messages
straight into the queue (smsmta.queue.enqueue), drops every link once `drop_after`
submits were accepted when asked, waits until every message is final
(bounded), stops the services, and compares the SMSC's records with `mid.broad_log`:

- final: messages delivered or failed; lost: the others, plus messages the SMSC never
  accepted that are not blacklisted;
- duplicates: submits the SMSC accepted for a (destination, short_message) it had already
  accepted (auto-replies excluded);
- receipts matched: messages whose final status is the outcome the SMSC decided for the
  id it gave them (DELIVRD -> delivered; any other stat -> failed, with that stat and the
  err code, unique to the destination, in the failure reason); mismatched: the others
  among the messages the SMSC accepted: a receipt applied to another message shows here;
- opt-outs honoured: blacklisted destinations never submitted and failed 'blacklisted';
- binds: the most concurrent binds of the login the SMSC saw (a refused bind counts as
  one more than the bound ones at that moment), and the binds it refused;
- every part's registered_delivery when the scenario asks for it on every part.

`Result.line()` is the summary line the tests print and the benchmark tabulates.
Touches: what the harness touches (a database, subprocesses, sockets on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smsmta.queue.enqueue import DeliverySpec
from smsmta.settings import Account
from smsmta.testing.harness import ACCOUNT, Service, SmsHarness, sms_config
from smsmta.testing.independent import IndependentSmsc, independent_smsc

SYSTEM_ID = "smsmta"
SHORT_CODE = "38000"
REPLY = "Bye"  # the auto-reply text, told apart from the MTs by its bytes
FINAL = ("delivered", "failed")


@dataclass(frozen=True)
class Mo:
    source_addr: str
    ton: int
    text: str
    destination: str = SHORT_CODE


@dataclass(frozen=True)
class Scenario:
    name: str
    count: int = 200
    #: smsc.js options (see its header)
    smsc: dict[str, Any] = field(default_factory=dict)
    mode: str = "tx_rx"
    children: int = 1
    connections: int = 2
    window: int = 20
    max_binds: int = 0
    #: the account's `smsc` settings (id formats...)
    smsc_settings: dict[str, Any] = field(default_factory=dict)
    sms_process: dict[str, Any] = field(default_factory=dict)
    mta: dict[str, Any] = field(default_factory=dict)
    auto_replies: tuple[dict[str, str], ...] = ()
    mos: tuple[Mo, ...] = ()
    #: addresses as enqueued; None: "+3361NNNNNNN", one destination per message
    addresses: tuple[str, ...] | None = None
    #: of `addresses`, those the MOs opted out
    opted_out: tuple[str, ...] = ()
    text: Callable[[int], str] = lambda i: f"Independent message {i}"
    drop_after: int | None = None  # accepted submits before every link is cut
    duplicate_bound: int = 0
    registered_on_every_part: bool = False
    drain_timeout: float = 40.0
    #: the sending phase (first to last accepted submit) must take at most this long
    max_sending_seconds: float | None = None


@dataclass
class Result:
    scenario: str
    messages: int
    sent: int = 0
    final: int = 0
    lost: int = 0
    receipts_matched: int = 0
    mismatched: list[str] = field(default_factory=list)
    duplicates: int = 0
    duplicate_bound: int = 0
    opt_outs: int = 0
    opt_outs_honoured: int = 0
    opt_out_breaches: list[str] = field(default_factory=list)
    max_binds_seen: int = 0
    binds_refused: int = 0
    throttled: int = 0
    drops: int = 0
    parts: int = 0
    parts_without_receipt_request: int = 0
    replies: int = 0
    sending_seconds: float = 0.0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"independent SMSC | {self.scenario} | sent {self.sent}/{self.messages} | "
            f"receipts matched {self.receipts_matched} | duplicates {self.duplicates} "
            f"(bound {self.duplicate_bound}) | opt-outs honoured "
            f"{self.opt_outs_honoured}/{self.opt_outs} | final {self.final} lost {self.lost} | "
            f"binds max {self.max_binds_seen} refused {self.binds_refused} | throttled "
            f"{self.throttled} | {self.sending_seconds:.1f} s sending, {self.seconds:.1f} s"
        )


FAILING = {"fail_fraction": 0.3}  # 30% of destinations fail, each with its own err code
STOP_RULE = {"keyword": "STOP", "short_code": SHORT_CODE, "reply": REPLY, "action": "blacklist"}
HELLO_RULE = {"keyword": "HELLO", "short_code": "", "reply": REPLY, "action": "none"}

SCENARIOS = [
    Scenario("decimal_ids", count=200, smsc=FAILING),
    Scenario(
        "hex_submit_ids_decimal_text_ids",
        count=200,  # ids 1..200: from 10 on, hex and decimal differ; "26" is another's id
        smsc={**FAILING, "resp_id_format": "hex", "text_id_format": "decimal"},
    ),
    Scenario("tlv_only_ids", count=200, smsc={**FAILING, "text_id_format": "none"}),
    Scenario(
        "throttling",
        count=300,
        smsc={"throttle_window": 10, "resp_delay_ms": 20},
        connections=1,
        window=50,
        mta={"throttle_backoff": 0.2},
        max_sending_seconds=8.0,  # 300 at the SMSC's 10 per 20 ms would take 0.6 s
    ),
    Scenario(
        "dropped_links",
        count=400,
        smsc={**FAILING, "resp_delay_ms": 10},
        connections=2,
        window=10,
        drop_after=120,
        duplicate_bound=10 * 2,  # window x binds
        mta={"throttle_backoff": 0.2},
        sms_process={"receipt_match_wait": 10},
    ),
    Scenario(
        "one_bind_trx_with_auto_replies",
        count=200,
        smsc={**FAILING, "max_binds": 1},
        mode="trx",
        connections=1,
        max_binds=1,
        auto_replies=(HELLO_RULE,),
        mos=(Mo("+33699999999", 1, "hello"),),
    ),
    Scenario(
        "two_binds_tx_rx",
        count=200,
        smsc={**FAILING, "max_binds": 2},
        children=2,  # 2 children x 1 transmitter + 1 receiver would be 3
        connections=1,
        max_binds=2,
    ),
    Scenario(
        "mo_stop",
        smsc=FAILING,
        auto_replies=(STOP_RULE,),
        mos=(Mo("33600000001", 1, "STOP"), Mo("33600000021", 0, "Stop")),
        addresses=("33600000001", "+33600000021", *(f"+3360000{i:04d}" for i in range(100, 140))),
        opted_out=("33600000001", "+33600000021"),
        count=42,
    ),
    Scenario(
        "multipart_all_parts",
        count=100,
        smsc=FAILING,
        sms_process={"multipart_status": "all_parts"},
        text=lambda i: f"Long message {i:04d} " + "x" * 280,  # 2 parts of GSM7
        registered_on_every_part=True,
    ),
]


def scaled(scenario: Scenario, factor: float) -> Scenario:
    """The scenario with `factor` times its messages (the benchmark's larger runs)."""
    if factor == 1:
        return scenario
    count = max(1, round(scenario.count * factor))
    changes: dict[str, Any] = {"count": count, "drain_timeout": scenario.drain_timeout * factor}
    if scenario.addresses is not None:
        others = count - len(scenario.opted_out)
        changes["addresses"] = (
            *scenario.opted_out, *(f"+3360001{i:04d}" for i in range(max(0, others)))
        )  # fmt: skip
        changes["count"] = len(changes["addresses"])
    if scenario.drop_after is not None:
        changes["drop_after"] = round(scenario.drop_after * factor)
    if scenario.max_sending_seconds is not None:
        changes["max_sending_seconds"] = scenario.max_sending_seconds * factor
    return replace(scenario, **changes)


def digits(address: str) -> str:
    return re.sub(r"\D", "", address)


def settings_text(port: int, scenario: Scenario) -> str:
    """The mid settings of one scenario: one account on smsc.js (JSON is YAML too)."""
    config = json.loads(
        sms_config(
            port,
            connections=scenario.connections,
            window=scenario.window,
            smsc=scenario.smsc_settings,
            auto_replies=list(scenario.auto_replies),
            sms_process={"receipt_match_wait": 5, **scenario.sms_process},
            mta={"children": scenario.children, "retry_period": 1, **scenario.mta},
        )
    )
    account = config["accounts"][0]
    account["connection"].update(mode=scenario.mode, smsc_name="Indep", system_id=SYSTEM_ID)
    account["channel"]["short_code"] = SHORT_CODE
    account["throughput"].update(max_binds=scenario.max_binds, enquire_link_period=5)
    if "default_country" in Account.model_fields:
        account["default_country"] = "FR"
    return json.dumps(config, indent=2)


async def _wait(
    condition: Callable[[], Any], timeout: float, what: str, services: list[Service]
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for service in services:
            if service.process.returncode is not None:
                raise AssertionError(
                    f"{service.log_path.name} exited ({service.process.returncode}) "
                    f"while waiting for {what}:\n{service.log()[-3000:]}"
                )
        if await condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def run_scenario(
    harness: SmsHarness, node: str, scenario: Scenario, directory: Path | None = None
) -> Result:
    """Run one scenario end to end; see the module docstring."""
    directory = directory or harness.tmp_path
    result = Result(scenario.name, scenario.count, duplicate_bound=scenario.duplicate_bound)
    async with independent_smsc(node, directory, f"smsc-{scenario.name}", **scenario.smsc) as smsc:
        path, config = harness.write_config(
            settings_text(smsc.smpp_port, scenario), f"{scenario.name}.yaml"
        )
        services: list[Service] = [await harness.start_sms_process(path)]
        started = time.monotonic()
        try:
            mta = await harness.start_mta(path)
            services.append(mta)  # type: ignore[arg-type]
            for mo in scenario.mos:
                await smsc.mo(
                    mo.source_addr, mo.destination, mo.text, system_id=SYSTEM_ID,
                    source_addr_ton=mo.ton,
                )  # fmt: skip

            async def opted_out() -> bool:
                rows = await harness.query("SELECT count(*) FROM mid.short_code_blacklist")
                return rows[0][0] >= len(scenario.opted_out)

            if scenario.opted_out and not await _wait(opted_out, 20, "the opt-outs", services):
                raise AssertionError("the STOP MOs did not blacklist within 20 s")
            addresses = scenario.addresses or tuple(f"+3361{i:07d}" for i in range(scenario.count))
            await harness.enqueue(
                config,
                len(addresses),
                text=scenario.text,
                spec=DeliverySpec(marketing_delivery_id=scenario.name, source_addr=SHORT_CODE),
                address=lambda i: addresses[i],
            )
            if scenario.drop_after is not None:

                async def accepted_enough() -> bool:
                    stats = await smsc.stats()
                    return stats["counters"]["accepted"] >= scenario.drop_after

                if not await _wait(accepted_enough, 30, "submits before the drop", services):
                    raise AssertionError(f"fewer than {scenario.drop_after} submits in 30 s")
                await smsc.drop()

            async def all_final() -> bool:
                rows = await harness.query(
                    "SELECT count(*) FROM mid.broad_log WHERE status::text = ANY(%s)",
                    list(FINAL),
                )
                return rows[0][0] >= len(addresses)

            await _wait(all_final, scenario.drain_timeout, "every message final", services)
            result.seconds = time.monotonic() - started
            stats = await smsc.stats()
        finally:
            for service in reversed(services):
                if service.process.returncode is None:
                    with contextlib.suppress(TimeoutError):  # the fixture kills it then
                        await service.stop(30)
    await asyncio.sleep(0)
    await compare(harness, smsc, scenario, addresses, stats, result)
    return result


def _reply_hex() -> str:
    return REPLY.encode("ascii").hex()


async def compare(
    harness: SmsHarness,
    smsc: IndependentSmsc,
    scenario: Scenario,
    addresses: tuple[str, ...],
    stats: dict[str, Any],
    result: Result,
) -> None:
    """Fill `result` from the SMSC's records and `mid.broad_log` (see the module docstring)."""
    submits = smsc.records("submit")
    replies = [s for s in submits if s["short_message_hex"] == _reply_hex()]
    mts = [s for s in submits if s["short_message_hex"] != _reply_hex()]
    accepted = [s for s in mts if s["status"] == 0]
    result.replies = len(replies)
    result.throttled = sum(1 for s in mts if s["status"] == 0x58)
    result.parts = len(accepted)
    result.parts_without_receipt_request = sum(
        1 for s in accepted if s["registered_delivery"] & 0x03 == 0
    )
    if accepted:
        stamps = [s["t"] for s in accepted]
        result.sending_seconds = max(stamps) - min(stamps)
    copies = Counter((s["destination_addr"], s["short_message_hex"]) for s in accepted)
    result.duplicates = sum(n - 1 for n in copies.values())
    outcome: dict[str, tuple[str, str]] = {}
    for s in accepted:
        outcome[s["destination_addr"]] = (s["outcome"], s["err"])
    rows = await harness.query(
        "SELECT address, status::text, coalesce(failure_reason, '') FROM mid.broad_log "
        "WHERE delivery_id = (SELECT id FROM mid.delivery WHERE marketing_delivery_id = %s)",
        scenario.name,
    )
    result.statuses = dict(Counter(status for _, status, _ in rows))
    result.final = sum(1 for _, status, _ in rows if status in FINAL)
    result.lost = len(addresses) - result.final
    opted = {digits(a) for a in scenario.opted_out}
    result.opt_outs = len(opted)
    submitted = {s["destination_addr"] for s in mts}
    by_destination = {digits(address): (status, reason) for address, status, reason in rows}
    for address in addresses:
        key = digits(address)
        status, reason = by_destination.get(key, ("missing", ""))
        if key in opted:
            if key not in submitted and status == "failed" and "blacklist" in reason:
                result.opt_outs_honoured += 1
            else:
                result.opt_out_breaches.append(f"{address}: {status} {reason!r}")
            continue
        if key not in outcome:
            if status not in FINAL:
                continue  # counted in lost
            result.mismatched.append(f"{address}: {status} {reason!r} never accepted")
            continue
        result.sent += 1
        stat, err = outcome[key]
        if stat == "DELIVRD":
            matched = status == "delivered"
        else:
            matched = status == "failed" and f"{stat} {err}" in reason
        if matched:
            result.receipts_matched += 1
        elif status in FINAL:
            result.mismatched.append(f"{address}: SMSC {stat} {err}, ours {status} {reason!r}")
    for entry in stats["binds"].values():
        result.binds_refused += entry["refused"]
    bind_events = smsc.records("bind")
    result.max_binds_seen = max(
        [e["concurrent"] + (0 if e["status"] == 0 else 1) for e in bind_events if e["status"]
         in (0, 0x0D, 0x05)] or [0]
    )  # fmt: skip
    result.drops = stats["counters"]["drops"]


def assert_promises(result: Result, scenario: Scenario) -> None:
    """The three promises (and the scenario's own) from the SMSC's records."""
    problems = []
    if not result.sent:
        problems.append("the SMSC accepted no message")
    replying = scenario.mos and scenario.auto_replies and not scenario.opted_out
    if replying and result.replies < len(scenario.mos):
        problems.append(f"{result.replies} auto-replies for {len(scenario.mos)} MOs")
    if scenario.drop_after is not None and result.drops != 1:
        problems.append("the links were not dropped")
    if result.lost:
        problems.append(f"{result.lost} messages not final: {result.statuses}")
    if result.mismatched:
        problems.append(
            f"{len(result.mismatched)} final statuses differ from the SMSC's outcome "
            f"(receipts applied to other messages?), e.g. {result.mismatched[:3]}"
        )
    if result.duplicates > scenario.duplicate_bound:
        problems.append(f"{result.duplicates} duplicates > bound {scenario.duplicate_bound}")
    if result.opt_out_breaches:
        problems.append(f"opt-outs not honoured: {result.opt_out_breaches}")
    if scenario.max_binds and result.max_binds_seen > scenario.max_binds:
        problems.append(
            f"the SMSC saw {result.max_binds_seen} concurrent binds of {SYSTEM_ID} "
            f"(max_binds {scenario.max_binds}, {result.binds_refused} refused)"
        )
    if scenario.registered_on_every_part and result.parts_without_receipt_request:
        problems.append(
            f"{result.parts_without_receipt_request} of {result.parts} parts without "
            "registered_delivery"
        )
    if scenario.max_sending_seconds is not None and (
        result.sending_seconds > scenario.max_sending_seconds
    ):
        problems.append(
            f"sending took {result.sending_seconds:.1f} s > {scenario.max_sending_seconds} s "
            f"({result.throttled} throttled)"
        )
    assert not problems, f"{result.line()}\n" + "\n".join(problems)


__all__ = [
    "ACCOUNT", "SCENARIOS", "Mo", "Result", "Scenario", "assert_promises", "run_scenario", "scaled",
]  # fmt: skip
