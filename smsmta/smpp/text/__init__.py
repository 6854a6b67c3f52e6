"""SMS text: encoding, splitting into SMS parts, MO decoding and reassembly (SPEC section 5).

One package, one job per module; every name is importable from `smsmta.smpp.text`:

- `encode`: `encode_message(text, mapping, ...)` picks the first encoding of the account's
  mapping that takes the text (with transliteration if asked) and splits it into SMS parts
  with a concatenation UDH, or one message_payload. Returns an `EncodedMessage`.
- `charsets`: the encodings a mapping may name (`ENCODING_NAMES`: GSM 03.38 one octet per
  septet or packed, the national language shift tables of TS 23.038, IA5, Latin-1,
  UCS-2), each able to encode, count and transliterate.
- `udh`: the user data header (`build_udh`, `parse_udh`) and GSM septet packing.
- `decode`: `decode_short_message(data, data_coding, udhi=...)` decodes an MO/SR short
  message per SMPP 3.4 5.2.19 and TS 23.038 section 4 and never raises on the octets.
- `reassembly`: `Reassembler` puts long MOs back together in any arrival order and hands
  back incomplete ones once their time is up.
- `base`: the SMS size limits and the errors, all `TextError` (a ValueError).

Contract: pure functions and a few classes; no asyncio, sockets, clocks, database or
logging. Time enters `Reassembler` as an argument.

Why our own: gsm0338 on PyPI is a codec only (no septet packing, no counting, no shift
tables, no splitting); smpplib splits an escape from its character and knows only the
default table. The hot path (a short text in the basic GSM alphabet) is one C-level
charmap encode against a prebuilt table.

Touches nothing. Tables: `smsmta.smpp.gsm_tables`.
"""

from smsmta.smpp.text.base import (
    MAX_PARTS,
    PAYLOAD_MAX_OCTETS,
    SM_OCTETS,
    BadSegment,
    MalformedUDH,
    PayloadTooLong,
    TextError,
    TooManyParts,
    UnencodableText,
)
from smsmta.smpp.text.charsets import ENCODING_NAMES, EncodingName, Transliteration
from smsmta.smpp.text.decode import DecodedMessage, decode_gsm7, decode_short_message
from smsmta.smpp.text.encode import DEFAULT_MAPPING, EncodedMessage, Rejection, encode_message
from smsmta.smpp.text.reassembly import PartialMessage, Reassembler
from smsmta.smpp.text.udh import (
    IEI_CONCAT_8,
    IEI_CONCAT_16,
    IEI_LOCKING_SHIFT,
    IEI_PORTS_8,
    IEI_PORTS_16,
    IEI_SINGLE_SHIFT,
    Concat,
    UserDataHeader,
    build_udh,
    fill_bits_after,
    pack_septets,
    parse_udh,
    unpack_septets,
)

__all__ = [
    "DEFAULT_MAPPING",
    "ENCODING_NAMES",
    "IEI_CONCAT_8",
    "IEI_CONCAT_16",
    "IEI_LOCKING_SHIFT",
    "IEI_PORTS_8",
    "IEI_PORTS_16",
    "IEI_SINGLE_SHIFT",
    "MAX_PARTS",
    "PAYLOAD_MAX_OCTETS",
    "SM_OCTETS",
    "BadSegment",
    "Concat",
    "DecodedMessage",
    "EncodedMessage",
    "EncodingName",
    "MalformedUDH",
    "PartialMessage",
    "PayloadTooLong",
    "Reassembler",
    "Rejection",
    "TextError",
    "TooManyParts",
    "Transliteration",
    "UnencodableText",
    "UserDataHeader",
    "build_udh",
    "decode_gsm7",
    "decode_short_message",
    "encode_message",
    "fill_bits_after",
    "pack_septets",
    "parse_udh",
    "unpack_septets",
]
