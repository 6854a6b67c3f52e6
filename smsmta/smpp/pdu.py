"""Every SMPP 3.4 PDU's layout, declared once as data, and the PDU value classes built from it.

What it does:

- `LAYOUTS` maps each `CommandId` to the ordered mandatory fields of its body, each a
  `Field` (name, kind, size, status[, default]), like Kannel's ``smpp_pdu.def`` and
  smppex's ``mandatory_fields_specs``. ``size`` is the C-Octet String maximum *including*
  its NUL (SMPP 3.4 section 5.2: system_id 16, password 9, source_addr 21...), or the
  maximum octets of ``short_message`` (254), or the maximum entries of a submit_multi list.
  ``status`` is the command_status that answers an invalid value of that field
  (ESME_RINVSRCADR for source_addr...). Derived length/count fields (``sm_length``,
  ``number_of_dests``, ``no_unsuccess``) are not stored: they are computed from the data,
  so they can never disagree with it.
- `TLVS` maps each SMPP 3.4 optional parameter tag to its `TlvSpec` (kind and length
  bounds). Known tags decode to typed values: ints for Integer TLVs, ``str`` for C-Octet
  String TLVs (receipted_message_id...), ``bytes`` for octet strings (message_payload,
  network_error_code: exactly 3 octets...). Unknown (vendor) tags keep raw ``bytes``.
- One class per command (`SubmitSm`, `SubmitSmResp`, `DeliverSm`, `GenericNack`, ...),
  generated from `LAYOUTS`, registered in `PDU_CLASSES` by command_id.

Contract of a PDU value:

- Immutable and hashable; built with keywords only, every field defaulting to 0 / "" / b""
  / () (``interface_version`` to 0x34): ``SubmitSm(sequence_number=7, source_addr="TEST",
  destination_addr="33600000000", short_message=b"hi", tlvs=((Tag.user_message_reference,
  42),))``. Field values are *not* checked at construction: `smsmta.smpp.codec.encode` checks them
  all and raises `LocalProtocolError` naming the field.
- Attributes: ``command_id`` (a `CommandId`), ``command_status`` and ``sequence_number``
  (ints), one attribute per body field, and ``tlvs``: a tuple of ``(tag, value)`` pairs in
  wire order (duplicates kept; a list or a dict given to the constructor is converted).
  ``pdu.tlv(Tag.message_state)`` returns the first value of a tag (or a default). C-Octet
  Strings are ``str`` mapped byte-for-byte through Latin-1, so any octet a peer sends
  survives a decode/encode round trip; ``short_message`` is bytes.
- ``make_resp(command_status=..., **fields)`` builds the matching ``_resp`` with the same
  sequence_number; ``with_sequence_number(n)`` and ``replace(**changes)`` return copies.
  `error_response` turns a `RemoteProtocolError` into the PDU SMPP says to answer with.
- Equality compares the command_id too, so a BindTransmitter never equals a BindReceiver.

Why tuples: a PDU is a ``tuple`` subclass (``__slots__ = ()``) whose fields are C-level
index descriptors, laid out ``(command_id, command_status, sequence_number, *body, tlvs)``.
Measured on the bench machine (Python 3.11, 21 fields): ``tuple.__new__(cls, values)``
5.0 M/s, a slots dataclass 3.3 M/s, a frozen slots dataclass 0.33 M/s (its ``__init__``
goes through ``object.__setattr__`` per field). The decoder builds the value in one C call
and the encoder unpacks it in one; that is most of why the codec reaches its speed target.
Positional indexing is an implementation detail: use the names.

Touches nothing: no I/O, no clock, no logging. Why our own and not smpplib: see codec.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from smsmta.smpp.constants import RESPONSE_BIT, SMPP_VERSION_34, CommandId, Tag
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import LocalProtocolError, RemoteProtocolError

try:  # the C descriptor behind collections.namedtuple's fields: the fastest attribute access
    from collections import _tuplegetter  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    from operator import itemgetter

    def _tuplegetter(index: int, doc: str) -> Any:
        return property(itemgetter(index), doc=doc)


# --------------------------------------------------------------------------------------------
# Field kinds
# --------------------------------------------------------------------------------------------

INT8 = "int8"  # 1-octet unsigned Integer
INT16 = "int16"  # 2-octet unsigned Integer, big-endian
INT32 = "int32"  # 4-octet unsigned Integer, big-endian
CSTRING = "cstring"  # C-Octet String, NUL-terminated; size = max octets including the NUL
TIME = "time"  # C-Octet String holding an SMPP time: empty or exactly 16 characters (size 17)
SM = "sm"  # Octet String preceded by its 1-octet length (sm_length); size = max octets
DEST_ADDRESSES = "dest_addresses"  # submit_multi: number_of_dests, then that many dest_address
UNSUCCESS_SMES = "unsuccess_smes"  # submit_multi_resp: no_unsuccess, then unsuccess_sme entries
OCTETS = "octets"  # TLV only: Octet String of min_len..max_len octets

_INT_KINDS = {INT8: 0xFF, INT16: 0xFFFF, INT32: 0xFFFFFFFF}


class Field(NamedTuple):
    """One mandatory body field: how it is laid out and what answers an invalid value."""

    name: str
    kind: str
    size: int
    status: int
    default: Any = None

    def default_value(self) -> Any:
        if self.default is not None:
            return self.default
        if self.kind in _INT_KINDS:
            return 0
        if self.kind in (CSTRING, TIME):
            return ""
        if self.kind == SM:
            return b""
        return ()


class TlvSpec(NamedTuple):
    """An optional parameter: its value kind and the bounds of its length field."""

    tag: Tag
    kind: str  # INT8 | INT16 | INT32 | CSTRING | OCTETS
    min_len: int
    max_len: int  # for CSTRING: including the NUL


# --------------------------------------------------------------------------------------------
# submit_multi's repeated structures
# --------------------------------------------------------------------------------------------


class SmeAddress(NamedTuple):
    """submit_multi dest_address with dest_flag 1 (SME address)."""

    dest_addr_ton: int
    dest_addr_npi: int
    destination_addr: str


class DistributionList(NamedTuple):
    """submit_multi dest_address with dest_flag 2 (distribution list name)."""

    dl_name: str


class UnsuccessSme(NamedTuple):
    """submit_multi_resp unsuccess_sme: a destination the SMSC refused, and why."""

    dest_addr_ton: int
    dest_addr_npi: int
    destination_addr: str
    error_status_code: int


# --------------------------------------------------------------------------------------------
# The declarations (SMPP 3.4 sections 4 and 5.2)
# --------------------------------------------------------------------------------------------

F = Field
SYSTEM_ID = F("system_id", CSTRING, 16, S.ESME_RINVSYSID)
PASSWORD = F("password", CSTRING, 9, S.ESME_RINVPASWD)
SYSTEM_TYPE = F("system_type", CSTRING, 13, S.ESME_RINVSYSTYP)
INTERFACE_VERSION = F("interface_version", INT8, 1, S.ESME_RBINDFAIL, SMPP_VERSION_34)
ADDR_TON = F("addr_ton", INT8, 1, S.ESME_RBINDFAIL)
ADDR_NPI = F("addr_npi", INT8, 1, S.ESME_RBINDFAIL)
ADDRESS_RANGE = F("address_range", CSTRING, 41, S.ESME_RBINDFAIL)
SERVICE_TYPE = F("service_type", CSTRING, 6, S.ESME_RINVSERTYP)
SOURCE_ADDR_TON = F("source_addr_ton", INT8, 1, S.ESME_RINVSRCTON)
SOURCE_ADDR_NPI = F("source_addr_npi", INT8, 1, S.ESME_RINVSRCNPI)
SOURCE_ADDR = F("source_addr", CSTRING, 21, S.ESME_RINVSRCADR)
SOURCE_ADDR_65 = F("source_addr", CSTRING, 65, S.ESME_RINVSRCADR)  # data_sm, alert_notification
DEST_ADDR_TON = F("dest_addr_ton", INT8, 1, S.ESME_RINVDSTTON)
DEST_ADDR_NPI = F("dest_addr_npi", INT8, 1, S.ESME_RINVDSTNPI)
DESTINATION_ADDR = F("destination_addr", CSTRING, 21, S.ESME_RINVDSTADR)
DESTINATION_ADDR_65 = F("destination_addr", CSTRING, 65, S.ESME_RINVDSTADR)  # data_sm
ESM_CLASS = F("esm_class", INT8, 1, S.ESME_RINVESMCLASS)
PROTOCOL_ID = F("protocol_id", INT8, 1, S.ESME_RSYSERR)
PRIORITY_FLAG = F("priority_flag", INT8, 1, S.ESME_RINVPRTFLG)
SCHEDULE_DELIVERY_TIME = F("schedule_delivery_time", TIME, 17, S.ESME_RINVSCHED)
VALIDITY_PERIOD = F("validity_period", TIME, 17, S.ESME_RINVEXPIRY)
REGISTERED_DELIVERY = F("registered_delivery", INT8, 1, S.ESME_RINVREGDLVFLG)
REPLACE_IF_PRESENT_FLAG = F("replace_if_present_flag", INT8, 1, S.ESME_RINVREPFLAG)
DATA_CODING = F("data_coding", INT8, 1, S.ESME_RSYSERR)
SM_DEFAULT_MSG_ID = F("sm_default_msg_id", INT8, 1, S.ESME_RINVDFTMSGID)
SHORT_MESSAGE = F("short_message", SM, 254, S.ESME_RINVMSGLEN)  # sm_length precedes it
MESSAGE_ID = F("message_id", CSTRING, 65, S.ESME_RINVMSGID)
# deliver_sm_resp message_id is "unused, set to NULL"; 65 tolerates ESMEs that echo an id.
DELIVER_SM_RESP_MESSAGE_ID = F("message_id", CSTRING, 65, S.ESME_RINVMSGID)
FINAL_DATE = F("final_date", TIME, 17, S.ESME_RSYSERR)
MESSAGE_STATE = F("message_state", INT8, 1, S.ESME_RSYSERR)
ERROR_CODE = F("error_code", INT8, 1, S.ESME_RSYSERR)
ESME_ADDR_TON = F("esme_addr_ton", INT8, 1, S.ESME_RINVDSTTON)
ESME_ADDR_NPI = F("esme_addr_npi", INT8, 1, S.ESME_RINVDSTNPI)
ESME_ADDR = F("esme_addr", CSTRING, 65, S.ESME_RINVDSTADR)
# number_of_dests (1 octet, 1..254) then the dest_address structures below.
DEST_ADDRESS_LIST = F("dest_addresses", DEST_ADDRESSES, 254, S.ESME_RINVNUMDESTS)
# no_unsuccess (1 octet) then the unsuccess_sme structures below.
UNSUCCESS_SME_LIST = F("unsuccess_smes", UNSUCCESS_SMES, 255, S.ESME_RSYSERR)

#: dest_flag, then by flag: 1 -> SME_ADDRESS_FIELDS (SmeAddress), 2 -> DL_NAME (DistributionList).
DEST_FLAG = F("dest_flag", INT8, 1, S.ESME_RINVDESTFLAG)
SME_ADDRESS_FIELDS = (DEST_ADDR_TON, DEST_ADDR_NPI, DESTINATION_ADDR)
DL_NAME = F("dl_name", CSTRING, 21, S.ESME_RINVDLNAME)
UNSUCCESS_SME_FIELDS = (
    DEST_ADDR_TON,
    DEST_ADDR_NPI,
    DESTINATION_ADDR,
    F("error_status_code", INT32, 4, S.ESME_RSYSERR),
)
del F

_BIND = (SYSTEM_ID, PASSWORD, SYSTEM_TYPE, INTERFACE_VERSION, ADDR_TON, ADDR_NPI, ADDRESS_RANGE)
# submit_sm, deliver_sm and submit_multi: the source, the destination(s), then the message.
_SM_SOURCE = (SERVICE_TYPE, SOURCE_ADDR_TON, SOURCE_ADDR_NPI, SOURCE_ADDR)
_SM_MESSAGE = (
    ESM_CLASS,
    PROTOCOL_ID,
    PRIORITY_FLAG,
    SCHEDULE_DELIVERY_TIME,
    VALIDITY_PERIOD,
    REGISTERED_DELIVERY,
    REPLACE_IF_PRESENT_FLAG,
    DATA_CODING,
    SM_DEFAULT_MSG_ID,
    SHORT_MESSAGE,
)
_SM = (*_SM_SOURCE, DEST_ADDR_TON, DEST_ADDR_NPI, DESTINATION_ADDR, *_SM_MESSAGE)

C = CommandId
#: Mandatory body fields of every PDU, in wire order (SMPP 3.4 section 4).
LAYOUTS: dict[CommandId, tuple[Field, ...]] = {
    C.generic_nack: (),
    C.bind_receiver: _BIND,
    C.bind_receiver_resp: (SYSTEM_ID,),
    C.bind_transmitter: _BIND,
    C.bind_transmitter_resp: (SYSTEM_ID,),
    C.bind_transceiver: _BIND,
    C.bind_transceiver_resp: (SYSTEM_ID,),
    C.outbind: (SYSTEM_ID, PASSWORD),
    C.unbind: (),
    C.unbind_resp: (),
    C.enquire_link: (),
    C.enquire_link_resp: (),
    C.submit_sm: _SM,
    C.submit_sm_resp: (MESSAGE_ID,),
    C.deliver_sm: _SM,
    C.deliver_sm_resp: (DELIVER_SM_RESP_MESSAGE_ID,),
    C.submit_multi: (*_SM_SOURCE, DEST_ADDRESS_LIST, *_SM_MESSAGE),
    C.submit_multi_resp: (MESSAGE_ID, UNSUCCESS_SME_LIST),
    C.data_sm: (
        SERVICE_TYPE,
        SOURCE_ADDR_TON,
        SOURCE_ADDR_NPI,
        SOURCE_ADDR_65,
        DEST_ADDR_TON,
        DEST_ADDR_NPI,
        DESTINATION_ADDR_65,
        ESM_CLASS,
        REGISTERED_DELIVERY,
        DATA_CODING,
    ),
    C.data_sm_resp: (MESSAGE_ID,),
    C.query_sm: (MESSAGE_ID, SOURCE_ADDR_TON, SOURCE_ADDR_NPI, SOURCE_ADDR),
    C.query_sm_resp: (MESSAGE_ID, FINAL_DATE, MESSAGE_STATE, ERROR_CODE),
    C.cancel_sm: (
        SERVICE_TYPE,
        MESSAGE_ID,
        SOURCE_ADDR_TON,
        SOURCE_ADDR_NPI,
        SOURCE_ADDR,
        DEST_ADDR_TON,
        DEST_ADDR_NPI,
        DESTINATION_ADDR,
    ),
    C.cancel_sm_resp: (),
    C.replace_sm: (
        MESSAGE_ID,
        SOURCE_ADDR_TON,
        SOURCE_ADDR_NPI,
        SOURCE_ADDR,
        SCHEDULE_DELIVERY_TIME,
        VALIDITY_PERIOD,
        REGISTERED_DELIVERY,
        SM_DEFAULT_MSG_ID,
        SHORT_MESSAGE,
    ),
    C.replace_sm_resp: (),
    C.alert_notification: (
        SOURCE_ADDR_TON,
        SOURCE_ADDR_NPI,
        SOURCE_ADDR_65,
        ESME_ADDR_TON,
        ESME_ADDR_NPI,
        ESME_ADDR,
    ),
}

#: Requests SMPP 3.4 answers with no response of their own: outbind is answered by a bind,
#: alert_notification by nothing. Every other request has ``command_id | 0x80000000``.
NO_RESPONSE = frozenset({C.outbind, C.alert_notification})
del C

T = TlvSpec
_TLV_LIST = (
    T(Tag.dest_addr_subunit, INT8, 1, 1),
    T(Tag.dest_network_type, INT8, 1, 1),
    T(Tag.dest_bearer_type, INT8, 1, 1),
    T(Tag.dest_telematics_id, INT16, 2, 2),
    T(Tag.source_addr_subunit, INT8, 1, 1),
    T(Tag.source_network_type, INT8, 1, 1),
    T(Tag.source_bearer_type, INT8, 1, 1),
    T(Tag.source_telematics_id, INT8, 1, 1),
    T(Tag.qos_time_to_live, INT32, 4, 4),
    T(Tag.payload_type, INT8, 1, 1),
    T(Tag.additional_status_info_text, CSTRING, 0, 256),
    T(Tag.receipted_message_id, CSTRING, 0, 65),
    T(Tag.ms_msg_wait_facilities, INT8, 1, 1),
    T(Tag.privacy_indicator, INT8, 1, 1),
    T(Tag.source_subaddress, OCTETS, 2, 23),
    T(Tag.dest_subaddress, OCTETS, 2, 23),
    T(Tag.user_message_reference, INT16, 2, 2),
    T(Tag.user_response_code, INT8, 1, 1),
    T(Tag.source_port, INT16, 2, 2),
    T(Tag.destination_port, INT16, 2, 2),
    T(Tag.sar_msg_ref_num, INT16, 2, 2),
    T(Tag.language_indicator, INT8, 1, 1),
    T(Tag.sar_total_segments, INT8, 1, 1),
    T(Tag.sar_segment_seqnum, INT8, 1, 1),
    T(Tag.sc_interface_version, INT8, 1, 1),
    T(Tag.callback_num_pres_ind, INT8, 1, 1),
    T(Tag.callback_num_atag, OCTETS, 0, 65),
    T(Tag.number_of_messages, INT8, 1, 1),
    T(Tag.callback_num, OCTETS, 4, 19),
    T(Tag.dpf_result, INT8, 1, 1),
    T(Tag.set_dpf, INT8, 1, 1),
    T(Tag.ms_availability_status, INT8, 1, 1),
    T(Tag.network_error_code, OCTETS, 3, 3),  # network type (1 octet) + error code (2 octets)
    T(Tag.message_payload, OCTETS, 0, 0xFFFF),
    T(Tag.delivery_failure_reason, INT8, 1, 1),
    T(Tag.more_messages_to_send, INT8, 1, 1),
    T(Tag.message_state, INT8, 1, 1),
    T(Tag.ussd_service_op, INT8, 1, 1),
    T(Tag.display_time, INT8, 1, 1),
    T(Tag.sms_signal, INT16, 2, 2),
    T(Tag.ms_validity, INT8, 1, 1),
    T(Tag.alert_on_message_delivery, OCTETS, 0, 1),  # 3.4: no value; 5.0: one octet
    T(Tag.its_reply_type, INT8, 1, 1),
    T(Tag.its_session_info, OCTETS, 2, 2),
)
del T
#: Every SMPP 3.4 optional parameter: value kind and length bounds (C-Octet Strings: the max
#: includes the NUL; on decode a missing NUL and an empty value are tolerated).
TLVS: dict[int, TlvSpec] = {spec.tag: spec for spec in _TLV_LIST}
assert set(TLVS) == set(Tag), "every Tag needs a TlvSpec"


def tlv_name(tag: int) -> str:
    """``"receipted_message_id"`` for a known tag, ``"0x1400"`` for any other."""
    spec = TLVS.get(tag)
    return spec.tag.name if spec is not None else f"0x{tag:04X}"


# --------------------------------------------------------------------------------------------
# The PDU classes
# --------------------------------------------------------------------------------------------

_tuple_new = tuple.__new__


def _rebuild(cls: type[Pdu], values: tuple[Any, ...]) -> Pdu:
    return _tuple_new(cls, values)


class Pdu(tuple):
    """Base of every PDU class. See the module docstring for the contract."""

    __slots__ = ()

    COMMAND_ID: ClassVar[CommandId]
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    FIELD_NAMES: ClassVar[tuple[str, ...]] = ()
    RESPONSE: ClassVar[type[Pdu] | None] = None
    IS_RESPONSE: ClassVar[bool] = False

    command_id = _tuplegetter(0, "command_id (a CommandId)")
    command_status = _tuplegetter(1, "command_status (int; 0 in requests)")
    sequence_number = _tuplegetter(2, "sequence_number (int)")

    # Declared for readers and type checkers; each subclass binds its own descriptor.
    tlvs: tuple[tuple[int, Any], ...]

    if TYPE_CHECKING:  # body fields are generated: let type checkers accept any of them

        def __getattr__(self, name: str) -> Any: ...

    def __new__(cls, **fields: Any) -> Pdu:  # replaced in every subclass
        raise TypeError("Pdu is abstract: build SubmitSm, DeliverSm, ... instead")

    def tlv(self, tag: int, default: Any = None) -> Any:
        """The value of the first TLV with this tag, or ``default``."""
        for t, value in self[-1]:
            if t == tag:
                return value
        return default

    def make_resp(self, *, command_status: int = 0, **fields: Any) -> Pdu:
        """The ``_resp`` answering this request, with its sequence_number.

        Raises LocalProtocolError for PDUs that have no response (responses, generic_nack,
        outbind, alert_notification).
        """
        response = self.RESPONSE
        if response is None:
            raise LocalProtocolError(f"{self.COMMAND_ID.name} has no response PDU")
        return response(sequence_number=self[2], command_status=command_status, **fields)

    def with_sequence_number(self, sequence_number: int) -> Pdu:
        """A copy carrying another sequence_number (fast: the session numbers PDUs with it)."""
        return _tuple_new(type(self), (*self[:2], sequence_number, *self[3:]))

    def replace(self, **changes: Any) -> Pdu:
        """A copy with some fields changed, by name (like ``dataclasses.replace``)."""
        values = self.asdict()
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        values.update(changes)
        del values["command_id"]
        return type(self)(**values)

    def asdict(self) -> dict[str, Any]:
        """command_id, command_status, sequence_number, the body fields and tlvs, by name."""
        names = ("command_id", "command_status", "sequence_number", *self.FIELD_NAMES, "tlvs")
        return dict(zip(names, self, strict=True))

    def __repr__(self) -> str:
        items = [f"sequence_number={self[2]!r}"]
        if self[1]:
            items.append(f"command_status=0x{self[1]:08X}")
        body = zip(self.FIELD_NAMES, self[3:-1], strict=True)
        items += [f"{name}={value!r}" for name, value in body]
        if self[-1]:
            items.append(f"tlvs={self[-1]!r}")
        return f"{type(self).__name__}({', '.join(items)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), tuple(self)))

    def __copy__(self) -> Pdu:
        return self

    def __deepcopy__(self, memo: Any) -> Pdu:
        return self


def _class_name(command_id: CommandId) -> str:
    return "".join(part.capitalize() for part in command_id.name.split("_"))


def _build_class(command_id: CommandId, fields: tuple[Field, ...]) -> type[Pdu]:
    """Generate one PDU class: a keyword-only __new__ and one descriptor per field."""
    names = [f.name for f in fields]
    params = ["sequence_number=0", "command_status=0"]
    params += [f"{name}=_default_{name}" for name in names]
    params.append("tlvs=()")
    values = ["_command_id", "command_status", "sequence_number"]
    for f in fields:
        # lists are stored as tuples so the value stays immutable and hashable
        values.append(f"_tuple({f.name})" if f.kind in (DEST_ADDRESSES, UNSUCCESS_SMES) else f.name)
    values.append("_tuple(tlvs.items() if tlvs.__class__ is dict else tlvs)")
    source = (
        f"def __new__(_cls, *, {', '.join(params)}):\n"
        f"    return _tuple_new(_cls, ({', '.join(values)},))\n"
    )
    namespace: dict[str, Any] = {
        "_tuple_new": _tuple_new,
        "_tuple": tuple,
        "_command_id": command_id,
    }
    namespace.update({f"_default_{f.name}": f.default_value() for f in fields})
    exec(compile(source, f"<smpp.pdu {command_id.name}>", "exec"), namespace)
    new = namespace["__new__"]
    new.__doc__ = f"Build a {command_id.name} PDU; every field is keyword-only and optional."

    attrs: dict[str, Any] = {
        "__slots__": (),
        "__new__": new,
        "__doc__": f"SMPP 3.4 {command_id.name} (command_id 0x{command_id:08X}).",
        "__module__": __name__,
        "__match_args__": tuple(names),
        "COMMAND_ID": command_id,
        "FIELDS": fields,
        "FIELD_NAMES": tuple(names),
        "IS_RESPONSE": bool(command_id & RESPONSE_BIT),
    }
    for index, f in enumerate(fields, start=3):
        attrs[f.name] = _tuplegetter(index, f"{f.name} ({f.kind}, max {f.size})")
    attrs["tlvs"] = _tuplegetter(3 + len(fields), "tlvs: tuple of (tag, value) pairs")
    return type(_class_name(command_id), (Pdu,), attrs)


#: command_id -> PDU class, for every SMPP 3.4 command.
PDU_CLASSES: dict[int, type[Pdu]] = {cid: _build_class(cid, f) for cid, f in LAYOUTS.items()}
for _cid, _cls in PDU_CLASSES.items():
    if not _cls.IS_RESPONSE and _cid not in NO_RESPONSE:
        _cls.RESPONSE = PDU_CLASSES[_cid | RESPONSE_BIT]
del _cid, _cls

_C = CommandId
GenericNack = PDU_CLASSES[_C.generic_nack]
BindReceiver = PDU_CLASSES[_C.bind_receiver]
BindReceiverResp = PDU_CLASSES[_C.bind_receiver_resp]
BindTransmitter = PDU_CLASSES[_C.bind_transmitter]
BindTransmitterResp = PDU_CLASSES[_C.bind_transmitter_resp]
BindTransceiver = PDU_CLASSES[_C.bind_transceiver]
BindTransceiverResp = PDU_CLASSES[_C.bind_transceiver_resp]
Outbind = PDU_CLASSES[_C.outbind]
Unbind = PDU_CLASSES[_C.unbind]
UnbindResp = PDU_CLASSES[_C.unbind_resp]
EnquireLink = PDU_CLASSES[_C.enquire_link]
EnquireLinkResp = PDU_CLASSES[_C.enquire_link_resp]
SubmitSm = PDU_CLASSES[_C.submit_sm]
SubmitSmResp = PDU_CLASSES[_C.submit_sm_resp]
DeliverSm = PDU_CLASSES[_C.deliver_sm]
DeliverSmResp = PDU_CLASSES[_C.deliver_sm_resp]
SubmitMulti = PDU_CLASSES[_C.submit_multi]
SubmitMultiResp = PDU_CLASSES[_C.submit_multi_resp]
DataSm = PDU_CLASSES[_C.data_sm]
DataSmResp = PDU_CLASSES[_C.data_sm_resp]
QuerySm = PDU_CLASSES[_C.query_sm]
QuerySmResp = PDU_CLASSES[_C.query_sm_resp]
CancelSm = PDU_CLASSES[_C.cancel_sm]
CancelSmResp = PDU_CLASSES[_C.cancel_sm_resp]
ReplaceSm = PDU_CLASSES[_C.replace_sm]
ReplaceSmResp = PDU_CLASSES[_C.replace_sm_resp]
AlertNotification = PDU_CLASSES[_C.alert_notification]
del _C


def generic_nack(sequence_number: int, command_status: int) -> Pdu:
    """A generic_nack: the answer to a PDU whose header is invalid (length, command_id)."""
    return GenericNack(sequence_number=sequence_number, command_status=command_status)


def error_response(error: RemoteProtocolError) -> Pdu | None:
    """The PDU SMPP 3.4 says to answer a bad incoming PDU with, or None if none is due.

    - header unreadable, command_length invalid (framing lost) or command_id unknown:
      generic_nack with the error's status (sequence_number 0 when it was unreadable);
    - a request whose body is invalid: its own ``_resp`` carrying the error's status;
    - a bad response, outbind or alert_notification: None (they are not answered).
    """
    command_id = error.command_id
    sequence_number = error.sequence_number or 0
    cls = PDU_CLASSES.get(command_id) if command_id is not None else None
    if cls is None or error.framing_lost:
        return generic_nack(sequence_number, error.command_status)
    if cls.RESPONSE is None:
        return None
    return cls.RESPONSE(sequence_number=sequence_number, command_status=error.command_status)


def pdu_class(command_id: int) -> type[Pdu] | None:
    """The PDU class of a command_id, or None when SMPP 3.4 defines no such command."""
    return PDU_CLASSES.get(command_id)


def iter_fields(pdu: Pdu) -> Iterable[tuple[Field, Any]]:
    """(Field, value) for each mandatory body field of ``pdu``, in wire order."""
    return zip(pdu.FIELDS, pdu[3:-1], strict=True)
