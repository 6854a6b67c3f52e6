"""The tools of the fault suite: the simulator's fault modes and the TCP proxy.

Driven by the small ESME of tests/smpp/test_simulator.py over real sockets on 127.0.0.1
(its `start` and `connect` fixtures come through tests/faults/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from smsmta.simulator import Smsc
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.pdu import BindTransmitter, EnquireLink
from smsmta.testing.proxy import TcpProxy
from tests.smpp.test_simulator import HOST, Connect, Esme, eventually, http, mt

pytestmark = pytest.mark.timeout(60)
Start = Callable[..., Awaitable[Smsc]]


async def not_within(future: asyncio.Future[object], seconds: float) -> bool:
    """True when `future` is still pending after `seconds`."""
    done, _ = await asyncio.wait({future}, timeout=seconds)
    return not done


async def test_answer_nothing_accepts_and_never_answers(start: Start, connect: Connect) -> None:
    sim = await start()
    esme = await connect(sim)
    sim.update_config(answer_nothing=True)
    first = esme.send(mt(1))
    esme.flush()
    await eventually(lambda: sim.counters.accepted == 1, "the submit accepted")
    assert await not_within(first, 0.3)
    assert sim.stats["responses_withheld"] == 1
    # enquire_link is still answered: the link is alive, only submits go unanswered
    assert (await esme.request(EnquireLink())).command_status == S.ESME_ROK
    status, body, _ = await http(sim.control_port, "POST", "/config", {"answer_nothing": False})
    assert status == 200 and body["answer_nothing"] is False
    again = await esme.request(mt(1))  # the ESME gave up waiting and sends it again
    assert again.command_status == S.ESME_ROK
    assert sim.counters.accepted == 2 and sim.counters.duplicates == 1
    status, body, _ = await http(sim.control_port, "POST", "/config", {"answer_nothing": 1})
    assert status == 400 and "answer_nothing must be true or false" in body["error"]


async def test_drop_links_aborts_every_connection(start: Start, connect: Connect) -> None:
    sim = await start()
    first, second = await connect(sim), await connect(sim)
    assert sim.drop_links() == 2
    for esme in (first, second):
        await asyncio.wait_for(esme.closed.wait(), 10)
    third = await connect(sim)
    status, body, _ = await http(sim.control_port, "POST", "/drop_links")
    assert (status, body) == (200, {"dropped": 1})
    await asyncio.wait_for(third.closed.wait(), 10)
    assert sim.stats["links_dropped"] == 3


@pytest.mark.parametrize("kind", ["unknown_command", "truncated"])
async def test_well_framed_garbage_leaves_the_session_alive(
    start: Start, connect: Connect, kind: str
) -> None:
    sim = await start()
    esme = await connect(sim)
    assert sim.inject_garbage(kind) == 1
    await eventually(lambda: bool(esme.errors), "the ESME to see the malformed PDU")
    assert not esme.errors[0].framing_lost
    assert (await esme.request(mt(2))).command_status == S.ESME_ROK  # the link lives on
    # the ESME's session answered the bad PDU (generic_nack / an error response): a stray
    await eventually(lambda: sim.counters.stray_responses == 1, "the answer to the garbage")


@pytest.mark.parametrize("kind", ["bad_length", "random"])
async def test_garbage_that_breaks_framing(start: Start, connect: Connect, kind: str) -> None:
    sim = await start(seed=3)
    esme = await connect(sim)
    status, body, _ = await http(sim.control_port, "POST", "/garbage", {"kind": kind})
    assert (status, body) == (200, {"written": 1})
    await eventually(lambda: bool(esme.errors), "the ESME to lose framing")
    assert esme.errors[-1].framing_lost
    assert sim.stats["garbage_injected"] == 1


async def test_garbage_arguments_are_checked(start: Start, connect: Connect) -> None:
    sim = await start()
    with pytest.raises(ValueError, match="garbage kind 'noise' is not one of bad_length"):
        sim.inject_garbage("noise")
    with pytest.raises(ValueError, match="binds must be some of tx, rx, trx"):
        sim.inject_garbage("random", ("tx", "xx"))
    status, body, _ = await http(sim.control_port, "POST", "/garbage", {"kind": "noise"})
    assert status == 400 and "noise" in body["error"]
    status, body, _ = await http(sim.control_port, "POST", "/garbage", {"kind": "random", "x": 1})
    assert status == 400 and "unknown field(s) x" in body["error"]
    status, body, _ = await http(sim.control_port, "GET", "/drop_links")
    assert status == 405


async def via(proxy: TcpProxy) -> Esme:
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    return Esme(reader, writer)


async def test_proxy_forwards_cuts_without_fin_resumes_and_resets(start: Start) -> None:
    sim = await start()
    async with TcpProxy(HOST, sim.port) as proxy:
        esme = await via(proxy)
        bind = await esme.request(BindTransmitter(system_id="smsmta", password="secret"))
        assert bind.command_status == S.ESME_ROK
        proxy.cut()
        waiting = esme.send(mt(3))
        esme.flush()
        late = await via(proxy)  # a connection made during the cut waits for its end
        late_bind = late.send(BindTransmitter(system_id="smsmta", password="secret"))
        late.flush()
        assert await not_within(waiting, 0.5)
        assert await not_within(late_bind, 0.01)
        assert not esme.closed.is_set() and sim.counters.submit_sm == 0  # nothing got through
        proxy.resume()
        assert (await asyncio.wait_for(waiting, 10)).command_status == S.ESME_ROK
        assert (await asyncio.wait_for(late_bind, 10)).command_status == S.ESME_ROK
        assert proxy.reset() == 2
        for side in (esme, late):
            await asyncio.wait_for(side.closed.wait(), 10)
        await eventually(lambda: not sim.stats["connections"], "the SMSC side reset too")


async def test_a_close_during_the_cut_reaches_the_other_side_after_it(start: Start) -> None:
    sim = await start()
    async with TcpProxy(HOST, sim.port) as proxy:
        esme = await via(proxy)
        await esme.request(BindTransmitter(system_id="smsmta", password="secret"))
        proxy.cut()
        esme.send(mt(4))
        esme.flush()
        esme.abort()  # the ESME gives up on the link during the cut
        await asyncio.sleep(0.3)
        assert sim.stats["connections"] == 1  # no FIN went through
        proxy.resume()
        # what was written before the close still arrives: the SMSC accepts it unanswered
        await eventually(lambda: sim.counters.accepted == 1, "the submit sent during the cut")
        await eventually(lambda: not sim.stats["connections"], "the close after the cut")
