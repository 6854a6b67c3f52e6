"""smsmta.smpp.codec and .pdu: golden vectors, round trips, field limits, decode errors, framing.

The golden vectors are written by hand from SMPP 3.4 (one per command), field by field,
and a few are cross-checked against PyPI's smpplib, an independent implementation.
The Hypothesis strategies defined here are shared with test_codec_fuzz.py.
"""

from __future__ import annotations

import copy
import pickle
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsmta.smpp import codec
from smsmta.smpp.codec import Framer, decode, encode, reference_decode, reference_encode
from smsmta.smpp.constants import (
    CommandId,
    CommandStatus,
    EsmClass,
    MessageState,
    Tag,
    is_delivery_receipt,
    is_response,
    is_throttling,
    status_name,
)
from smsmta.smpp.errors import LocalProtocolError, RemoteProtocolError, SmppError
from smsmta.smpp.pdu import (
    CSTRING,
    DEST_ADDRESS_LIST,
    DEST_ADDRESSES,
    DESTINATION_ADDR,
    DL_NAME,
    INT8,
    INT16,
    INT32,
    LAYOUTS,
    OCTETS,
    PDU_CLASSES,
    SM,
    TIME,
    TLVS,
    UNSUCCESS_SME_FIELDS,
    UNSUCCESS_SMES,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    DistributionList,
    EnquireLink,
    EnquireLinkResp,
    Field,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    ReplaceSm,
    ReplaceSmResp,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnsuccessSme,
    error_response,
    generic_nack,
)


def h(*parts: str) -> bytes:
    """Hex to bytes; spaces are ignored, so vectors can be laid out field by field."""
    return bytes.fromhex("".join(parts))


# --------------------------------------------------------------------------------------------
# Golden vectors: every PDU type, hand-written field by field
# --------------------------------------------------------------------------------------------

GOLDEN: list[tuple[str, Pdu, bytes]] = [
    (
        "generic_nack",
        GenericNack(sequence_number=7, command_status=CommandStatus.ESME_RINVCMDID),
        h("00000010 80000000 00000003 00000007"),
    ),
    (
        "bind_receiver",
        BindReceiver(sequence_number=1, system_id="smsmta", password="secret"),
        h(
            "00000023 00000001 00000000 00000001",
            "736d736d746100",  # system_id "smsmta"
            "73656372657400",  # password "secret"
            "00",  # system_type ""
            "34 00 00",  # interface_version 0x34, addr_ton, addr_npi
            "00",  # address_range ""
        ),
    ),
    (
        "bind_receiver_resp",
        BindReceiverResp(
            sequence_number=1, system_id="SMSC", tlvs=((Tag.sc_interface_version, 0x34),)
        ),
        h(
            "0000001a 80000001 00000000 00000001",
            "534d534300",  # system_id "SMSC"
            "0210 0001 34",  # TLV sc_interface_version = 0x34
        ),
    ),
    (
        "bind_transmitter",
        BindTransmitter(
            sequence_number=2,
            system_id="smsmta",
            password="secret",
            system_type="CMT",
            addr_ton=1,
            addr_npi=1,
        ),
        h(
            "00000026 00000002 00000000 00000002",
            "736d736d746100",  # system_id
            "73656372657400",  # password
            "434d5400",  # system_type "CMT"
            "34 01 01",  # interface_version, addr_ton, addr_npi
            "00",  # address_range
        ),
    ),
    (
        "bind_transmitter_resp",
        BindTransmitterResp(sequence_number=2, system_id="SMSC"),
        h("00000015 80000002 00000000 00000002", "534d534300"),
    ),
    (
        "bind_transceiver",
        BindTransceiver(
            sequence_number=3,
            system_id="smsmta",
            password="secret",
            addr_ton=1,
            addr_npi=1,
            address_range="^336",
        ),
        h(
            "00000027 00000009 00000000 00000003",
            "736d736d746100",
            "73656372657400",
            "00",  # system_type ""
            "34 01 01",
            "5e33333600",  # address_range "^336"
        ),
    ),
    (
        "bind_transceiver_resp",
        BindTransceiverResp(sequence_number=3, command_status=CommandStatus.ESME_RBINDFAIL),
        h("00000011 80000009 0000000d 00000003", "00"),
    ),
    (
        "outbind",
        Outbind(sequence_number=4, system_id="SMSC", password="pw"),
        h("00000018 0000000b 00000000 00000004", "534d534300", "707700"),
    ),
    ("unbind", Unbind(sequence_number=5), h("00000010 00000006 00000000 00000005")),
    ("unbind_resp", UnbindResp(sequence_number=5), h("00000010 80000006 00000000 00000005")),
    ("enquire_link", EnquireLink(sequence_number=6), h("00000010 00000015 00000000 00000006")),
    (
        "enquire_link_resp",
        EnquireLinkResp(sequence_number=6),
        h("00000010 80000015 00000000 00000006"),
    ),
    (
        "submit_sm",
        SubmitSm(
            sequence_number=8,
            source_addr_ton=5,
            source_addr="MyBrand",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="33612345678",
            validity_period="240601120000000+",
            registered_delivery=1,
            short_message=b"Hello",
            tlvs=((Tag.user_message_reference, 42), (Tag.dest_addr_subunit, 1)),
        ),
        h(
            "00000053 00000004 00000000 00000008",
            "00",  # service_type ""
            "05 00",  # source_addr_ton alphanumeric, source_addr_npi
            "4d794272616e6400",  # source_addr "MyBrand"
            "01 01",  # dest_addr_ton, dest_addr_npi
            "333336313233343536373800",  # destination_addr "33612345678"
            "00 00 00",  # esm_class, protocol_id, priority_flag
            "00",  # schedule_delivery_time ""
            "3234303630313132 30303030303030 2b 00",  # validity_period "240601120000000+"
            "01 00 00 00",  # registered_delivery, replace_if_present, data_coding, default id
            "05 48656c6c6f",  # sm_length 5, short_message "Hello"
            "0204 0002 002a",  # TLV user_message_reference = 42
            "0005 0001 01",  # TLV dest_addr_subunit = 1
        ),
    ),
    (
        "submit_sm_resp",
        SubmitSmResp(sequence_number=8, message_id="7f3a9c21"),
        h("00000019 80000004 00000000 00000008", "376633613963323100"),
    ),
    (
        "deliver_sm",
        DeliverSm(
            sequence_number=9,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            dest_addr_ton=5,
            destination_addr="MyBrand",
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=b"id:7f3a9c21 stat:DELIVRD err:000",
            tlvs=(
                (Tag.receipted_message_id, "7f3a9c21"),
                (Tag.message_state, MessageState.DELIVERED),
            ),
        ),
        h(
            "00000065 00000005 00000000 00000009",
            "00",  # service_type
            "01 01 333336313233343536373800",  # source ton, npi, "33612345678"
            "05 00 4d794272616e6400",  # dest ton, npi, "MyBrand"
            "04 00 00",  # esm_class = delivery receipt, protocol_id, priority_flag
            "00 00",  # schedule_delivery_time, validity_period
            "00 00 00 00",  # registered_delivery, replace_if_present, data_coding, default id
            "20",  # sm_length 32
            "69643a3766336139633231",  # "id:7f3a9c21"
            "20737461743a44454c49565244",  # " stat:DELIVRD"
            "206572723a303030",  # " err:000"
            "001e 0009 376633613963323100",  # TLV receipted_message_id "7f3a9c21"
            "0427 0001 02",  # TLV message_state DELIVERED
        ),
    ),
    (
        "deliver_sm_resp",
        DeliverSmResp(sequence_number=9),
        h("00000011 80000005 00000000 00000009", "00"),
    ),
    (
        "submit_multi",
        SubmitMulti(
            sequence_number=10,
            source_addr_ton=5,
            source_addr="MyBrand",
            dest_addresses=(SmeAddress(1, 1, "33611111111"), DistributionList("staff")),
            registered_delivery=1,
            short_message=b"Hi",
        ),
        h(
            "0000003e 00000021 00000000 0000000a",
            "00 05 00 4d794272616e6400",  # service_type, source ton/npi/addr
            "02",  # number_of_dests
            "01 01 01 333336313131313131313100",  # dest_flag SME, ton, npi, "33611111111"
            "02 737461666600",  # dest_flag distribution list, dl_name "staff"
            "00 00 00 00 00",  # esm_class, protocol_id, priority, schedule, validity
            "01 00 00 00",  # registered_delivery, replace_if_present, data_coding, default id
            "02 4869",  # sm_length 2, "Hi"
        ),
    ),
    (
        "submit_multi_resp",
        SubmitMultiResp(
            sequence_number=10,
            message_id="abc",
            unsuccess_smes=(UnsuccessSme(1, 1, "33611111111", CommandStatus.ESME_RINVDSTADR),),
        ),
        h(
            "00000027 80000021 00000000 0000000a",
            "61626300",  # message_id "abc"
            "01",  # no_unsuccess
            "01 01 333336313131313131313100 0000000b",  # ton, npi, addr, error_status_code
        ),
    ),
    (
        "data_sm",
        DataSm(
            sequence_number=11,
            service_type="WAP",
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="33698765432",
            registered_delivery=1,
            data_coding=4,
            tlvs=((Tag.message_payload, b"\x01\x02\x03"), (Tag.source_port, 9200)),
        ),
        h(
            "00000040 00000103 00000000 0000000b",
            "57415000",  # service_type "WAP"
            "01 01 333336313233343536373800",
            "01 01 333336393837363534333200",  # "33698765432"
            "00 01 04",  # esm_class, registered_delivery, data_coding
            "0424 0003 010203",  # TLV message_payload
            "020a 0002 23f0",  # TLV source_port 9200
        ),
    ),
    (
        "data_sm_resp",
        DataSmResp(
            sequence_number=11,
            message_id="m1",
            tlvs=((Tag.additional_status_info_text, "ok"),),
        ),
        h("0000001a 80000103 00000000 0000000b", "6d3100", "001d 0003 6f6b00"),
    ),
    (
        "query_sm",
        QuerySm(
            sequence_number=12,
            message_id="7f3a9c21",
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
        ),
        h(
            "00000027 00000003 00000000 0000000c",
            "376633613963323100",
            "01 01 333336313233343536373800",
        ),
    ),
    (
        "query_sm_resp",
        QuerySmResp(
            sequence_number=12,
            message_id="7f3a9c21",
            final_date="240601120500000+",
            message_state=MessageState.DELIVERED,
        ),
        h(
            "0000002c 80000003 00000000 0000000c",
            "376633613963323100",
            "3234303630313132 30353030303030 2b 00",  # final_date "240601120500000+"
            "02 00",  # message_state, error_code
        ),
    ),
    (
        "cancel_sm",
        CancelSm(
            sequence_number=13,
            message_id="7f3a9c21",
            source_addr_ton=5,
            source_addr="MyBrand",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="33612345678",
        ),
        h(
            "00000032 00000008 00000000 0000000d",
            "00",  # service_type
            "376633613963323100",  # message_id
            "05 00 4d794272616e6400",
            "01 01 333336313233343536373800",
        ),
    ),
    ("cancel_sm_resp", CancelSmResp(sequence_number=13), h("00000010 80000008 00000000 0000000d")),
    (
        "replace_sm",
        ReplaceSm(
            sequence_number=14,
            message_id="7f3a9c21",
            source_addr_ton=5,
            source_addr="MyBrand",
            validity_period="000001000000000R",
            registered_delivery=1,
            short_message=b"New",
        ),
        h(
            "0000003b 00000007 00000000 0000000e",
            "376633613963323100",  # message_id
            "05 00 4d794272616e6400",  # source ton, npi, addr
            "00",  # schedule_delivery_time
            "30303030303130303030303030303052 00",  # validity_period, relative, one day
            "01 00",  # registered_delivery, sm_default_msg_id
            "03 4e6577",  # sm_length 3, "New"
        ),
    ),
    (
        "replace_sm_resp",
        ReplaceSmResp(sequence_number=14),
        h("00000010 80000007 00000000 0000000e"),
    ),
    (
        "alert_notification",
        AlertNotification(
            sequence_number=15,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            esme_addr="smsmta",
            tlvs=((Tag.ms_availability_status, 0),),
        ),
        h(
            "0000002c 00000102 00000000 0000000f",
            "01 01 333336313233343536373800",
            "00 00 736d736d746100",  # esme_addr_ton, esme_addr_npi, esme_addr
            "0422 0001 00",  # TLV ms_availability_status available
        ),
    ),
]


def test_golden_vectors_cover_every_command() -> None:
    assert {pdu.COMMAND_ID for _, pdu, _ in GOLDEN} == set(CommandId)
    assert set(PDU_CLASSES) == set(CommandId) == set(LAYOUTS)


@pytest.mark.parametrize(
    ("pdu", "wire"), [(p, w) for _, p, w in GOLDEN], ids=[g[0] for g in GOLDEN]
)
def test_golden_vector(pdu: Pdu, wire: bytes) -> None:
    assert struct.unpack(">I", wire[:4])[0] == len(wire), "the vector's own command_length"
    assert encode(pdu) == wire
    assert reference_encode(pdu) == wire
    decoded = decode(wire)
    assert decoded == pdu
    assert type(decoded) is type(pdu)
    assert reference_decode(wire) == pdu
    assert decode(memoryview(wire)) == pdu
    assert decode(bytearray(wire)) == pdu


def test_decoded_values_are_typed() -> None:
    pdu = decode({name: wire for name, _, wire in GOLDEN}["deliver_sm"])
    assert pdu.command_id is CommandId.deliver_sm
    assert pdu.source_addr == "33612345678" and isinstance(pdu.source_addr, str)
    assert isinstance(pdu.short_message, bytes)
    assert pdu.tlvs[0][0] is Tag.receipted_message_id
    assert pdu.tlv(Tag.receipted_message_id) == "7f3a9c21"
    assert pdu.tlv(Tag.message_state) == MessageState.DELIVERED
    assert pdu.tlv(Tag.message_payload) is None
    assert pdu.tlv(Tag.message_payload, b"") == b""
    assert is_delivery_receipt(pdu.esm_class)


# --------------------------------------------------------------------------------------------
# Cross-check against smpplib, an independent implementation
# --------------------------------------------------------------------------------------------


class _SmpplibClient:
    sequence = 0

    def next_sequence(self) -> int:
        return 0


def _smpplib_encode(command: str, sequence: int, **fields: Any) -> bytes:
    smpp = pytest.importorskip("smpplib.smpp")
    pdu = smpp.make_pdu(command, client=_SmpplibClient(), sequence=sequence, **fields)
    pdu.sequence = sequence  # smpplib ignores the keyword when its client has a sequence
    return pdu.generate()


SMPPLIB_CASES = [
    (
        BindTransmitter(
            sequence_number=2,
            system_id="smsmta",
            password="secret",
            system_type="CMT",
            addr_ton=1,
            addr_npi=1,
        ),
        (
            "bind_transmitter",
            {
                "sequence": 2,
                "system_id": "smsmta",
                "password": "secret",
                "system_type": "CMT",
                "interface_version": 0x34,
                "addr_ton": 1,
                "addr_npi": 1,
                "address_range": "",
            },
        ),
    ),
    (
        SubmitSm(
            sequence_number=77,
            source_addr_ton=5,
            source_addr="MyBrand",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr="33612345678",
            registered_delivery=1,
            data_coding=8,
            short_message="Bonjour é".encode("utf-16-be"),
            tlvs=((Tag.user_message_reference, 4242), (Tag.dest_addr_subunit, 1)),
        ),
        (
            "submit_sm",
            {
                "sequence": 77,
                "source_addr_ton": 5,
                "source_addr": "MyBrand",
                "dest_addr_ton": 1,
                "dest_addr_npi": 1,
                "destination_addr": "33612345678",
                "registered_delivery": 1,
                "data_coding": 8,
                "short_message": "Bonjour é".encode("utf-16-be"),
                "user_message_reference": 4242,
                "dest_addr_subunit": 1,
            },
        ),
    ),
    (
        DeliverSm(
            sequence_number=0x7FFFFFFF,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="33612345678",
            destination_addr="36180",
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=b"id:42 sub:001 dlvrd:001 stat:DELIVRD err:000",
            tlvs=((Tag.message_state, 2), (Tag.receipted_message_id, "42")),
        ),
        (
            "deliver_sm",
            {
                "sequence": 0x7FFFFFFF,
                "source_addr_ton": 1,
                "source_addr_npi": 1,
                "source_addr": "33612345678",
                "destination_addr": "36180",
                "esm_class": 4,
                "short_message": b"id:42 sub:001 dlvrd:001 stat:DELIVRD err:000",
                "message_state": 2,
                "receipted_message_id": "42",
            },
        ),
    ),
    (
        SubmitSmResp(sequence_number=77, message_id="0a1b2c3d"),
        ("submit_sm_resp", {"sequence": 77, "message_id": "0a1b2c3d"}),
    ),
    (EnquireLink(sequence_number=3), ("enquire_link", {"sequence": 3})),
    (UnbindResp(sequence_number=4), ("unbind_resp", {"sequence": 4})),
]


@pytest.mark.parametrize(
    ("pdu", "smpplib_args"), SMPPLIB_CASES, ids=[args[0] for _, args in SMPPLIB_CASES]
)
def test_encoding_matches_smpplib(pdu: Pdu, smpplib_args: tuple[str, dict[str, Any]]) -> None:
    command, fields = smpplib_args
    expected = _smpplib_encode(command, **fields)
    assert encode(pdu) == expected
    assert decode(expected) == pdu


def test_smpplib_parses_what_we_encode() -> None:
    smpp = pytest.importorskip("smpplib.smpp")
    pdu = SMPPLIB_CASES[2][0]  # the deliver_sm receipt
    parsed = smpp.parse_pdu(encode(pdu), client=_SmpplibClient())
    assert parsed.command == "deliver_sm"
    assert parsed.sequence == pdu.sequence_number
    assert parsed.source_addr == b"33612345678"
    assert parsed.short_message == pdu.short_message
    assert parsed.receipted_message_id == b"42"
    assert parsed.message_state == 2


# --------------------------------------------------------------------------------------------
# Hypothesis strategies (shared with test_codec_fuzz.py)
# --------------------------------------------------------------------------------------------

_LATIN1 = st.characters(min_codepoint=1, max_codepoint=255)
_UINT = {INT8: 0xFF, INT16: 0xFFFF, INT32: 0xFFFFFFFF}


def latin1_text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(_LATIN1, min_size=min_size, max_size=max_size)


def field_values(field: Field) -> st.SearchStrategy[Any]:
    """Valid values of one declared field, within its limits."""
    if field.kind in _UINT:
        return st.integers(0, _UINT[field.kind])
    if field.kind == CSTRING:
        return latin1_text(field.size - 1)
    if field.kind == TIME:
        return st.one_of(st.just(""), latin1_text(16, 16))
    if field.kind == SM:
        return st.binary(max_size=field.size)
    if field.kind == DEST_ADDRESSES:
        sme = st.builds(SmeAddress, st.integers(0, 255), st.integers(0, 255), latin1_text(20))
        dl = st.builds(DistributionList, latin1_text(20))
        return st.lists(st.one_of(sme, dl), min_size=1, max_size=4).map(tuple)
    if field.kind == UNSUCCESS_SMES:
        sme = st.builds(
            UnsuccessSme,
            st.integers(0, 255),
            st.integers(0, 255),
            latin1_text(20),
            st.integers(0, 0xFFFFFFFF),
        )
        return st.lists(sme, max_size=4).map(tuple)
    raise AssertionError(field.kind)


def _known_tlv(tag: int) -> st.SearchStrategy[tuple[int, Any]]:
    spec = TLVS[tag]
    if spec.kind in _UINT:
        value: st.SearchStrategy[Any] = st.integers(0, _UINT[spec.kind])
    elif spec.kind == CSTRING:
        value = latin1_text(min(spec.max_len - 1, 70))
    else:
        assert spec.kind == OCTETS
        value = st.binary(min_size=spec.min_len, max_size=min(spec.max_len, 300))
    return st.tuples(st.sampled_from([spec.tag, int(spec.tag)]), value)


UNKNOWN_TAGS = st.integers(0, 0xFFFF).filter(lambda tag: tag not in TLVS)
tlv_items = st.one_of(
    st.sampled_from(sorted(TLVS)).flatmap(_known_tlv),
    st.tuples(UNKNOWN_TAGS, st.binary(max_size=40)),
)


def pdus_of(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """Valid PDUs of one class: every field within its limits, TLVs known and unknown."""
    return st.builds(
        cls,
        sequence_number=st.integers(0, 0xFFFFFFFF),
        command_status=st.integers(0, 0xFFFFFFFF),
        tlvs=st.lists(tlv_items, max_size=4).map(tuple),
        **{f.name: field_values(f) for f in cls.FIELDS},
    )


any_pdu = st.sampled_from(list(PDU_CLASSES.values())).flatmap(pdus_of)


@pytest.mark.parametrize("cls", list(PDU_CLASSES.values()), ids=lambda c: c.__name__)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_round_trip(cls: type[Pdu], data: st.DataObject) -> None:
    pdu = data.draw(pdus_of(cls))
    wire = encode(pdu)
    assert wire == reference_encode(pdu)
    assert len(wire) == struct.unpack(">I", wire[:4])[0]
    decoded = decode(wire)
    assert decoded == pdu
    assert reference_decode(wire) == pdu
    assert encode(decoded) == wire
    framer = Framer()
    framer.feed(wire + wire)
    assert list(framer) == [wire, wire]


# --------------------------------------------------------------------------------------------
# Field limits: encode refuses, naming the PDU and the field
# --------------------------------------------------------------------------------------------

# SMPP 3.4 section 4, written out again by hand so that a wrong declaration in pdu.py cannot
# hide behind tests that read their limits from it. C-Octet Strings: octets with the NUL.
SPEC_LIMITS = {
    **{
        (bind, name): size
        for bind in ("bind_transmitter", "bind_receiver", "bind_transceiver")
        for name, size in (
            ("system_id", 16),
            ("password", 9),
            ("system_type", 13),
            ("address_range", 41),
        )
    },
    **{(f"{bind}_resp", "system_id"): 16 for bind in ("bind_transmitter", "bind_receiver")},
    ("bind_transceiver_resp", "system_id"): 16,
    ("outbind", "system_id"): 16,
    ("outbind", "password"): 9,
    **{
        (command, name): size
        for command in ("submit_sm", "deliver_sm")
        for name, size in (
            ("service_type", 6),
            ("source_addr", 21),
            ("destination_addr", 21),
            ("schedule_delivery_time", 17),
            ("validity_period", 17),
            ("short_message", 254),
        )
    },
    ("submit_sm_resp", "message_id"): 65,
    ("deliver_sm_resp", "message_id"): 65,  # "unused, NULL"; tolerated up to 65
    ("submit_multi", "service_type"): 6,
    ("submit_multi", "source_addr"): 21,
    ("submit_multi", "schedule_delivery_time"): 17,
    ("submit_multi", "validity_period"): 17,
    ("submit_multi", "short_message"): 254,
    ("submit_multi_resp", "message_id"): 65,
    ("data_sm", "service_type"): 6,
    ("data_sm", "source_addr"): 65,
    ("data_sm", "destination_addr"): 65,
    ("data_sm_resp", "message_id"): 65,
    ("query_sm", "message_id"): 65,
    ("query_sm", "source_addr"): 21,
    ("query_sm_resp", "message_id"): 65,
    ("query_sm_resp", "final_date"): 17,
    ("cancel_sm", "service_type"): 6,
    ("cancel_sm", "message_id"): 65,
    ("cancel_sm", "source_addr"): 21,
    ("cancel_sm", "destination_addr"): 21,
    ("replace_sm", "message_id"): 65,
    ("replace_sm", "source_addr"): 21,
    ("replace_sm", "schedule_delivery_time"): 17,
    ("replace_sm", "validity_period"): 17,
    ("replace_sm", "short_message"): 254,
    ("alert_notification", "source_addr"): 65,
    ("alert_notification", "esme_addr"): 65,
}

# SMPP 3.4 table 5-3 / section 5.3.2, by hand: (value kind, min length, max length).
SPEC_TLVS = {
    "dest_addr_subunit": (INT8, 1, 1),
    "dest_network_type": (INT8, 1, 1),
    "dest_bearer_type": (INT8, 1, 1),
    "dest_telematics_id": (INT16, 2, 2),
    "source_addr_subunit": (INT8, 1, 1),
    "source_network_type": (INT8, 1, 1),
    "source_bearer_type": (INT8, 1, 1),
    "source_telematics_id": (INT8, 1, 1),
    "qos_time_to_live": (INT32, 4, 4),
    "payload_type": (INT8, 1, 1),
    "additional_status_info_text": (CSTRING, 0, 256),
    "receipted_message_id": (CSTRING, 0, 65),
    "ms_msg_wait_facilities": (INT8, 1, 1),
    "privacy_indicator": (INT8, 1, 1),
    "source_subaddress": (OCTETS, 2, 23),
    "dest_subaddress": (OCTETS, 2, 23),
    "user_message_reference": (INT16, 2, 2),
    "user_response_code": (INT8, 1, 1),
    "source_port": (INT16, 2, 2),
    "destination_port": (INT16, 2, 2),
    "sar_msg_ref_num": (INT16, 2, 2),
    "language_indicator": (INT8, 1, 1),
    "sar_total_segments": (INT8, 1, 1),
    "sar_segment_seqnum": (INT8, 1, 1),
    "sc_interface_version": (INT8, 1, 1),
    "callback_num_pres_ind": (INT8, 1, 1),
    "callback_num_atag": (OCTETS, 0, 65),
    "number_of_messages": (INT8, 1, 1),
    "callback_num": (OCTETS, 4, 19),
    "dpf_result": (INT8, 1, 1),
    "set_dpf": (INT8, 1, 1),
    "ms_availability_status": (INT8, 1, 1),
    "network_error_code": (OCTETS, 3, 3),
    "message_payload": (OCTETS, 0, 65535),
    "delivery_failure_reason": (INT8, 1, 1),
    "more_messages_to_send": (INT8, 1, 1),
    "message_state": (INT8, 1, 1),
    "ussd_service_op": (INT8, 1, 1),
    "display_time": (INT8, 1, 1),
    "sms_signal": (INT16, 2, 2),
    "ms_validity": (INT8, 1, 1),
    "alert_on_message_delivery": (OCTETS, 0, 1),
    "its_reply_type": (INT8, 1, 1),
    "its_session_info": (OCTETS, 2, 2),
}


def test_declared_limits_are_smpp_34() -> None:
    declared = {
        (cls.COMMAND_ID.name, f.name): f.size
        for cls in PDU_CLASSES.values()
        for f in cls.FIELDS
        if f.kind in (CSTRING, TIME, SM)
    }
    assert declared == SPEC_LIMITS
    assert {spec.tag.name: (spec.kind, spec.min_len, spec.max_len) for spec in TLVS.values()} == (
        SPEC_TLVS
    )
    assert (DESTINATION_ADDR.size, DL_NAME.size, DEST_ADDRESS_LIST.size) == (21, 21, 254)
    assert [f.name for f in UNSUCCESS_SME_FIELDS] == [
        "dest_addr_ton",
        "dest_addr_npi",
        "destination_addr",
        "error_status_code",
    ]


def _limited_fields() -> list[tuple[type[Pdu], Field]]:
    return [
        (cls, f)
        for cls in PDU_CLASSES.values()
        for f in cls.FIELDS
        if f.kind in (CSTRING, TIME, SM)
    ]


def _over_limit(field: Field) -> Any:
    if field.kind == CSTRING:
        return "9" * field.size  # one character too many: the NUL needs the last octet
    if field.kind == TIME:
        return "2406011200000000+"  # 17 characters
    return b"x" * (field.size + 1)


def _at_limit(field: Field) -> Any:
    if field.kind == CSTRING:
        return "9" * (field.size - 1)
    if field.kind == TIME:
        return "240601120000000+"
    return b"x" * field.size


@pytest.mark.parametrize(
    ("cls", "field"),
    _limited_fields(),
    ids=[f"{c.COMMAND_ID.name}.{f.name}" for c, f in _limited_fields()],
)
def test_field_over_its_limit_is_refused_by_name(cls: type[Pdu], field: Field) -> None:
    base = {"dest_addresses": (DistributionList("staff"),)} if cls is SubmitMulti else {}
    encode(cls(**base, **{field.name: _at_limit(field)}))  # the limit itself is fine
    pdu = cls(**base, **{field.name: _over_limit(field)})
    with pytest.raises(LocalProtocolError) as caught:
        encode(pdu)
    assert caught.value.field == field.name
    assert f"{cls.COMMAND_ID.name}.{field.name}" in str(caught.value)
    with pytest.raises(LocalProtocolError):
        reference_encode(pdu)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"source_addr": b"3361"}, "source_addr", "must be a str"),
        ({"source_addr": "336\x00"}, "source_addr", "NUL"),
        ({"destination_addr": "+33 6 € 12"}, "destination_addr", "outside Latin-1"),
        ({"validity_period": "240601"}, "validity_period", "empty or 16 characters"),
        ({"schedule_delivery_time": "24060112000000+"}, "schedule_delivery_time", "16"),
        ({"esm_class": 256}, "esm_class", "outside 0..255"),
        ({"esm_class": -1}, "esm_class", "outside 0..255"),
        ({"data_coding": "8"}, "data_coding", "must be an int"),
        ({"data_coding": 8.0}, "data_coding", "must be an int"),
        ({"short_message": "Hello"}, "short_message", "must be bytes"),
        ({"short_message": bytearray(b"Hello")}, "short_message", "must be bytes"),
        ({"sequence_number": 1 << 32}, "sequence_number", "0xFFFFFFFF"),
        ({"command_status": -1}, "command_status", "0xFFFFFFFF"),
        ({"tlvs": ((Tag.sar_total_segments, 256),)}, "sar_total_segments", "outside"),
        ({"tlvs": ((Tag.sar_msg_ref_num, 65536),)}, "sar_msg_ref_num", "outside"),
        ({"tlvs": ((Tag.network_error_code, b"\x03\x00"),)}, "network_error_code", "expected 3"),
        ({"tlvs": ((Tag.receipted_message_id, "x" * 65),)}, "receipted_message_id", "64"),
        ({"tlvs": ((Tag.message_payload, "text"),)}, "message_payload", "must be bytes"),
        ({"tlvs": ((Tag.message_payload, b"x" * 65536),)}, "message_payload", "0..65535"),
        ({"tlvs": ((0x1400, "service"),)}, "0x1400", "must be bytes"),
        ({"tlvs": ((0x10000, b""),)}, "tlvs[0]", "0..0xFFFF"),
        ({"tlvs": ((0x1400,),)}, "tlvs", "(tag, value) pair"),
    ],
)
def test_bad_submit_sm_values_are_refused_by_name(
    changes: dict[str, Any], field: str, words: str
) -> None:
    pdu = SubmitSm(destination_addr="33612345678", short_message=b"hi").replace(**changes)
    with pytest.raises(LocalProtocolError) as caught:
        encode(pdu)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert str(caught.value).startswith("submit_sm.")


def test_submit_multi_list_limits() -> None:
    def fails(**fields: Any) -> str:
        with pytest.raises(LocalProtocolError) as caught:
            encode(SubmitMulti(**fields))
        assert caught.value.field == "dest_addresses"
        return str(caught.value)

    assert "1..254" in fails(dest_addresses=())
    assert "1..254" in fails(dest_addresses=(DistributionList("a"),) * 255)
    assert "dest_addresses[0].destination_addr" in fails(
        dest_addresses=(SmeAddress(1, 1, "3" * 21),)
    )
    assert "dest_addresses[1].dl_name" in fails(
        dest_addresses=(SmeAddress(1, 1, "3"), DistributionList("d" * 21))
    )
    assert "SmeAddress or a DistributionList" in fails(dest_addresses=((1, 1, "336"),))
    encode(SubmitMulti(dest_addresses=(DistributionList("a"),) * 254))

    with pytest.raises(LocalProtocolError, match=r"unsuccess_smes\[0\].error_status_code"):
        encode(SubmitMultiResp(unsuccess_smes=(UnsuccessSme(1, 1, "336", 1 << 32),)))
    with pytest.raises(LocalProtocolError, match="at most 255"):
        encode(SubmitMultiResp(unsuccess_smes=(UnsuccessSme(1, 1, "336", 0),) * 256))


def test_encode_refuses_what_is_not_a_pdu() -> None:
    with pytest.raises(LocalProtocolError, match="not an SMPP PDU"):
        encode((4, 0, 1))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="not an SMPP PDU"):
        reference_encode("submit_sm")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Decode errors: the right status, the header when readable, framing kept
# --------------------------------------------------------------------------------------------


def _frame(command_id: int, body: bytes, *, status: int = 0, seq: int = 42) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


SUBMIT_SM_BODY = h(
    "00 0101 333336313233343536373800 0101 333336393837363534333200",
    "000000 00 00 01000000",
    "02 6869",
)


def _decode_error(frame: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        decode(frame)
    error = caught.value
    with pytest.raises(RemoteProtocolError) as again:
        reference_decode(frame)
    assert again.value.command_status == error.command_status
    return error


def _case_id(value: Any) -> str:
    if isinstance(value, bytes):
        command_id = struct.unpack(">I", value[4:8])[0]
        return CommandId(command_id).name if command_id in PDU_CLASSES else f"0x{command_id:X}"
    if isinstance(value, int):
        return status_name(value)
    return str(value)


def test_submit_sm_body_fixture_is_valid() -> None:
    pdu = decode(_frame(CommandId.submit_sm, SUBMIT_SM_BODY))
    assert pdu.short_message == b"hi"
    assert pdu.destination_addr == "33698765432"


@pytest.mark.parametrize(
    ("frame", "status", "field"),
    [
        # unknown command_id: generic_nack territory, framing kept
        (_frame(0x00000099, b""), CommandStatus.ESME_RINVCMDID, None),
        (_frame(0x80000099, b"\x00"), CommandStatus.ESME_RINVCMDID, None),
        # body ends before a field / inside a short field
        (_frame(CommandId.submit_sm, SUBMIT_SM_BODY[:17]), CommandStatus.ESME_RINVCMDLEN, None),
        (_frame(CommandId.submit_sm, b""), CommandStatus.ESME_RINVCMDLEN, "service_type"),
        (_frame(CommandId.submit_sm_resp, b"abc"), CommandStatus.ESME_RINVCMDLEN, "message_id"),
        (_frame(CommandId.submit_sm_resp, b""), CommandStatus.ESME_RINVCMDLEN, "message_id"),
        (_frame(CommandId.bind_transmitter, h("6100 00 00")), CommandStatus.ESME_RINVCMDLEN, None),
        # C-Octet String over its maximum, with or without its NUL
        (
            _frame(CommandId.submit_sm, h("00 0101") + b"3" * 21 + SUBMIT_SM_BODY[14:]),
            CommandStatus.ESME_RINVSRCADR,
            "source_addr",
        ),
        (_frame(CommandId.submit_sm_resp, b"m" * 70), CommandStatus.ESME_RINVMSGID, "message_id"),
        (_frame(CommandId.bind_transmitter, b"s" * 16 + b"\0"), CommandStatus.ESME_RINVSYSID, None),
        (_frame(CommandId.bind_transmitter, h("00") + b"p" * 9 + b"\0"), 0x0E, "password"),
        # SMPP times must be empty or 16 characters
        (
            _frame(CommandId.submit_sm, SUBMIT_SM_BODY[:32] + b"2406\0" + SUBMIT_SM_BODY[33:]),
            CommandStatus.ESME_RINVSCHED,
            "schedule_delivery_time",
        ),
        # sm_length past the end, or over 254
        (_frame(CommandId.submit_sm, SUBMIT_SM_BODY[:-1]), CommandStatus.ESME_RINVMSGLEN, None),
        (
            _frame(CommandId.submit_sm, SUBMIT_SM_BODY[:-3] + b"\xff" + b"x" * 255),
            CommandStatus.ESME_RINVMSGLEN,
            "sm_length",
        ),
        # TLVs: header cut, value past the end, wrong length, bad C-Octet String value
        (
            _frame(CommandId.submit_sm, SUBMIT_SM_BODY + h("0204")),
            CommandStatus.ESME_RINVOPTPARSTREAM,
            None,
        ),
        (
            _frame(CommandId.submit_sm, SUBMIT_SM_BODY + h("0424 0010 0102")),
            CommandStatus.ESME_RINVOPTPARSTREAM,
            "message_payload",
        ),
        (
            _frame(CommandId.deliver_sm, SUBMIT_SM_BODY + h("0427 0002 0002")),
            CommandStatus.ESME_RINVPARLEN,
            "message_state",
        ),
        (
            _frame(CommandId.deliver_sm, SUBMIT_SM_BODY + h("0423 0002 0300")),
            CommandStatus.ESME_RINVPARLEN,
            "network_error_code",
        ),
        (
            _frame(CommandId.deliver_sm, SUBMIT_SM_BODY + h("001e 0004 61006200")),
            CommandStatus.ESME_RINVOPTPARAMVAL,
            "receipted_message_id",
        ),
        (
            _frame(CommandId.deliver_sm, SUBMIT_SM_BODY + h("001e 0041") + b"r" * 65),
            CommandStatus.ESME_RINVPARLEN,
            "receipted_message_id",
        ),
        # submit_multi lists
        (
            _frame(CommandId.submit_multi, h("00 0000 00 00")),
            CommandStatus.ESME_RINVNUMDESTS,
            "number_of_dests",
        ),
        (
            _frame(CommandId.submit_multi, h("00 0000 00 01 03")),
            CommandStatus.ESME_RINVDESTFLAG,
            "dest_flag",
        ),
        (
            _frame(CommandId.submit_multi, h("00 0000 00 01 02") + b"d" * 21 + b"\0"),
            CommandStatus.ESME_RINVDLNAME,
            "dl_name",
        ),
    ],
    ids=_case_id,
)
def test_bad_body_raises_remote_error_with_status(
    frame: bytes, status: int, field: str | None
) -> None:
    error = _decode_error(frame)
    assert error.command_status == status, error
    assert error.sequence_number == 42
    assert error.command_id == struct.unpack(">I", frame[4:8])[0]
    assert error.framing_lost is False
    if field is not None:
        assert error.field == field
        assert field in str(error)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        h("00000010 00000015 00000000"),  # 12 octets
        h("0000000f 00000015 00000000 00000001"),  # command_length under the header
        h("00000011 00000015 00000000 00000001"),  # says 17, frame is 16
        h("00000010 00000015 00000000 00000001 00"),  # says 16, frame is 17
    ],
)
def test_impossible_command_length_loses_framing(frame: bytes) -> None:
    error = _decode_error(frame)
    assert error.command_status == CommandStatus.ESME_RINVCMDLEN
    assert error.framing_lost is True
    if len(frame) >= 16:
        assert error.sequence_number == 1
        assert error.command_id == CommandId.enquire_link
    else:
        assert error.sequence_number is None and error.command_id is None


def test_error_response_without_body_is_accepted() -> None:
    # SMPP 3.4 4.4.2: "The submit_sm_resp PDU Body is not returned if the command_status
    # field contains a non-zero value."
    frame = _frame(CommandId.submit_sm_resp, b"", status=CommandStatus.ESME_RTHROTTLED, seq=9)
    pdu = decode(frame)
    assert pdu == SubmitSmResp(sequence_number=9, command_status=0x58)
    assert is_throttling(pdu.command_status)
    assert decode(_frame(CommandId.bind_transceiver_resp, b"", status=0x0D)).system_id == ""
    # ...but a successful response must carry its body
    assert _decode_error(_frame(CommandId.submit_sm_resp, b"")).command_status == 0x02


def test_tolerated_input() -> None:
    # receipted_message_id without its NUL (seen from real SMSCs), and empty
    frame = _frame(CommandId.deliver_sm, SUBMIT_SM_BODY + h("001e 0003 616263 001e 0000"))
    assert decode(frame).tlvs == ((Tag.receipted_message_id, "abc"), (Tag.receipted_message_id, ""))
    # TLVs after a response's body (SMPP 5.0 peers), unknown tags kept raw, in order
    frame = _frame(CommandId.submit_sm_resp, h("6100 001d 0003 6f6b00 1501 0002 abcd"))
    pdu = decode(frame)
    assert pdu.tlvs == ((Tag.additional_status_info_text, "ok"), (0x1501, b"\xab\xcd"))
    # any octet survives in a C-Octet String (Latin-1 maps every octet)
    frame = _frame(CommandId.submit_sm_resp, b"\xe9\xff\x01\0")
    assert decode(frame).message_id == "\xe9\xff\x01"
    assert encode(decode(frame)) == frame


def test_decode_raises_nothing_but_remote_errors_on_garbage() -> None:
    for frame in (b"\x00" * 16, b"\xff" * 40, _frame(CommandId.submit_sm, b"\xff" * 40)):
        with pytest.raises(RemoteProtocolError):
            decode(frame)


# --------------------------------------------------------------------------------------------
# The Framer
# --------------------------------------------------------------------------------------------

WIRES = [w for _, _, w in GOLDEN]


def test_framer_splits_a_stream_however_it_is_chunked() -> None:
    stream = b"".join(WIRES)
    for chunk in (1, 2, 3, 7, 16, 17, 100, len(stream)):
        framer = Framer()
        frames: list[bytes] = []
        for start in range(0, len(stream), chunk):
            framer.feed(stream[start : start + chunk])
            frames.extend(framer)
        assert frames == WIRES, chunk
        assert framer.buffered == 0
        assert framer.next_frame() is None


def test_framer_waits_for_the_whole_pdu() -> None:
    framer = Framer()
    wire = WIRES[-1]
    framer.feed(wire[:-1])
    assert framer.next_frame() is None
    assert framer.buffered == len(wire) - 1
    framer.feed(wire[-1:] + wire[:3])
    assert framer.next_frame() == wire
    assert framer.next_frame() is None
    assert framer.buffered == 3


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (h("0000000f 00000004 00000000 00000005"), "under the 16-octet header"),
        (h("00000000 00000004 00000000 00000005"), "under the 16-octet header"),
        (h("00011001 00000004 00000000 00000005"), "over the maximum of 69632"),
        (h("ffffffff 00000004 00000000 00000005"), "over the maximum"),
    ],
)
def test_framer_loses_framing_on_impossible_length(header: bytes, words: str) -> None:
    framer = Framer()
    framer.feed(WIRES[0] + header[:15])
    assert framer.next_frame() == WIRES[0]
    assert framer.next_frame() is None  # judged on a whole header only
    framer.feed(header[15:] + b"more")
    with pytest.raises(RemoteProtocolError, match=words) as caught:
        framer.next_frame()
    error = caught.value
    assert error.framing_lost is True
    assert error.command_status == CommandStatus.ESME_RINVCMDLEN
    assert error.sequence_number == 5
    assert error.command_id == CommandId.submit_sm
    # it stays broken: the stream cannot be resynchronised
    with pytest.raises(RemoteProtocolError):
        framer.next_frame()
    with pytest.raises(RemoteProtocolError):
        framer.feed(WIRES[0])
    assert error_response(error) == GenericNack(sequence_number=5, command_status=0x02)


def test_framer_maximum_is_configurable() -> None:
    big = encode(DataSm(tlvs=((Tag.message_payload, b"x" * 60000),)))
    framer = Framer()
    framer.feed(big)
    assert framer.next_frame() == big
    small = Framer(max_command_length=1024)
    small.feed(big)
    with pytest.raises(RemoteProtocolError, match="over the maximum of 1024"):
        small.next_frame()
    with pytest.raises(ValueError):
        Framer(max_command_length=15)


# --------------------------------------------------------------------------------------------
# PDU values and helpers
# --------------------------------------------------------------------------------------------


def test_every_request_has_its_response() -> None:
    for command_id, cls in PDU_CLASSES.items():
        if is_response(command_id) or command_id in (
            CommandId.outbind,
            CommandId.alert_notification,
        ):
            assert cls.RESPONSE is None, cls
        else:
            assert cls.RESPONSE is PDU_CLASSES[command_id | 0x80000000], cls


def test_make_resp() -> None:
    submit = SubmitSm(sequence_number=77, destination_addr="336")
    resp = submit.make_resp(message_id="abc")
    assert resp == SubmitSmResp(sequence_number=77, message_id="abc")
    throttled = submit.make_resp(command_status=CommandStatus.ESME_RTHROTTLED)
    assert throttled.command_status == 0x58 and throttled.message_id == ""
    assert EnquireLink(sequence_number=5).make_resp() == EnquireLinkResp(sequence_number=5)
    assert BindTransceiver(sequence_number=1).make_resp(system_id="SMSC").system_id == "SMSC"
    for no_resp in (resp, GenericNack(), Outbind(), AlertNotification(), UnbindResp()):
        with pytest.raises(LocalProtocolError, match="has no response"):
            no_resp.make_resp()
    with pytest.raises(TypeError):
        submit.make_resp(no_such_field=1)


def test_pdu_values_are_immutable_and_compare_by_command() -> None:
    submit = SubmitSm(sequence_number=1, short_message=b"a", tlvs=[(Tag.source_port, 1)])
    assert submit.tlvs == ((Tag.source_port, 1),)  # a list becomes a tuple
    as_dict = SubmitSm(tlvs={Tag.source_port: 1, 0x1400: b"x"})
    assert as_dict.tlvs == ((Tag.source_port, 1), (0x1400, b"x"))  # so does a dict
    with pytest.raises(AttributeError):
        submit.short_message = b"b"  # type: ignore[misc]
    assert BindTransmitter(system_id="x") != BindReceiver(system_id="x")
    assert Unbind(sequence_number=1) != UnbindResp(sequence_number=1)
    assert hash(submit) == hash(SubmitSm(sequence_number=1, short_message=b"a", tlvs=[(0x20A, 1)]))
    assert copy.deepcopy(submit) == submit
    assert pickle.loads(pickle.dumps(submit)) == submit
    with pytest.raises(TypeError):
        SubmitSm(1)  # type: ignore[misc]  # keywords only
    with pytest.raises(TypeError):
        SubmitSm(no_such_field=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Pdu()


def test_replace_and_with_sequence_number() -> None:
    submit = SubmitSm(sequence_number=1, source_addr="A", short_message=b"a")
    assert submit.with_sequence_number(9) == SubmitSm(
        sequence_number=9, source_addr="A", short_message=b"a"
    )
    changed = submit.replace(source_addr="B", command_status=3)
    assert (changed.source_addr, changed.command_status, changed.short_message) == ("B", 3, b"a")
    assert submit.source_addr == "A"
    with pytest.raises(TypeError, match="no field"):
        submit.replace(nope=1)
    assert submit.asdict()["source_addr"] == "A"
    assert "source_addr='A'" in repr(submit)
    assert repr(GenericNack(sequence_number=3, command_status=3)) == (
        "GenericNack(sequence_number=3, command_status=0x00000003)"
    )


def test_interface_version_defaults_to_34() -> None:
    assert BindTransceiver().interface_version == 0x34


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            RemoteProtocolError("x", command_status=0x03, sequence_number=4, command_id=0x99),
            GenericNack(sequence_number=4, command_status=0x03),
        ),
        (
            RemoteProtocolError("x", command_status=0x02, framing_lost=True),
            GenericNack(sequence_number=0, command_status=0x02),
        ),
        (
            RemoteProtocolError("x", command_status=0x0A, sequence_number=4, command_id=0x04),
            SubmitSmResp(sequence_number=4, command_status=0x0A),
        ),
        (
            RemoteProtocolError("x", command_status=0xC2, sequence_number=5, command_id=0x05),
            DeliverSmResp(sequence_number=5, command_status=0xC2),
        ),
        (
            RemoteProtocolError("x", command_status=0x02, sequence_number=5, command_id=0x80000004),
            None,
        ),
        (RemoteProtocolError("x", command_status=0x02, sequence_number=5, command_id=0x102), None),
    ],
)
def test_error_response(error: RemoteProtocolError, expected: Pdu | None) -> None:
    assert error_response(error) == expected


def test_error_response_for_a_decoded_bad_deliver_sm() -> None:
    error = _decode_error(_frame(CommandId.deliver_sm, SUBMIT_SM_BODY + h("0427 0000")))
    answer = error_response(error)
    assert answer == DeliverSmResp(sequence_number=42, command_status=CommandStatus.ESME_RINVPARLEN)
    assert decode(encode(answer)) == answer  # type: ignore[arg-type]


def test_generic_nack_builder_and_errors() -> None:
    assert generic_nack(3, 0x03) == GenericNack(sequence_number=3, command_status=0x03)
    assert issubclass(LocalProtocolError, SmppError)
    assert issubclass(RemoteProtocolError, SmppError)
    error = RemoteProtocolError("bad", command_status=0x03, sequence_number=1, command_id=0x99)
    assert "0x00000003" in repr(error) and "0x00000099" in repr(error)


def test_constants() -> None:
    assert is_throttling(0x58) and is_throttling(0x14)
    assert not is_throttling(0) and not is_throttling(0x45)
    assert status_name(0x58) == "ESME_RTHROTTLED"
    assert status_name(CommandStatus.ESME_RMSGQFUL) == "ESME_RMSGQFUL"
    assert status_name(0x401) == "0x00000401"
    assert CommandStatus.ESME_RINVOPTPARAMVAL == 0xC4
    assert is_response(CommandId.generic_nack) and not is_response(CommandId.submit_sm)
    assert is_delivery_receipt(0x04) and is_delivery_receipt(0x44) and is_delivery_receipt(0x20)
    assert not is_delivery_receipt(0x40) and not is_delivery_receipt(0x08)
    assert [int(s) for s in MessageState] == list(range(1, 9))
    assert set(TLVS) == set(Tag)


def test_generated_code_is_inspectable() -> None:
    source = codec._ENCODERS[SubmitSm].__source__  # type: ignore[attr-defined]
    assert "def encode_submit_sm(pdu):" in source
    assert "for " not in source  # straight-line: no per-field loop on the hot path
    source = codec._DECODERS[CommandId.deliver_sm].__source__  # type: ignore[attr-defined]
    assert "for " not in source
