"""The SMS process's instance lock through a lost database connection (sms_process.lock,
`InstanceLock.watch`): the lock's backend is terminated (what a PostgreSQL restart does to every
connection; the restart itself is tests/faults, postgres_restart), and the process takes
the lock again and goes on, or exits 1 naming the holder when another SMS process has it.
While it does not hold the lock it stores and answers received PDUs, but handles none."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy.engine import URL
from structlog.testing import capture_logs

from sms_process.lock import LOCK_KEY, RECONNECT_FIRST, RECONNECT_MAX, Outage, _holder
from smsmta.db.engine import libpq_dsn
from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.testing.stack import scratch_database
from tests.sms_process.conftest import Service, SmsHarness, sms_config

pytestmark = pytest.mark.timeout(90)

LOCK_BACKEND = """
SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
KEY = (LOCK_KEY >> 32, LOCK_KEY & 0xFFFFFFFF)


async def lock_backend(sms: SmsHarness) -> tuple[int, str] | None:
    rows = await sms.query(LOCK_BACKEND, *KEY)
    return (rows[0][0], rows[0][1]) if rows else None


async def terminate(sms: SmsHarness, pid: int) -> None:
    assert await sms.scalar("SELECT pg_terminate_backend(%s)", pid)


async def take_when_free(conn: psycopg.AsyncConnection, timeout: float) -> None:
    """Take the instance's lock on `conn` as soon as it is free (polls every 10 ms)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        if (await cursor.fetchone())[0]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the lock was not free within {timeout} s")


async def steal_lock(sms: SmsHarness, pid: int, application_name: str) -> psycopg.AsyncConnection:
    """Terminate the lock's backend and take the lock first: the session is connected
    before, so it wins against the process's check (every 2 s) however slow the machine."""
    conn = await psycopg.AsyncConnection.connect(
        sms.dsn, autocommit=True, application_name=application_name
    )
    try:
        taking = asyncio.create_task(take_when_free(conn, 20))
        await terminate(sms, pid)
        await taking
    except BaseException:
        await conn.close()
        raise
    return conn


async def started(sms: SmsHarness, smsc: Smsc) -> tuple[Service, int, str]:
    path, _ = sms.write_config(sms_config(smsc.port))
    process = await sms.start_sms_process(path)
    holder = await lock_backend(sms)
    assert holder is not None and holder[1].startswith("smsmta sms-process")
    return process, *holder


async def test_lock_taken_again_after_its_connection_dies(sms: SmsHarness) -> None:
    async with Smsc(SimulatorConfig(port=0)) as smsc:
        process, pid, name = await started(sms, smsc)
        await terminate(sms, pid)

        async def retaken() -> bool:
            holder = await lock_backend(sms)
            return holder is not None and holder[0] != pid

        await sms.until(retaken, 20, "the lock taken again on a new connection", process)
        assert (await lock_backend(sms))[1] == name  # by the same process
        await sms.wait_for_log(process, "sms_process.lock_taken_again", 10)
        assert process.log().count("sms_process.lock_lost") == 1

        await smsc.inject_mo("+33644444444", "38000", "after the outage")

        async def stored() -> bool:
            return await sms.scalar("SELECT count(*) FROM mid.in_sms") == 1

        await sms.until(stored, 20, "the MO handled after the lock came back", process)
        assert smsc.counters.deliver_sm_acked == 1
        assert await process.stop() == 0


async def test_nothing_handled_while_the_lock_is_not_held(sms: SmsHarness) -> None:
    async with Smsc(SimulatorConfig(port=0)) as smsc:
        process, pid, name = await started(sms, smsc)
        # a session named as the process itself: to it, its own session from before the
        # outage that the server has not dropped yet, so it waits instead of exiting
        squatter = await steal_lock(sms, pid, name)
        try:
            await sms.wait_for_log(process, "sms_process.lock_lost", 10)
            await smsc.inject_mo("+33655555555", "38000", "during the outage")

            async def in_inbox() -> bool:  # stored, then answered
                return (
                    await sms.scalar("SELECT count(*) FROM mid.inbox") == 1
                    and smsc.counters.deliver_sm_acked == 1
                )

            await sms.until(in_inbox, 20, "the MO stored and answered", process)
            await asyncio.sleep(1.0)  # several poll intervals (0.2 s): nothing handles it
            assert await sms.scalar("SELECT count(*) FROM mid.in_sms") == 0
            assert await sms.scalar("SELECT count(*) FROM mid.inbox") == 1
        finally:
            await squatter.close()  # the lock is free: the process takes it again

        async def handled() -> bool:
            return await sms.scalar("SELECT count(*) FROM mid.in_sms") == 1

        await sms.until(handled, 20, "the MO handled once the lock is held again", process)
        assert "sms_process.lock_taken_again" in process.log()
        assert await process.stop() == 0


async def test_exits_naming_the_holder_when_another_process_took_the_lock(
    sms: SmsHarness,
) -> None:
    async with Smsc(SimulatorConfig(port=0)) as smsc:
        process, pid, _ = await started(sms, smsc)
        other = await steal_lock(sms, pid, "smsmta sms-process other 1")
        try:
            code = await asyncio.wait_for(process.process.wait(), 30)
        finally:
            await other.close()
        log = process.log()
        assert code == 1, log[-3000:]
        assert "sms_process.lock_taken" in log
        assert "smsmta sms-process other 1" in log  # names the holder
        assert "another SMS process took the lock" in log


def test_an_outage_is_logged_once_backs_off_and_masks_the_password() -> None:
    outage = Outage("work loop 0", "s3cret pass")
    with capture_logs() as logs:
        delays = [outage.failed(f"password s3cret pass refused ({i})") for i in range(12)]
        outage.recovered()
        outage.recovered()
    assert delays[0] == RECONNECT_FIRST
    assert delays == sorted(delays) and max(delays) == RECONNECT_MAX
    assert [entry["event"] for entry in logs] == ["sms_process.db_lost", "sms_process.db_back"]
    assert "s3cret" not in repr(logs)
    assert logs[1]["attempts"] == 12


async def test_an_instance_in_another_database_is_not_taken_for_the_holder(
    pg_server_url: URL, fresh_db_url: URL
) -> None:
    """Two mid instances on one PostgreSQL server (a database each) hold the same advisory
    key, each in its own database: the holder named to one must never be the other."""
    with scratch_database(pg_server_url, "smsmta_other") as other_url:
        async with (
            await psycopg.AsyncConnection.connect(
                libpq_dsn(other_url), autocommit=True, application_name="other-instance"
            ) as other,
            await psycopg.AsyncConnection.connect(libpq_dsn(fresh_db_url), autocommit=True) as ours,
        ):
            await other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            name, description = await _holder(ours)
            assert name is None, description
            assert "other-instance" not in description
