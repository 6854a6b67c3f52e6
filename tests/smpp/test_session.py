"""The sans-IO session: two sessions wired back to back, time passed in, no sleeping."""

from __future__ import annotations

import random

import pytest

from smsmta.smpp.codec import encode
from smsmta.smpp.constants import CommandId as C
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsmta.smpp.pdu import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    GenericNack,
    Pdu,
    QuerySm,
    SubmitSm,
    SubmitSmResp,
    Unbind,
)
from smsmta.smpp.session import (
    CONNECTION_CLOSED,
    DEFAULT_TIMEOUTS,
    MAX_SEQUENCE,
    NEED_DATA,
    Expired,
    LinkDead,
    Rejected,
    Response,
    Role,
    Session,
    State,
    Stray,
    Timeouts,
)


def pump(source: Session, target: Session, now: float = 0.0) -> list:
    """Move source's output into target and collect target's events."""
    target.receive_data(source.data_to_send(), now)
    events = []
    while (event := target.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def bound_pair(
    bind: type[Pdu] = BindTransmitter, window: int = 10, timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> tuple[Session, Session]:
    esme = Session(Role.ESME, window=window, timeouts=timeouts)
    smsc = Session(Role.SMSC, window=window, timeouts=timeouts)
    esme.send(bind(system_id="alpha", password="pw"), 0.0)
    [request] = pump(esme, smsc)
    assert smsc.state is State.BINDING
    smsc.send(request.make_resp(system_id="SIM"), 0.0)
    [response] = pump(smsc, esme)
    assert isinstance(response, Response) and response.pdu.command_status == 0
    return esme, smsc


@pytest.mark.parametrize(
    ("bind", "state"),
    [
        (BindTransmitter, State.BOUND_TX),
        (BindReceiver, State.BOUND_RX),
        (BindTransceiver, State.BOUND_TRX),
    ],
)
def test_bind_reaches_the_bound_state_on_both_sides(bind: type[Pdu], state: State) -> None:
    esme, smsc = bound_pair(bind)
    assert esme.state is state
    assert smsc.state is state


def test_refused_bind_returns_to_open() -> None:
    esme = Session(Role.ESME)
    smsc = Session(Role.SMSC)
    esme.send(BindTransmitter(system_id="alpha", password="bad"), 0.0)
    [request] = pump(esme, smsc)
    smsc.send(request.make_resp(command_status=S.ESME_RINVPASWD), 0.0)
    [response] = pump(smsc, esme)
    assert response.pdu.command_status == S.ESME_RINVPASWD
    assert esme.state is State.OPEN
    assert smsc.state is State.OPEN


def test_pipelined_submits_answered_in_any_order_keep_their_context() -> None:
    esme, smsc = bound_pair(window=5)
    sequences = {
        esme.send(SubmitSm(destination_addr=f"336{i}"), 1.0, context=i): i for i in range(5)
    }
    assert esme.in_flight == 5
    with pytest.raises(LocalProtocolError, match="window full: 5 of 5"):
        esme.send(SubmitSm(destination_addr="x"), 1.0)
    assert esme.in_flight == 5  # the refused send changed nothing
    requests = pump(esme, smsc)
    assert [r.destination_addr for r in requests] == [f"336{i}" for i in range(5)]
    random.Random(7).shuffle(requests)
    for request in requests:
        smsc.send(request.make_resp(message_id=f"id{request.sequence_number}"), 1.0)
    responses = pump(smsc, esme)
    assert {(r.pdu.message_id, r.context) for r in responses} == {
        (f"id{seq}", i) for seq, i in sequences.items()
    }
    assert esme.in_flight == 0 and esme.window_free == 5


def test_sequence_numbers_wrap_and_skip_outstanding_ones() -> None:
    esme, _ = bound_pair(window=3)
    esme._next_sequence = MAX_SEQUENCE - 1
    first = esme.send(SubmitSm(), 0.0)
    second = esme.send(SubmitSm(), 0.0)
    third = esme.send(SubmitSm(), 0.0)
    assert (first, second, third) == (MAX_SEQUENCE - 1, MAX_SEQUENCE, 1)
    esme._next_sequence = MAX_SEQUENCE - 1  # still outstanding: skipped
    esme.expired(100.0)
    esme.send(SubmitSm(), 0.0)
    esme._next_sequence = MAX_SEQUENCE
    assert esme.send(SubmitSm(), 0.0) == MAX_SEQUENCE


def test_expired_requests_come_back_once_and_late_answers_are_stray() -> None:
    esme, smsc = bound_pair(timeouts=Timeouts(response=10.0))
    seq = esme.send(SubmitSm(), 100.0, context="mt-1")
    [request] = pump(esme, smsc, 100.0)
    assert esme.expired(109.9) == []
    assert esme.expired(110.0) == [Expired(seq, C.submit_sm, "mt-1")]
    assert esme.expired(200.0) == []
    assert esme.in_flight == 0
    smsc.send(request.make_resp(message_id="late"), 111.0)
    [event] = pump(smsc, esme, 111.0)
    assert isinstance(event, Stray) and event.pdu.message_id == "late"


def test_bind_timeout_returns_to_open() -> None:
    esme = Session(Role.ESME, timeouts=Timeouts(bind=5.0))
    esme.send(BindTransmitter(system_id="a"), 0.0)
    assert esme.state is State.BINDING
    [event] = esme.tick(5.0)
    assert event.request == C.bind_transmitter
    assert esme.state is State.OPEN


def test_enquire_link_only_when_idle_and_dead_after_twice_the_period() -> None:
    esme, smsc = bound_pair(timeouts=Timeouts(enquire_link_period=30.0))
    esme.send(SubmitSm(), 20.0)
    [submit] = pump(esme, smsc, 20.0)
    smsc.send(submit.make_resp(message_id="1"), 20.0)
    pump(smsc, esme, 20.0)
    assert esme.tick(49.0) == []
    assert esme.data_to_send() == b""  # 29 s idle: nothing sent
    assert esme.tick(50.0) == []
    assert pump(esme, smsc, 50.0) == []  # the SMSC answers enquire_link by itself
    [response] = pump(smsc, esme, 51.0)
    assert response.request == C.enquire_link
    # now the peer goes silent: a new enquire_link at 81, dead at 81 + 2 x 30
    assert esme.tick(81.0) == []
    assert esme.data_to_send() == encode(EnquireLink(sequence_number=4))
    assert esme.tick(140.9) == []
    assert esme.tick(141.0) == [LinkDead(60.0)]


def test_the_session_answers_enquire_link_itself() -> None:
    esme, smsc = bound_pair()
    smsc.send(EnquireLink(), 1.0)
    assert pump(smsc, esme) == []
    [response] = pump(esme, smsc)
    assert isinstance(response, Response) and response.pdu.command_id == C.enquire_link_resp


def test_unbind_handshake_drains_outstanding_responses() -> None:
    esme, smsc = bound_pair()
    esme.send(SubmitSm(), 1.0, context="last")
    esme.unbind(1.0)
    assert esme.state is State.UNBINDING
    with pytest.raises(LocalProtocolError, match="in state unbinding"):
        esme.send(SubmitSm(), 1.0)
    submit, unbind = pump(esme, smsc)
    assert unbind.command_id == C.unbind and smsc.state is State.CLOSED
    # the SMSC answered the unbind by itself; the submit's response still reaches us
    unbind_resp = smsc.data_to_send()
    esme.receive_data(encode(submit.make_resp(message_id="m")) + unbind_resp, 2.0)
    first, second = esme.next_event(), esme.next_event()
    assert first.context == "last" and second.request == C.unbind
    assert esme.state is State.CLOSED


def test_illegal_sends_raise_and_change_nothing() -> None:
    esme = Session(Role.ESME)
    with pytest.raises(LocalProtocolError, match="cannot send submit_sm as esme in state open"):
        esme.send(SubmitSm(), 0.0)
    assert esme.state is State.OPEN and esme.data_to_send() == b""
    esme, smsc = bound_pair(BindTransmitter)
    with pytest.raises(LocalProtocolError):
        esme.send(DeliverSm(), 0.0)  # an ESME never sends deliver_sm
    with pytest.raises(LocalProtocolError):
        smsc.send(DeliverSm(), 0.0)  # not on a transmitter bind
    with pytest.raises(LocalProtocolError, match="source_addr"):
        esme.send(SubmitSm(source_addr="x" * 30), 0.0)
    assert esme.in_flight == 0 and esme.data_to_send() == b""
    with pytest.raises(LocalProtocolError, match="no such bind"):
        smsc.send(BindTransmitter(sequence_number=1).make_resp(), 0.0)


def test_requests_not_allowed_in_the_state_are_answered_and_reported() -> None:
    esme, smsc = bound_pair(BindTransmitter)
    # deliver_sm arriving on a transmitter bind: deliver_sm_resp ESME_RINVBNDSTS
    esme.receive_data(encode(DeliverSm(sequence_number=9)), 0.0)
    [event] = list(iter(esme.next_event, NEED_DATA))
    assert event == Rejected(DeliverSm(sequence_number=9), S.ESME_RINVBNDSTS)
    smsc.receive_data(esme.data_to_send(), 0.0)
    [answer] = list(iter(smsc.next_event, NEED_DATA))
    assert isinstance(answer, Stray) and answer.pdu == DeliverSmResp(
        sequence_number=9, command_status=S.ESME_RINVBNDSTS
    )
    # a command an ESME never receives: generic_nack ESME_RINVCMDID
    esme.receive_data(encode(QuerySm(sequence_number=10)), 0.0)
    [event] = list(iter(esme.next_event, NEED_DATA))
    assert event.status == S.ESME_RINVCMDID
    assert esme.data_to_send() == encode(
        GenericNack(sequence_number=10, command_status=S.ESME_RINVCMDID)
    )
    # a second bind to the SMSC: ESME_RALYBND
    smsc.receive_data(encode(BindTransmitter(sequence_number=11, system_id="a")), 0.0)
    [event] = list(iter(smsc.next_event, NEED_DATA))
    assert event.status == S.ESME_RALYBND
    assert smsc.state is State.BOUND_TX


def test_malformed_pdu_is_answered_then_raised_and_the_session_goes_on() -> None:
    _, smsc = bound_pair()
    good = encode(SubmitSm(sequence_number=5, destination_addr="336"))
    unknown_command = b"\x00\x00\x00\x10\x00\x00\x07\x77\x00\x00\x00\x00\x00\x00\x00\x06"
    smsc.receive_data(unknown_command + good, 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        smsc.next_event()
    assert not caught.value.framing_lost
    assert smsc.data_to_send() == encode(
        GenericNack(sequence_number=6, command_status=S.ESME_RINVCMDID)
    )
    assert smsc.next_event().destination_addr == "336"  # the stream goes on
    assert smsc.state is State.BOUND_TX


def test_lost_framing_raises_every_time() -> None:
    session = Session(Role.ESME)
    session.receive_data(b"\x00\x00\x00\x02" + b"\x00" * 12, 0.0)
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as caught:
            session.next_event()
        assert caught.value.framing_lost


def test_peer_unbind_is_answered_and_closes() -> None:
    esme, smsc = bound_pair(BindReceiver)
    smsc.send(Unbind(), 0.0)
    [event] = pump(smsc, esme)
    assert event.command_id == C.unbind and esme.state is State.CLOSED
    [response] = pump(esme, smsc)
    assert response.request == C.unbind and smsc.state is State.CLOSED


def test_connection_closed_abandons_outstanding_requests() -> None:
    esme, _ = bound_pair()
    esme.send(SubmitSm(), 0.0, context="a")
    esme.send(SubmitSm(), 0.0, context="b")
    esme.receive_data(b"", 1.0)
    assert esme.next_event() is CONNECTION_CLOSED
    assert [e.context for e in esme.abandon()] == ["a", "b"]
    assert esme.in_flight == 0 and esme.state is State.CLOSED


def test_receiver_gets_deliver_sm_and_answers_it() -> None:
    esme, smsc = bound_pair(BindReceiver)
    smsc.send(DeliverSm(short_message=b"id:1 stat:DELIVRD"), 0.0, context="dlr")
    [deliver] = pump(smsc, esme)
    assert deliver.short_message == b"id:1 stat:DELIVRD"
    esme.send(deliver.make_resp(), 0.0)
    [response] = pump(esme, smsc)
    assert response.context == "dlr"


def test_byte_at_a_time_gives_the_same_events() -> None:
    esme, smsc = bound_pair(BindTransceiver, window=50)
    for i in range(20):
        esme.send(SubmitSm(destination_addr=str(i)), 0.0)
    data = esme.data_to_send()
    events = []
    for i in range(len(data)):
        smsc.receive_data(data[i : i + 1], 0.0)
        events.extend(iter(smsc.next_event, NEED_DATA))
    assert [e.destination_addr for e in events] == [str(i) for i in range(20)]
    for event in events:
        smsc.send(event.make_resp(message_id="x"), 0.0)
    assert len(pump(smsc, esme)) == 20 and esme.in_flight == 0
    assert isinstance(SubmitSmResp(), Pdu)
