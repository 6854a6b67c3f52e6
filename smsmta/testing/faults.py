"""The faults of issue 9 and the run of one of them on a `FaultStack` (smsmta.testing.fault_stack).

`run_fault(stack, fault, sizes)` puts one delivery of `sizes.messages` messages, each
to a destination of its own, on the queue (directly, or through the marketing service
for the faults of the midsourcing link), waits for the load to be steady, injects the
fault, clears it after `sizes.duration` seconds, waits for every message to reach a
final status, and returns a `FaultRow` (lost, duplicates, bound, recovery, MT/s before,
during and after: see smsmta.testing.fault_stack). `FAULTS` names every fault with its
injection and its clearing; `format_table` and `conditions` print a run.

Touches: what the `FaultStack` runs (services, the PostgreSQL, the simulator, the proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psutil
import psycopg

from midsourcing.marketing import create_delivery as create_marketing_delivery
from smsmta.queue.enqueue import DeliverySpec
from smsmta.simulator import Smsc
from smsmta.testing.fault_stack import (
    FINAL,
    MARKETING_FINAL,
    FaultStack,
    Sizes,
    try_query,
    wait_for,
)

# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


Action = Callable[[FaultStack], Awaitable[None]]


async def _nothing(stack: FaultStack) -> None:
    return None


@dataclass(frozen=True)
class Fault:
    """One fault: how to inject it, how to clear it, and what it may cost."""

    name: str
    inject: Action
    clear: Action = _nothing
    #: "mid": messages put on the mid queue directly; "marketing": pushed by the marketing
    #: service (the faults of the midsourcing link).
    load: str = "mid"
    #: Children whose in-flight responses the fault may lose, as a share: "all" or "one";
    #: "none" where no response can be lost (then duplicates must be 0).
    loses_responses: str = "all"
    #: Times each affected bind may lose its window.
    windows_lost: int = 1
    #: The fault lasts at least this long (seconds), whatever Sizes.duration says.
    min_duration: float = 0.0
    #: When to inject, instead of after Sizes.warmup of load (see `run_fault`).
    trigger: str = "warm"
    #: "mt": recovery is the MT rate's; "final": off the MT path, it is the time to the
    #: first message made final after the fault (receipts reconciled, statuses pulled).
    recovery_by: str = "mt"
    #: Services allowed to exit with an error during this fault: started again as
    #: systemd's Restart=on-failure would, and named in the row (a product bug to fix).
    may_exit: tuple[str, ...] = ()

    def bound(self, sizes: Sizes) -> int:
        children = {"all": sizes.children, "one": 1, "none": 0}[self.loses_responses]
        return sizes.window * sizes.connections * children * self.windows_lost

    def duration(self, sizes: Sizes) -> float:
        return max(sizes.duration, self.min_duration)


async def kill_child(stack: FaultStack) -> None:
    assert stack.mta is not None
    children = stack.mta.children()
    assert children, "the MTA has no child to kill"
    children[0].kill()


async def kill_supervisor(stack: FaultStack) -> None:
    assert stack.mta is not None
    os.kill(stack.mta.pid, signal.SIGKILL)  # the supervisor alone, not its process group
    await stack.mta.process.wait()


async def restart_mta(stack: FaultStack) -> None:
    await stack.start_mta()


async def kill_sms_process(stack: FaultStack) -> None:
    assert stack.sms_process is not None
    stack.sms_process.kill()
    await stack.sms_process.process.wait()


async def restart_sms_process(stack: FaultStack) -> None:
    await stack.start_sms_process()


async def kill_mid_server(stack: FaultStack) -> None:
    assert stack.mid_server is not None
    stack.mid_server.kill()
    await stack.mid_server.process.wait()


async def restart_mid_server(stack: FaultStack) -> None:
    await stack.start_mid_server()


async def kill_marketing(stack: FaultStack) -> None:
    assert stack.marketing is not None
    stack.marketing.kill()
    await stack.marketing.process.wait()


async def restart_marketing(stack: FaultStack) -> None:
    await stack.start_marketing()


async def stop_postgres(stack: FaultStack) -> None:
    await asyncio.to_thread(stack.postgres.stop_server)


async def start_postgres(stack: FaultStack) -> None:
    await asyncio.to_thread(stack.postgres.start_server)


async def drop_links(stack: FaultStack) -> None:
    stack.smsc.drop_links()


async def answer_nothing(stack: FaultStack) -> None:
    stack.smsc.update_config(answer_nothing=True)


async def answer_again(stack: FaultStack) -> None:
    stack.smsc.update_config(answer_nothing=False)


async def throttle(stack: FaultStack) -> None:
    stack.smsc.update_config(max_tps=max(1, stack.sizes.rate // 4))


async def unthrottle(stack: FaultStack) -> None:
    stack.smsc.update_config(max_tps=0)


async def malformed_pdus(stack: FaultStack) -> None:
    for kind in ("unknown_command", "truncated"):  # well framed: answered, the link lives
        stack.smsc.inject_garbage(kind)


async def garbage_bytes(stack: FaultStack) -> None:
    stack.smsc.inject_garbage("random", ("tx",))  # framing lost: each link is reset
    stack.smsc.inject_garbage("bad_length", ("rx",))


async def slow_smsc(stack: FaultStack) -> None:
    stack.smsc.update_config(resp_delay_ms=2000)


async def fast_smsc(stack: FaultStack) -> None:
    stack.smsc.update_config(resp_delay_ms=0)


async def cut_network(stack: FaultStack) -> None:
    stack.proxy.cut()


async def restore_network(stack: FaultStack) -> None:
    stack.proxy.resume()


async def reset_network(stack: FaultStack) -> None:
    stack.proxy.reset()


FAULTS: dict[str, Fault] = {
    fault.name: fault
    for fault in (
        Fault("mta_child_sigkill", kill_child, loses_responses="one"),
        Fault("mta_supervisor_sigkill", kill_supervisor, restart_mta),
        Fault(
            "sms_process_sigkill",
            kill_sms_process,
            restart_sms_process,
            loses_responses="none",
            recovery_by="final",
        ),
        Fault(
            "mid_server_sigkill_mid_push",
            kill_mid_server,
            restart_mid_server,
            load="marketing",
            loses_responses="none",
            trigger="mid_push",
        ),
        Fault(
            "marketing_sigkill_mid_pull",
            kill_marketing,
            restart_marketing,
            load="marketing",
            loses_responses="none",
            trigger="mid_pull",
            recovery_by="final",
        ),
        # Every service rides through: the SMS process takes its advisory lock again
        # (sms_process/lock.py, InstanceLock.watch), none may exit.
        Fault("postgres_restart", stop_postgres, start_postgres),
        Fault("smsc_drops_every_link", drop_links),
        Fault("smsc_answers_nothing", answer_nothing, answer_again),
        Fault("smsc_throttles", throttle, unthrottle, loses_responses="none"),
        Fault("smsc_malformed_pdus", malformed_pdus, loses_responses="none"),
        Fault("smsc_garbage_bytes", garbage_bytes),
        Fault("smsc_slow_2s", slow_smsc, fast_smsc, loses_responses="none", min_duration=2.5),
        # Longer than mt_timeout + 2 x enquire_link_period, so that the dead links are
        # noticed and given up during the cut (see the module docstring).
        Fault("network_cut_no_fin", cut_network, restore_network, min_duration=5),
        Fault("network_reset", reset_network),
    )
}


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    messages: int
    lost: int
    duplicates: int
    bound: int
    recovery: float | None
    before: float
    during: float
    after: float
    failed: int = 0
    detail: str = ""
    statuses: dict[str, int] = field(default_factory=dict)


class RateSampler:
    """The simulator's accepted submits, sampled every `period` seconds."""

    def __init__(self, smsc: Smsc, period: float = 0.1) -> None:
        self.smsc = smsc
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.samples.append((loop.time(), self.smsc.counters.accepted))
            await asyncio.sleep(self.period)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.samples.append((asyncio.get_running_loop().time(), self.smsc.counters.accepted))

    def count_at(self, moment: float) -> int:
        best = self.samples[0][1]
        for stamp, count in self.samples:
            if stamp > moment:
                break
            best = count
        return best

    def rate(self, start: float, end: float) -> float:
        if end - start <= 0:
            return 0.0
        return (self.count_at(end) - self.count_at(start)) / (end - start)

    def first_increase_after(self, moment: float) -> float | None:
        previous = self.count_at(moment)
        for stamp, count in self.samples:
            if stamp > moment and count > previous:
                return stamp
        return None

    def last_increase(self) -> float:
        last = self.samples[0][0]
        for (_, before), (stamp, count) in zip(self.samples, self.samples[1:], strict=False):
            if count > before:
                last = stamp
        return last


async def _enqueue_mid(stack: FaultStack, index: int, count: int) -> list[int]:
    delivery_id = await stack.harness.enqueue(
        stack.mid_config,
        count,
        text=lambda i: f"Fault {index} message {i}",
        spec=DeliverySpec(marketing_delivery_id=f"fault-{index}"),
        address=lambda i: f"+336{index:02d}{i:06d}",  # E.164: +33 and 9 digits
    )
    return [delivery_id]


async def _create_marketing(stack: FaultStack, index: int, count: int) -> int:
    csv_path = stack.harness.tmp_path / f"fault-{index}.csv"
    lines = ["mobile,first_name"] + [f"+336{index:02d}{i:06d},N{i}" for i in range(count)]
    csv_path.write_text("\n".join(lines) + "\n")
    async with await psycopg.AsyncConnection.connect(stack.harness.dsn, autocommit=True) as conn:
        created = await create_marketing_delivery(
            conn, stack.marketing_config, "promo", csv_path, f"Fault {index} for {{first_name}}"
        )
    return created.delivery_id


async def run_fault(stack: FaultStack, fault: Fault, sizes: Sizes | None = None) -> FaultRow:
    """Run `fault` once under load; see the module docstring for what is measured."""
    sizes = sizes or stack.sizes
    stack.runs += 1
    index = stack.runs
    loop = asyncio.get_running_loop()
    count = sizes.messages
    duplicates_before = stack.smsc.counters.duplicates
    sampler = RateSampler(stack.smsc)
    sampler.start()
    marketing_id: int | None = None
    try:
        if fault.load == "marketing":
            marketing_id = await _create_marketing(stack, index, count)
        else:
            await _enqueue_mid(stack, index, count)
        queued_sql = (
            "SELECT count(*) FROM mid.broad_log b JOIN mid.delivery d ON d.id = b.delivery_id "
            "WHERE d.marketing_delivery_id = %s"
        )
        key = str(marketing_id) if marketing_id is not None else f"fault-{index}"

        async def first_submit() -> bool:
            return stack.smsc.counters.accepted > sampler.samples[0][1]

        detail = ""
        if fault.trigger == "mid_push":

            async def pushing() -> bool:
                rows = await stack.harness.query(queued_sql, key)
                return rows[0][0] > 0

            await wait_for(pushing, 30, "the push to start", stack)
            queued = (await stack.harness.query(queued_sql, key))[0][0]
            detail = f"killed with {queued}/{count} queued"
        elif fault.trigger == "mid_pull":

            async def pulling() -> bool:
                rows = await stack.harness.query(
                    "SELECT count(*) FROM marketing.delivery_message WHERE delivery_id = %s "
                    "AND status::text <> 'to_send'",
                    marketing_id,
                )
                return rows[0][0] > 0

            await wait_for(pulling, 60, "the first statuses pulled", stack)
            pulled = (
                await stack.harness.query(
                    "SELECT count(*) FROM marketing.delivery_message WHERE delivery_id = %s "
                    "AND status::text = ANY(%s)",
                    marketing_id,
                    list(MARKETING_FINAL),
                )
            )[0][0]
            detail = f"killed with {pulled}/{count} final in marketing"
        else:
            await wait_for(first_submit, 60, "the first submit", stack)
            await asyncio.sleep(sizes.warmup)
        load_start = sampler.first_increase_after(sampler.samples[0][0] - 1) or loop.time()
        injected = loop.time()
        await fault.inject(stack)
        await asyncio.sleep(fault.duration(sizes))
        await fault.clear(stack)
        cleared = loop.time()
        progress: dict[str, float] = {}

        async def drained() -> bool:
            final_sql = (
                "SELECT count(*) FROM marketing.delivery_message WHERE delivery_id = %s "
                "AND status::text = ANY(%s)"
            )
            if fault.recovery_by == "final" and "at" not in progress:
                if marketing_id is not None:
                    counted = await try_query(stack, final_sql, marketing_id, list(MARKETING_FINAL))
                else:
                    counted = await try_query(
                        stack,
                        "SELECT count(*) FROM mid.broad_log b JOIN mid.delivery d "
                        "ON d.id = b.delivery_id WHERE d.marketing_delivery_id = %s "
                        "AND b.status::text = ANY(%s)",
                        key,
                        list(FINAL),
                    )
                if counted is not None:
                    final = counted[0][0]
                    if "baseline" not in progress and final < count:
                        progress["baseline"] = final
                    elif final == count or final > progress["baseline"]:
                        # all final at the first look (the load finished while the
                        # service was down and it caught up at once) is a recovery too
                        progress["at"] = loop.time() - cleared
            rows = await try_query(
                stack,
                "SELECT count(*) FILTER (WHERE b.status::text = ANY(%s)) FROM mid.broad_log b "
                "JOIN mid.delivery d ON d.id = b.delivery_id WHERE d.marketing_delivery_id = %s",
                list(FINAL),
                key,
            )
            if rows is None or rows[0][0] < count:
                return False
            if marketing_id is not None:
                rows = await try_query(stack, final_sql, marketing_id, list(MARKETING_FINAL))
                if rows is None or rows[0][0] < count:
                    return False
            # everything final (the count above may have been taken just before the last)
            progress.setdefault("at", loop.time() - cleared)
            return True

        exits_before = len(stack.exits)
        with contextlib.suppress(AssertionError):
            await wait_for(
                drained, sizes.drain_timeout, "every message final", stack, fault.may_exit
            )
        await stack.check_alive(fault.may_exit)
        if len(stack.exits) > exits_before:
            detail = ", ".join([*filter(None, [detail]), *stack.exits[exits_before:]])
    finally:
        await sampler.stop()
    rows = await stack.harness.query(
        "SELECT b.status::text, count(*) FROM mid.broad_log b JOIN mid.delivery d "
        "ON d.id = b.delivery_id WHERE d.marketing_delivery_id = %s GROUP BY 1",
        key,
    )
    statuses = dict(rows)
    final = sum(statuses.get(s, 0) for s in FINAL)
    lost = count - final
    if marketing_id is not None:
        [(marketing_final,)] = await stack.harness.query(
            "SELECT count(*) FROM marketing.delivery_message WHERE delivery_id = %s "
            "AND status::text = ANY(%s)",
            marketing_id,
            list(MARKETING_FINAL),
        )
        lost = max(lost, count - marketing_final)
    before = sampler.rate(load_start + 0.2, injected)
    during = sampler.rate(injected, cleared)
    end = sampler.last_increase()
    if fault.recovery_by == "final":
        recovery = progress.get("at")
    else:
        recovery = _recovery(sampler, cleared, end, before)
    after_start = cleared + (recovery or 0.0)
    after = sampler.rate(after_start, end) if end - after_start >= 0.3 else 0.0
    return FaultRow(
        fault=fault.name,
        messages=count,
        lost=lost,
        duplicates=stack.smsc.counters.duplicates - duplicates_before,
        bound=fault.bound(sizes),
        recovery=recovery,
        before=before,
        during=during,
        after=after,
        failed=statuses.get("failed", 0),
        detail=detail,
        statuses=statuses,
    )


def _recovery(sampler: RateSampler, cleared: float, end: float, before: float) -> float | None:
    """Seconds from `cleared` to the first 0.5 s span at >= 80% of `before` (see above)."""
    span = 0.5
    target = 0.8 * before
    for stamp, _ in sampler.samples:
        if stamp < cleared:
            continue
        if stamp + span > end:
            break
        if before > 0 and sampler.rate(stamp, stamp + span) >= target:
            return max(0.0, stamp - cleared)
    first = sampler.first_increase_after(cleared)
    return None if first is None else max(0.0, first - cleared - sampler.period)


def format_table(rows: list[FaultRow]) -> str:
    header = (
        f"{'fault':<30} {'messages':>8} {'lost':>5} {'dups':>5} {'bound':>6} {'failed':>6} "
        f"{'recovery s':>10} {'MT/s before':>11} {'during':>7} {'after':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        recovery = "-" if row.recovery is None else f"{row.recovery:.1f}"
        lines.append(
            f"{row.fault:<30} {row.messages:>8} {row.lost:>5} {row.duplicates:>5} "
            f"{row.bound:>6} {row.failed:>6} {recovery:>10} {row.before:>11.0f} "
            f"{row.during:>7.0f} {row.after:>7.0f}" + (f"  ({row.detail})" if row.detail else "")
        )
    return "\n".join(lines)


def conditions(sizes: Sizes) -> str:
    load1, load5, _ = os.getloadavg()
    return (
        f"machine: {psutil.cpu_count()} cores, load average {load1:.2f} / {load5:.2f}; "
        f"per fault: {sizes.messages} messages at a cap of {sizes.rate} MT/s, fault after "
        f"{sizes.warmup} s of load, lasting {sizes.duration} s (some faults longer); "
        f"{sizes.children} MTA children x {sizes.connections} binds, window {sizes.window}, "
        f"mt_timeout {sizes.mt_timeout} s, enquire_link {sizes.enquire_link_period} s; "
        "simulator and proxy in this process, PostgreSQL embedded (pgserver)"
    )
