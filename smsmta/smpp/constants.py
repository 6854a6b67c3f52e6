"""SMPP 3.4 numbers with their spec names: command ids, command statuses, TON/NPI, field bits.

What it does: names every number the SMPP 3.4 specification defines that the codec, the
session and the MTA talk about: `CommandId` (section 5.1.2.1), `CommandStatus` (table 5-2),
`Ton` / `Npi` (5.2.5, 5.2.6), the `esm_class` bits (5.2.12), `registered_delivery` values
(5.2.17), `data_coding` values (5.2.19), `MessageState` (5.2.28) and every optional
parameter `Tag` (table 5-3).

Contract: members carry the spec's own names (``CommandId.submit_sm``,
``CommandStatus.ESME_RTHROTTLED``) so logs and code read like the specification. A peer may
send numbers that are not members (vendor statuses 0x400-0x4FF, vendor TLV tags); the codec
therefore keeps plain ``int`` where a peer's value lands, and `status_name` names any code.

What the statuses *mean* for the product (retry, back off, fail hard) is decided once by
the MTA's retry policy. The only judgement made here is the protocol-level one SPEC section 7
pins down: `is_throttling` (0x58 ESME_RTHROTTLED and 0x14 ESME_RMSGQFUL ask the ESME to
slow down and resubmit later; they are never a verdict on the message itself).

Why our own: smpplib's ``consts`` are loose module-level ints (no enum, no names in logs,
no TLV tag table) and come with its slow codec (see codec.py).

Touches nothing: no I/O, no clock, no logging.
"""

from __future__ import annotations

from enum import IntEnum

#: ``command_id`` bit that marks a response (``submit_sm_resp`` = ``submit_sm`` | this bit).
RESPONSE_BIT = 0x80000000

#: ``interface_version`` of SMPP 3.4 (bind PDUs, sc_interface_version TLV).
SMPP_VERSION_34 = 0x34


class CommandId(IntEnum):
    """Every SMPP 3.4 command (section 5.1.2.1), requests and their ``_resp``."""

    generic_nack = 0x80000000
    bind_receiver = 0x00000001
    bind_receiver_resp = 0x80000001
    bind_transmitter = 0x00000002
    bind_transmitter_resp = 0x80000002
    query_sm = 0x00000003
    query_sm_resp = 0x80000003
    submit_sm = 0x00000004
    submit_sm_resp = 0x80000004
    deliver_sm = 0x00000005
    deliver_sm_resp = 0x80000005
    unbind = 0x00000006
    unbind_resp = 0x80000006
    replace_sm = 0x00000007
    replace_sm_resp = 0x80000007
    cancel_sm = 0x00000008
    cancel_sm_resp = 0x80000008
    bind_transceiver = 0x00000009
    bind_transceiver_resp = 0x80000009
    outbind = 0x0000000B
    enquire_link = 0x00000015
    enquire_link_resp = 0x80000015
    submit_multi = 0x00000021
    submit_multi_resp = 0x80000021
    alert_notification = 0x00000102
    data_sm = 0x00000103
    data_sm_resp = 0x80000103


def is_response(command_id: int) -> bool:
    """True for a ``*_resp`` command id and for ``generic_nack``."""
    return bool(command_id & RESPONSE_BIT)


class CommandStatus(IntEnum):
    """SMPP 3.4 table 5-2, with the spec names. 0x400-0x4FF are vendor-specific (not members)."""

    ESME_ROK = 0x00000000  # No Error
    ESME_RINVMSGLEN = 0x00000001  # Message Length is invalid
    ESME_RINVCMDLEN = 0x00000002  # Command Length is invalid
    ESME_RINVCMDID = 0x00000003  # Invalid Command ID
    ESME_RINVBNDSTS = 0x00000004  # Incorrect BIND Status for given command
    ESME_RALYBND = 0x00000005  # ESME Already in Bound State
    ESME_RINVPRTFLG = 0x00000006  # Invalid Priority Flag
    ESME_RINVREGDLVFLG = 0x00000007  # Invalid Registered Delivery Flag
    ESME_RSYSERR = 0x00000008  # System Error
    ESME_RINVSRCADR = 0x0000000A  # Invalid Source Address
    ESME_RINVDSTADR = 0x0000000B  # Invalid Dest Addr
    ESME_RINVMSGID = 0x0000000C  # Message ID is invalid
    ESME_RBINDFAIL = 0x0000000D  # Bind Failed
    ESME_RINVPASWD = 0x0000000E  # Invalid Password
    ESME_RINVSYSID = 0x0000000F  # Invalid System ID
    ESME_RCANCELFAIL = 0x00000011  # Cancel SM Failed
    ESME_RREPLACEFAIL = 0x00000013  # Replace SM Failed
    ESME_RMSGQFUL = 0x00000014  # Message Queue Full
    ESME_RINVSERTYP = 0x00000015  # Invalid Service Type
    ESME_RINVNUMDESTS = 0x00000033  # Invalid number of destinations
    ESME_RINVDLNAME = 0x00000034  # Invalid Distribution List name
    ESME_RINVDESTFLAG = 0x00000040  # Destination flag is invalid (submit_multi)
    ESME_RINVSUBREP = 0x00000042  # Invalid 'submit with replace' request
    ESME_RINVESMCLASS = 0x00000043  # Invalid esm_class field data
    ESME_RCNTSUBDL = 0x00000044  # Cannot Submit to Distribution List
    ESME_RSUBMITFAIL = 0x00000045  # submit_sm or submit_multi failed
    ESME_RINVSRCTON = 0x00000048  # Invalid Source address TON
    ESME_RINVSRCNPI = 0x00000049  # Invalid Source address NPI
    ESME_RINVDSTTON = 0x00000050  # Invalid Destination address TON
    ESME_RINVDSTNPI = 0x00000051  # Invalid Destination address NPI
    ESME_RINVSYSTYP = 0x00000053  # Invalid system_type field
    ESME_RINVREPFLAG = 0x00000054  # Invalid replace_if_present flag
    ESME_RINVNUMMSGS = 0x00000055  # Invalid number of messages
    ESME_RTHROTTLED = 0x00000058  # Throttling error (ESME has exceeded allowed message limits)
    ESME_RINVSCHED = 0x00000061  # Invalid Scheduled Delivery Time
    ESME_RINVEXPIRY = 0x00000062  # Invalid message validity period (Expiry time)
    ESME_RINVDFTMSGID = 0x00000063  # Predefined Message Invalid or Not Found
    ESME_RX_T_APPN = 0x00000064  # ESME Receiver Temporary App Error Code
    ESME_RX_P_APPN = 0x00000065  # ESME Receiver Permanent App Error Code
    ESME_RX_R_APPN = 0x00000066  # ESME Receiver Reject Message Error Code
    ESME_RQUERYFAIL = 0x00000067  # query_sm request failed
    ESME_RINVOPTPARSTREAM = 0x000000C0  # Error in the optional part of the PDU Body
    ESME_ROPTPARNOTALLWD = 0x000000C1  # Optional Parameter not allowed
    ESME_RINVPARLEN = 0x000000C2  # Invalid Parameter Length
    ESME_RMISSINGOPTPARAM = 0x000000C3  # Expected Optional Parameter missing
    ESME_RINVOPTPARAMVAL = 0x000000C4  # Invalid Optional Parameter Value
    ESME_RDELIVERYFAILURE = 0x000000FE  # Delivery Failure (used for data_sm_resp)
    ESME_RUNKNOWNERR = 0x000000FF  # Unknown Error


#: Statuses by which an SMSC asks the ESME to slow down and resubmit later (SPEC section 7).
THROTTLING_STATUSES = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})


def is_throttling(status: int) -> bool:
    """True when ``status`` means "too fast / queue full: back off and resubmit".

    ESME_RTHROTTLED (0x58) and ESME_RMSGQFUL (0x14) say nothing about the message itself,
    so the MTA always retries them after a back-off instead of qualifying them as failures.
    """
    return status in THROTTLING_STATUSES


def status_name(status: int) -> str:
    """The spec name of a command_status (``"ESME_RTHROTTLED"``), or ``"0x00000401"``.

    Vendor-specific codes (0x400-0x4FF) and any other unknown code are named in hex,
    eight digits, so a log line or a message-log key never depends on the enum knowing it.
    """
    try:
        return CommandStatus(status).name
    except ValueError:
        return f"0x{status:08X}"


class Ton(IntEnum):
    """Type of Number (section 5.2.5): ``source_addr_ton``, ``dest_addr_ton``, ``addr_ton``."""

    UNKNOWN = 0x00
    INTERNATIONAL = 0x01
    NATIONAL = 0x02
    NETWORK_SPECIFIC = 0x03
    SUBSCRIBER_NUMBER = 0x04
    ALPHANUMERIC = 0x05
    ABBREVIATED = 0x06


class Npi(IntEnum):
    """Numbering Plan Indicator (section 5.2.6)."""

    UNKNOWN = 0x00
    ISDN = 0x01  # E.163 / E.164
    DATA = 0x03  # X.121
    TELEX = 0x04  # F.69
    LAND_MOBILE = 0x06  # E.212
    NATIONAL = 0x08
    PRIVATE = 0x09
    ERMES = 0x0A
    INTERNET = 0x0E  # IP
    WAP_CLIENT_ID = 0x12


class EsmClass:
    """``esm_class`` bits (section 5.2.12): three sub-fields in one octet.

    bits 1-0 messaging mode, bits 5-2 message type, bits 7-6 GSM network features.
    Compare a sub-field through its mask: ``esm_class & EsmClass.MESSAGE_TYPE_MASK``.
    A namespace of ints rather than an IntEnum: sub-field values and masks share numbers
    (0x03 is both a mask and store-and-forward mode), which an enum would merge as aliases.
    """

    # Messaging mode (bits 1-0), submit_sm / data_sm / submit_multi.
    MESSAGING_MODE_MASK = 0x03
    DEFAULT_MODE = 0x00  # SMSC default (usually store and forward)
    DATAGRAM_MODE = 0x01
    FORWARD_MODE = 0x02  # transaction mode
    STORE_AND_FORWARD_MODE = 0x03
    # Message type (bits 5-2).
    MESSAGE_TYPE_MASK = 0x3C
    DEFAULT_MESSAGE_TYPE = 0x00
    DELIVERY_RECEIPT = 0x04  # deliver_sm carries an SMSC delivery receipt (SR)
    DELIVERY_ACKNOWLEDGEMENT = 0x08  # SME delivery acknowledgement
    USER_ACKNOWLEDGEMENT = 0x10  # SME manual/user acknowledgement
    CONVERSATION_ABORT = 0x18  # Korean CDMA
    INTERMEDIATE_DELIVERY_NOTIFICATION = 0x20
    # GSM network specific features (bits 7-6).
    GSM_FEATURES_MASK = 0xC0
    UDHI = 0x40  # short_message (or message_payload) starts with a User Data Header
    REPLY_PATH = 0x80
    UDHI_AND_REPLY_PATH = 0xC0


def esm_message_type(esm_class: int) -> int:
    """The message-type sub-field of ``esm_class`` (compare with `EsmClass.DELIVERY_RECEIPT`)."""
    return esm_class & EsmClass.MESSAGE_TYPE_MASK


def is_delivery_receipt(esm_class: int) -> bool:
    """True when a deliver_sm's ``esm_class`` says it carries an SMSC delivery receipt.

    Intermediate delivery notifications (0x20) are receipts too, of a non-final state.
    """
    return esm_class & EsmClass.MESSAGE_TYPE_MASK in (
        EsmClass.DELIVERY_RECEIPT,
        EsmClass.INTERMEDIATE_DELIVERY_NOTIFICATION,
    )


class RegisteredDelivery:
    """``registered_delivery`` bits (section 5.2.17); ints, for the reason given at EsmClass."""

    # SMSC delivery receipt (bits 1-0).
    SMSC_RECEIPT_MASK = 0x03
    NO_RECEIPT = 0x00
    RECEIPT_ON_SUCCESS_OR_FAILURE = 0x01
    RECEIPT_ON_FAILURE = 0x02
    # SME originated acknowledgement (bits 3-2).
    SME_ACK_MASK = 0x0C
    SME_DELIVERY_ACK = 0x04
    SME_USER_ACK = 0x08
    SME_DELIVERY_AND_USER_ACK = 0x0C
    # Intermediate notification (bit 4).
    INTERMEDIATE_NOTIFICATION = 0x10


class DataCoding(IntEnum):
    """``data_coding`` values (section 5.2.19) for the alphabets SMPP 3.4 names."""

    SMSC_DEFAULT = 0x00  # SMSC default alphabet (GSM 03.38 on most SMSCs)
    IA5 = 0x01  # IA5 (CCITT T.50) / ASCII
    OCTET_UNSPECIFIED_2 = 0x02  # 8-bit binary
    LATIN_1 = 0x03  # ISO-8859-1
    OCTET_UNSPECIFIED = 0x04  # 8-bit binary
    JIS = 0x05  # X 0208-1990
    CYRILLIC = 0x06  # ISO-8859-5
    LATIN_HEBREW = 0x07  # ISO-8859-8
    UCS2 = 0x08  # ISO/IEC-10646, big-endian UTF-16 units
    PICTOGRAM = 0x09
    MUSIC_CODES = 0x0A  # ISO-2022-JP
    EXTENDED_KANJI_JIS = 0x0D  # X 0212-1990
    KS_C_5601 = 0x0E


class MessageState(IntEnum):
    """``message_state`` (section 5.2.28): query_sm_resp field and deliver_sm/data_sm TLV."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


class DestFlag(IntEnum):
    """``dest_flag`` of a submit_multi destination (section 5.2.25)."""

    SME_ADDRESS = 1
    DISTRIBUTION_LIST = 2


class Tag(IntEnum):
    """Every SMPP 3.4 optional parameter tag (table 5-3). Vendor tags (0x1400-0x3FFF) are ints."""

    dest_addr_subunit = 0x0005
    dest_network_type = 0x0006
    dest_bearer_type = 0x0007
    dest_telematics_id = 0x0008
    source_addr_subunit = 0x000D
    source_network_type = 0x000E
    source_bearer_type = 0x000F
    source_telematics_id = 0x0010
    qos_time_to_live = 0x0017
    payload_type = 0x0019
    additional_status_info_text = 0x001D
    receipted_message_id = 0x001E
    ms_msg_wait_facilities = 0x0030
    privacy_indicator = 0x0201
    source_subaddress = 0x0202
    dest_subaddress = 0x0203
    user_message_reference = 0x0204
    user_response_code = 0x0205
    source_port = 0x020A
    destination_port = 0x020B
    sar_msg_ref_num = 0x020C
    language_indicator = 0x020D
    sar_total_segments = 0x020E
    sar_segment_seqnum = 0x020F
    sc_interface_version = 0x0210
    callback_num_pres_ind = 0x0302
    callback_num_atag = 0x0303
    number_of_messages = 0x0304
    callback_num = 0x0381
    dpf_result = 0x0420
    set_dpf = 0x0421
    ms_availability_status = 0x0422
    network_error_code = 0x0423
    message_payload = 0x0424
    delivery_failure_reason = 0x0425
    more_messages_to_send = 0x0426
    message_state = 0x0427
    ussd_service_op = 0x0501
    display_time = 0x1201
    sms_signal = 0x1203
    ms_validity = 0x1204
    alert_on_message_delivery = 0x130C
    its_reply_type = 0x1380
    its_session_info = 0x1383


#: First and last vendor-specific ("reserved for SMSC vendor") TLV tags.
VENDOR_TAG_MIN = 0x1400
VENDOR_TAG_MAX = 0x3FFF
