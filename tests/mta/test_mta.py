"""The MTA end to end: real child processes, real PostgreSQL, the simulator over TCP."""

from __future__ import annotations

import gc
import socket
import urllib.request
from collections.abc import Awaitable, Callable

import pytest

from smsmta.queue.enqueue import DeliverySpec
from smsmta.simulator import Smsc
from tests.mta.conftest import Harness, free_port, mid_config

pytestmark = pytest.mark.timeout(240)


async def test_ten_thousand_messages_are_sent_exactly_once(harness: Harness, smsc: Smsc) -> None:
    path, config = harness.write_config(mid_config(smsc.port, children=2, connections=2))
    count = 10_000
    delivery_id = await harness.enqueue(config, count)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # what systemd would read
    notify.bind(str(harness.tmp_path / "notify.sock"))
    notify.setblocking(False)
    mta = await harness.start_mta(path, NOTIFY_SOCKET=str(harness.tmp_path / "notify.sock"))

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 120, "every message sent", mta)
    assert await mta.stop() == 0, mta.log()[-3000:]

    assert smsc.counters.accepted == count
    assert smsc.counters.duplicates == 0
    [(rows, distinct_ids, distinct_messages)] = await harness.query(
        "SELECT count(*), count(DISTINCT provider_id), count(DISTINCT broad_log_id) "
        "FROM mid.provider_msg_id"
    )
    assert rows == distinct_ids == distinct_messages == count
    [(sent, to_send)] = await harness.query(
        "SELECT sent, to_send FROM mid.delivery WHERE id = %s", delivery_id
    )
    assert sent == to_send == count
    # both children took part, each with its two binds
    assert smsc.counters.binds_total >= 4
    [(owners,)] = await harness.query("SELECT count(*) FROM mid.mta_lease")
    assert owners == 0  # each child dropped its lease on the way out
    assert notify.recv(4096).startswith(b"READY=1\nSTATUS=2 children")
    assert notify.recv(4096) == b"STOPPING=1"
    notify.close()


def max_in_any_second(times: list[float]) -> int:
    """The most submits within any half-open one-second span (t - 1, t]."""
    times = sorted(times)
    best, start = 0, 0
    for end, stamp in enumerate(times):
        while times[start] + 1.0 <= stamp:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_rate_cap_holds_across_two_children(harness: Harness, smsc: Smsc) -> None:
    cap = 200
    path, config = harness.write_config(
        mid_config(smsc.port, children=2, connections=2, window=20, rate=cap)
    )
    times: list[float] = []
    smsc.on_submit = lambda pdu, now, status: times.append(now)
    count = 2_600
    await harness.enqueue(config, count)
    # The arrival times are read in this process: a garbage-collection pause here would
    # stamp a backlog of arrivals at once, a stall of the receiver, not a burst of senders.
    gc.disable()
    try:
        mta = await harness.start_mta(path)

        async def all_sent() -> bool:
            return (await harness.statuses()).get("sent", 0) == count

        await harness.wait_until(all_sent, 60, "every message sent", mta)
    finally:
        gc.enable()
    assert await mta.stop() == 0
    assert len(times) == count
    assert max_in_any_second(times) <= cap
    # over ten seconds of steady sending, at least 95% of the cap
    times.sort()
    best_ten = max(
        sum(1 for t in times if start <= t < start + 10.0) for start in times[: count // 3]
    )
    assert best_ten >= 0.95 * cap * 10, best_ten


async def test_throttling_smsc_triggers_aimd_and_everything_goes_out(
    harness: Harness, smsc: Smsc
) -> None:
    smsc.update_config(max_tps=150)
    port = free_port()
    path, config = harness.write_config(
        mid_config(smsc.port, children=1, connections=2, window=20, metrics_port=port)
    )
    count = 1_500
    await harness.enqueue(config, count)
    mta = await harness.start_mta(path)

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 90, "every message sent", mta)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    assert await mta.stop() == 0
    assert smsc.counters.throttled_tps > 0
    assert smsc.counters.accepted == count and smsc.counters.duplicates == 0
    decreases = metric_value(metrics.decode(), "smsmta_aimd_decreases_total")
    assert decreases >= 1
    assert '"mta.aimd_decrease"' in mta.log()


async def test_throttling_by_a_smaller_smsc_window_shrinks_the_window_not_the_rate(
    harness: Harness, smsc: Smsc
) -> None:
    """Our window 50 against an SMSC that holds at most 10 submits of a bind: the throttling
    answers come from the window, so the window shrinks to 10 and the rate is left alone
    (halving the rate took 21 s for 2,000 messages where 5.5 s were enough)."""
    smsc.update_config(max_window=10, resp_delay_ms=5)
    port = free_port()
    path, config = harness.write_config(
        mid_config(smsc.port, children=1, connections=1, window=50, metrics_port=port)
    )
    count = 2_000
    await harness.enqueue(config, count)
    mta = await harness.start_mta(path)

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 90, "every message sent", mta)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    assert await mta.stop() == 0
    assert smsc.counters.accepted == count and smsc.counters.duplicates == 0
    assert metric_value(metrics.decode(), "smsmta_aimd_decreases_total") == 0
    # the first burst overfills the SMSC's window once; afterwards only a probe now and then
    assert 0 < smsc.counters.throttled_window <= 60, smsc.counters.throttled_window
    assert '"mta.smsc_window"' in mta.log()


def metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_link_dropped_every_thousand_submits_loses_nothing(
    harness: Harness, smsc: Smsc
) -> None:
    smsc.update_config(drop_after=1000)
    path, config = harness.write_config(mid_config(smsc.port, children=2, connections=2))
    count = 6_000
    await harness.enqueue(config, count)
    mta = await harness.start_mta(path)

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 120, "every message sent", mta)
    assert await mta.stop() == 0
    assert smsc.counters.dropped_connections >= 4  # each of the 4 binds at its 1,000th
    assert smsc.counters.accepted - smsc.counters.duplicates == count
    [(flagged,)] = await harness.query(
        "SELECT count(*) FROM mid.broad_log WHERE possible_duplicate"
    )
    assert flagged >= smsc.counters.dropped_connections  # each drop left one unanswered


async def test_sigkill_of_a_child_loses_nothing_and_duplicates_at_most_a_window(
    harness: Harness, smsc: Smsc
) -> None:
    window, connections = 10, 2
    smsc.update_config(resp_delay_ms=5)
    path, config = harness.write_config(
        mid_config(smsc.port, children=2, connections=connections, window=window)
    )
    count = 10_000
    await harness.enqueue(config, count)
    mta = await harness.start_mta(path)

    async def some_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) >= 2_000

    await harness.wait_until(some_sent, 60, "2,000 messages sent", mta)
    victim = mta.children()[0]
    victim.kill()

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 120, "every message sent after the kill", mta)
    assert await mta.stop() == 0
    assert smsc.counters.accepted - smsc.counters.duplicates == count
    assert smsc.counters.duplicates <= window * connections
    assert '"mta.child_died"' in mta.log()


async def test_multipart_ucs2_and_message_payload(harness: Harness, smsc: Smsc) -> None:
    path, config = harness.write_config(mid_config(smsc.port, children=1, connections=1))
    text = "Réunion demain 😀 " * 8  # UCS-2 because of the emoji: 144 units, 3 parts
    delivery_id = await harness.enqueue(config, 5, text=lambda i: text)
    mta = await harness.start_mta(path)

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == 5

    await harness.wait_until(all_sent, 60, "the multipart messages sent", mta)
    assert await mta.stop() == 0
    rows = await harness.query(
        "SELECT b.parts, count(p.*), array_agg(p.part_no ORDER BY p.part_no) "
        "FROM mid.broad_log b JOIN mid.provider_msg_id p ON p.broad_log_id = b.id "
        "WHERE b.delivery_id = %s GROUP BY b.id, b.parts",
        delivery_id,
    )
    assert rows == [(3, 3, [1, 2, 3])] * 5
    assert smsc.counters.submit_sm == 15
    assert smsc.counters.receipts_generated == 5  # registered_delivery on the first part only

    payload_path, payload_config = harness.write_config(
        mid_config(smsc.port, children=1, connections=1, smsc={"message_payload": True}),
        "payload.yaml",
    )
    long_text = "A long text sent in one PDU. " * 20  # 580 characters
    await harness.enqueue(payload_config, 3, text=lambda i: long_text, spec=DeliverySpec("payload"))
    mta = await harness.start_mta(payload_path)

    async def payload_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == 8

    await harness.wait_until(payload_sent, 60, "the payload messages sent", mta)
    assert await mta.stop() == 0
    assert smsc.counters.submit_sm == 18
    [(parts,)] = await harness.query(
        "SELECT DISTINCT b.parts FROM mid.broad_log b JOIN mid.delivery d ON d.id = b.delivery_id "
        "WHERE d.marketing_delivery_id = 'payload'"
    )
    assert parts == 1


async def test_unencodable_and_overlong_texts_fail_with_their_reason(
    harness: Harness, smsc: Smsc
) -> None:
    path, config = harness.write_config(
        mid_config(
            smsc.port,
            children=1,
            connections=1,
            smsc={"encoding_mapping": [{"data_coding": 0, "encoding": "gsm7"}]},
        )
    )
    texts = ["Fine text", "No emoji 😀 here", "x" * 1000]
    await harness.enqueue(config, 3, text=lambda i: texts[i], spec=DeliverySpec("bad", max_parts=3))
    mta = await harness.start_mta(path)

    async def settled() -> bool:
        statuses = await harness.statuses()
        return statuses.get("sent", 0) == 1 and statuses.get("failed", 0) == 2

    await harness.wait_until(settled, 60, "one sent and two failed", mta)
    assert await mta.stop() == 0
    rows = dict(
        await harness.query(
            "SELECT marketing_message_id, failure_type::text || ': ' || failure_reason "
            "FROM mid.broad_log WHERE status = 'failed'"
        )
    )
    assert rows[1] == (
        "hard: cannot encode the text: '😀' (U+1F600) at index 9 (0-based) is not in gsm7"
    )
    assert rows[2].startswith("hard: the text needs 7 SMS parts in gsm7")
    assert rows[2].endswith("but at most 3 are allowed")
    assert smsc.counters.submit_sm == 1


async def test_max_binds_caps_the_binds_of_all_children(harness: Harness, smsc: Smsc) -> None:
    path, config = harness.write_config(
        # five on the login: the SMS process's two receivers (slots 0-1, reserved, counted
        # even when it is not running) and three transmitters
        mid_config(smsc.port, children=2, connections=2, max_binds=5)
    )
    count = 4_000
    await harness.enqueue(config, count)
    smsc.update_config(resp_delay_ms=1)
    mta = await harness.start_mta(path)
    most = 0

    async def all_sent() -> bool:
        nonlocal most
        most = max(most, smsc.stats["binds_active"]["tx"])
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 90, "every message sent", mta)
    assert await mta.stop() == 0
    assert most == 3  # two children wanted four binds; the account allows three
    assert smsc.counters.accepted == count and smsc.counters.duplicates == 0


async def test_a_child_without_a_bind_slot_claims_nothing_and_leaves_it_the_whole_cap(
    harness: Harness, smsc: Smsc
) -> None:
    # two children, one bind allowed: the child left without a slot must neither hold
    # messages it cannot send nor keep half of the cap for itself
    path, config = harness.write_config(
        mid_config(smsc.port, children=2, connections=1, max_binds=2, rate=300)  # 1 is rx
    )
    count = 3_000
    await harness.enqueue(config, count)
    mta = await harness.start_mta(path)
    owners: set[str] = set()
    shares: dict[str, float] = {}

    async def all_sent() -> bool:
        rows = await harness.query(
            "SELECT DISTINCT lease_owner FROM mid.broad_log WHERE status = 'sending'"
        )
        owners.update(owner for (owner,) in rows)
        for owner, share in await harness.query("SELECT owner, share FROM mid.rate_share"):
            shares[owner] = share
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 90, "every message sent", mta)
    slot_owners = await harness.query("SELECT owner FROM mid.bind_slot")
    assert await mta.stop() == 0
    assert len(slot_owners) == 1
    assert owners == {slot_owners[0][0]}  # only the child with the bind claimed
    # once settled, the bound child holds the whole cap and the other nothing
    assert shares[slot_owners[0][0]] == 300
    assert all(share == 0 for owner, share in shares.items() if owner != slot_owners[0][0])
    assert smsc.counters.accepted == count and smsc.counters.duplicates == 0


async def test_sigterm_returns_unsent_claims_and_a_restart_finishes_the_job(
    harness: Harness, smsc: Smsc
) -> None:
    smsc.update_config(resp_delay_ms=2)
    path, config = harness.write_config(mid_config(smsc.port, children=2, connections=1))
    count = 20_000
    await harness.enqueue(config, count)
    mta = await harness.start_mta(path)

    async def some_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) >= 2_000

    await harness.wait_until(some_sent, 60, "2,000 messages sent", mta)
    assert await mta.stop(timeout=30) == 0
    statuses = await harness.statuses()
    assert statuses.get("sending", 0) == 0  # every claim written back or released
    assert statuses.get("sent", 0) + statuses.get("pending", 0) == count
    assert statuses["pending"] > 0
    assert smsc.counters.unbinds >= 2  # each child unbound on its way out
    released = await harness.query(
        "SELECT count(*) FROM mid.broad_log WHERE status = 'pending' AND retry_count > 0"
    )
    assert released == [(0,)]  # handing back is not a retry

    mta = await harness.start_mta(path)

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(all_sent, 120, "the rest sent after the restart", mta)
    assert await mta.stop() == 0
    assert smsc.counters.accepted == count
    assert smsc.counters.duplicates == 0


async def test_submit_errors_are_qualified_through_the_message_log(
    harness: Harness, smsc: Smsc
) -> None:
    smsc.update_config(submit_fail_rate=1.0)  # every submit answered ESME_RSUBMITFAIL
    path, config = harness.write_config(mid_config(smsc.port, children=1, connections=1))
    await harness.enqueue(config, 20, spec=DeliverySpec("hard"))
    mta = await harness.start_mta(path)

    async def failed(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return (await harness.statuses()).get("failed", 0) == n

        return check

    await harness.wait_until(await failed(20), 60, "20 hard failures", mta)
    key = "SUBMIT Sim 0x00000045 ESME_RSUBMITFAIL"
    assert await harness.query(
        "SELECT key, first_text, qualification::text, count FROM mid.broad_log_msg"
    ) == [(key, key, "hard", 20)]
    assert await harness.query(
        "SELECT DISTINCT failure_type::text, failure_reason, retry_count FROM mid.broad_log"
    ) == [("hard", key, 0)]
    [(failed_hard,)] = await harness.query(
        "SELECT failed_hard FROM mid.delivery WHERE marketing_delivery_id = 'hard'"
    )
    assert failed_hard == 20

    # an operator requalifies the error as soft: the next failures go back to the queue
    await harness.query("UPDATE mid.broad_log_msg SET qualification = 'soft' RETURNING id")
    delivery_id = await harness.enqueue(config, 10, spec=DeliverySpec("soft"))

    async def retried() -> bool:
        rows = await harness.query(
            "SELECT count(*) FROM mid.broad_log WHERE delivery_id = %s AND status = 'pending' "
            "AND retry_count = 1 AND next_try_at > now() + interval '50 seconds'",
            delivery_id,
        )
        return rows == [(10,)]

    await harness.wait_until(retried, 60, "10 soft failures queued for retry", mta)
    assert await mta.stop() == 0
    [(count,)] = await harness.query("SELECT count FROM mid.broad_log_msg")
    assert count == 30


async def test_trx_binds_store_receipts_before_answering_them(harness: Harness, smsc: Smsc) -> None:
    path, config = harness.write_config(
        mid_config(smsc.port, children=2, connections=1, mode="trx")
    )
    count = 1_000
    await harness.enqueue(config, count)
    mta = await harness.start_mta(path)

    async def stored() -> bool:
        rows = await harness.query("SELECT count(*) FROM mid.inbox WHERE kind = 'receipt'")
        return rows == [(count,)] and (await harness.statuses()).get("sent", 0) == count

    await harness.wait_until(stored, 60, "every receipt stored in the inbox", mta)
    assert await mta.stop() == 0
    assert smsc.stats["binds_active"]["trx"] == 0
    assert smsc.counters.binds_total == 2  # transceivers only: no receiver was opened
    assert smsc.counters.deliver_sm_acked == count  # each answered once stored


async def test_blacklisted_recipients_fail_without_reaching_the_smsc(
    harness: Harness, smsc: Smsc
) -> None:
    path, config = harness.write_config(mid_config(smsc.port, children=1, connections=1))
    await harness.query(
        "INSERT INTO mid.short_code_blacklist (short_code, address, reason) VALUES "
        "('38000', '+33610000001', 'STOP'), ('38000', '+33610000003', 'STOP'), "
        "('40000', '+33610000002', 'STOP') RETURNING address"
    )
    await harness.enqueue(config, 4, spec=DeliverySpec("stop", source_addr="38000"))
    mta = await harness.start_mta(path)

    async def settled() -> bool:
        statuses = await harness.statuses()
        return statuses.get("sent", 0) == 2 and statuses.get("failed", 0) == 2

    await harness.wait_until(settled, 60, "two sent and two blacklisted", mta)
    assert await mta.stop() == 0
    assert await harness.query(
        "SELECT marketing_message_id, failure_type::text, failure_reason FROM mid.broad_log "
        "WHERE status = 'failed' ORDER BY 1"
    ) == [(1, "hard", "blacklisted"), (3, "hard", "blacklisted")]
    assert smsc.counters.submit_sm == 2  # +33610000002 stopped another short code only
