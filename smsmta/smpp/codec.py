"""SMPP 3.4 bytes <-> PDU values, and the framer that cuts a TCP byte stream into PDUs.

What it does:

- ``encode(pdu) -> bytes``: the whole PDU, header included. Every field is checked against
  its declaration in `smsmta.smpp.pdu` (LAYOUTS, TLVS); a value over its limit or of the
  wrong type raises `LocalProtocolError` naming the PDU and the field, and nothing is
  produced.
- ``decode(frame) -> Pdu``: one whole PDU, header included (what `Framer` yields). Anything
  that is not valid SMPP 3.4 raises `RemoteProtocolError`, never another exception:
  unknown command_id -> ESME_RINVCMDID; body ending before a field -> ESME_RINVCMDLEN; a
  C-Octet String over its maximum or without its NUL -> the field's own status
  (ESME_RINVSRCADR, ESME_RINVMSGID...); sm_length past the end or over 254 ->
  ESME_RINVMSGLEN; a TLV running past the end -> ESME_RINVOPTPARSTREAM; a known TLV with a
  wrong length -> ESME_RINVPARLEN; a bad C-Octet String TLV value -> ESME_RINVOPTPARAMVAL.
  Framing is not lost by any of these (command_length delimited the PDU); it is lost only
  when command_length itself is impossible. Tolerated on purpose: a response with a
  non-zero command_status and no body at all (SMPP 3.4 4.1.2 / 4.4.2 allow it; its fields
  take their defaults), TLVs after any PDU's mandatory fields (SMPP 5.0 peers add them to
  responses), and C-Octet String TLVs without their NUL (some SMSCs send
  receipted_message_id that way; losing a receipt over it would be worse).
- ``Framer``: ``feed(data)`` then ``next_frame()`` (or iterate) to get whole frames. Once 16
  header octets are buffered, a command_length under 16 or over ``max_command_length``
  raises `RemoteProtocolError` with ``framing_lost=True`` (and the header's
  sequence_number and command_id, so the session can send generic_nack before resetting);
  the framer stays broken after that. The outcome never depends on how the bytes were
  chunked.

How it is fast (measured, CPython 3.11; bench/codec.py prints the rates, target 200,000/s
per operation on one core): at import time one encoder and one decoder per command are
generated from the declarations (exec of specialised source, as Kannel does with
smpp_pdu.def through C macros). They are straight-line code with no per-field loop or
dispatch: runs of integers go through one precompiled ``struct.Struct`` (a C-Octet
String's NUL rides along as a pad byte), the end of a C-Octet String is found with
``bytes.find(0, pos)`` and a NUL inside one is checked with ``0 in raw`` (an int needle is
a memchr: 60 ns and 20 ns, where ``bytes.index`` takes 115 ns and ``b"\\0" in raw`` 180 ns),
every string is sliced from one Latin-1 decoding of the whole frame (40 ns, instead of
one ``.decode`` per field), and the PDU is built in one ``tuple.__new__`` call (see pdu.py).
The generated code only *detects* bad input; on any failure the slow table-driven
reference (`reference_encode` / `reference_decode` in `smsmta.smpp.codec_reference`,
which interpret the same declarations field by field; importable from here too) runs
to name what is wrong and pick the status. The tests check that the two paths agree on
every input the fuzzer produces.

Why our own: PyPI's smpplib encodes ~30,000 and decodes ~38,000 submit_sm/s on the bench
machine (a Python object per field, getattr/setattr and a struct format built per field),
silently truncates over-long fields, and mixes the codec with its socket client; we need
ten times its speed, a pure library with no I/O, and errors that name the party at fault.

Touches nothing: no I/O, no clock, no logging, no global state after import.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

from smsmta.smpp.codec_reference import (
    _HEADER,
    _INT_WIDTH,
    _MAX_DESTS,
    _TLV_HEADER,
    _fail_header,
    _unknown_command,
    reference_decode,
    reference_encode,
)
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import (
    CSTRING,
    DEST_ADDRESSES,
    DESTINATION_ADDR,
    DL_NAME,
    INT8,
    INT16,
    INT32,
    OCTETS,
    PDU_CLASSES,
    SM,
    TIME,
    TLVS,
    UNSUCCESS_SMES,
    DistributionList,
    Pdu,
    SmeAddress,
    UnsuccessSme,
)

__all__ = [
    "DEFAULT_MAX_COMMAND_LENGTH",
    "HEADER_LENGTH",
    "Framer",
    "decode",
    "encode",
    "reference_decode",
    "reference_encode",
]

#: Octets of the PDU header: command_length, command_id, command_status, sequence_number.
HEADER_LENGTH = 16
#: Default largest command_length accepted: a 64 KiB message_payload plus room for the rest.
DEFAULT_MAX_COMMAND_LENGTH = 0x10000 + 0x1000

_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_tlv_header = _TLV_HEADER.unpack_from
_pack_tlv_header = _TLV_HEADER.pack
_pack_tlv_int8 = struct.Struct(">HHB").pack
_pack_tlv_int16 = struct.Struct(">HHH").pack
_pack_tlv_int32 = struct.Struct(">HHI").pack
_pack_u8 = struct.Struct(">B").pack
_pack_u8u8u8 = struct.Struct(">BBB").pack
_pack_u8u8 = struct.Struct(">BB").pack
_pack_u32 = struct.Struct(">I").pack
_INT_FORMAT = {INT8: "B", INT16: "H", INT32: "I"}


class _Invalid(Exception):
    """Raised by generated code: "not valid, ask the reference path what is wrong"."""


# --------------------------------------------------------------------------------------------
# TLVs (shared by every generated encoder/decoder)
# --------------------------------------------------------------------------------------------

_K_INT8, _K_INT16, _K_INT32, _K_CSTRING, _K_OCTETS = 1, 2, 3, 4, 5
_KIND_CODE = {
    INT8: _K_INT8,
    INT16: _K_INT16,
    INT32: _K_INT32,
    CSTRING: _K_CSTRING,
    OCTETS: _K_OCTETS,
}
# tag -> (Tag member, kind code, min length, max length)
_TLV_FAST: dict[int, tuple[int, int, int, int]] = {
    tag: (spec.tag, _KIND_CODE[spec.kind], spec.min_len, spec.max_len) for tag, spec in TLVS.items()
}


def _encode_tlvs(tlvs: tuple[tuple[int, Any], ...]) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    get = _TLV_FAST.get
    for tag, value in tlvs:
        spec = get(tag)
        if spec is None:
            if not isinstance(value, bytes):
                raise _Invalid
            append(_pack_tlv_header(tag, len(value)))
            append(value)
            continue
        kind = spec[1]
        if kind == _K_INT8:
            append(_pack_tlv_int8(tag, 1, value))
        elif kind == _K_INT16:
            append(_pack_tlv_int16(tag, 2, value))
        elif kind == _K_CSTRING:
            raw = value.encode("latin-1")
            if len(raw) >= spec[3] or 0 in raw:
                raise _Invalid
            append(_pack_tlv_header(tag, len(raw) + 1))
            append(raw)
            append(b"\0")
        elif kind == _K_OCTETS:
            if not isinstance(value, bytes) or not spec[2] <= len(value) <= spec[3]:
                raise _Invalid
            append(_pack_tlv_header(tag, len(value)))
            append(value)
        else:
            append(_pack_tlv_int32(tag, 4, value))
    return b"".join(parts)


_tlv_spec = _TLV_FAST.get


def _decode_tlvs(b: bytes, s: str | None, p: int) -> tuple[tuple[int, Any], ...]:
    """TLVs from offset ``p`` to the end; ``s`` is ``b`` decoded as Latin-1 (or None)."""
    end = len(b)
    out: list[tuple[int, Any]] = []
    while p < end:
        tag, length = _unpack_tlv_header(b, p)  # struct.error when under 4 octets are left
        p += 4
        q = p + length
        if q > end:
            raise _Invalid
        spec = _tlv_spec(tag)
        if spec is None:
            out.append((tag, b[p:q]))
        else:
            tag, kind, low, high = spec
            if length < low or length > high:
                raise _Invalid
            if kind == 1:  # _K_INT8
                out.append((tag, b[p]))
            elif kind == 4:  # _K_CSTRING: the NUL is optional on input
                if s is None:
                    s = b.decode("latin-1")
                text = s[p : q - 1] if length and b[q - 1] == 0 else s[p:q]
                if "\0" in text or len(text) >= high:
                    raise _Invalid
                out.append((tag, text))
            elif kind == 2:  # _K_INT16
                out.append((tag, b[p] << 8 | b[p + 1]))
            elif kind == 5:  # _K_OCTETS
                out.append((tag, b[p:q]))
            else:  # _K_INT32
                out.append((tag, _unpack_u32(b, p)[0]))
        p = q
    return tuple(out)


# --------------------------------------------------------------------------------------------
# submit_multi lists (fast paths; smsmta.smpp.codec_reference explains failures)
# --------------------------------------------------------------------------------------------

_MAX_DEST_ADDR = DESTINATION_ADDR.size - 1
_MAX_DL_NAME = DL_NAME.size - 1


def _encode_dest_addresses(dests: tuple[Any, ...]) -> bytes:
    if not 0 < len(dests) <= _MAX_DESTS:
        raise _Invalid
    parts = [_pack_u8(len(dests))]
    for dest in dests:
        if isinstance(dest, SmeAddress):
            raw = dest.destination_addr.encode("latin-1")
            if len(raw) > _MAX_DEST_ADDR or 0 in raw:
                raise _Invalid
            parts += (_pack_u8u8u8(1, dest.dest_addr_ton, dest.dest_addr_npi), raw, b"\0")
        elif isinstance(dest, DistributionList):
            raw = dest.dl_name.encode("latin-1")
            if len(raw) > _MAX_DL_NAME or 0 in raw:
                raise _Invalid
            parts += (b"\x02", raw, b"\0")
        else:
            raise _Invalid
    return b"".join(parts)


def _decode_dest_addresses(b: bytes, s: str, p: int) -> tuple[tuple[Any, ...], int]:
    count = b[p]
    p += 1
    if count == 0 or count > _MAX_DESTS:
        raise _Invalid
    out: list[Any] = []
    for _ in range(count):
        flag = b[p]
        if flag == 1:
            ton = b[p + 1]
            npi = b[p + 2]
            p += 3
            q = b.find(0, p)
            if q < 0 or q - p > _MAX_DEST_ADDR:
                raise _Invalid
            out.append(SmeAddress(ton, npi, s[p:q]))
        elif flag == 2:
            p += 1
            q = b.find(0, p)
            if q < 0 or q - p > _MAX_DL_NAME:
                raise _Invalid
            out.append(DistributionList(s[p:q]))
        else:
            raise _Invalid
        p = q + 1
    return tuple(out), p


def _encode_unsuccess_smes(smes: tuple[Any, ...]) -> bytes:
    parts = [_pack_u8(len(smes))]  # struct.error over 255
    for sme in smes:
        if not isinstance(sme, UnsuccessSme):
            raise _Invalid
        raw = sme.destination_addr.encode("latin-1")
        if len(raw) > _MAX_DEST_ADDR or 0 in raw:
            raise _Invalid
        parts += (
            _pack_u8u8(sme.dest_addr_ton, sme.dest_addr_npi),
            raw,
            b"\0",
            _pack_u32(sme.error_status_code),
        )
    return b"".join(parts)


def _decode_unsuccess_smes(b: bytes, s: str, p: int) -> tuple[tuple[Any, ...], int]:
    count = b[p]
    p += 1
    out: list[Any] = []
    for _ in range(count):
        ton = b[p]
        npi = b[p + 1]
        p += 2
        q = b.find(0, p)
        if q < 0 or q - p > _MAX_DEST_ADDR:
            raise _Invalid
        (error,) = _unpack_u32(b, q + 1)
        out.append(UnsuccessSme(ton, npi, s[p:q], error))
        p = q + 5
    return tuple(out), p


# --------------------------------------------------------------------------------------------
# Code generation: one encoder and one decoder per command, from the declarations
# --------------------------------------------------------------------------------------------

_GENERATED_GLOBALS: dict[str, Any] = {
    "_Invalid": _Invalid,
    "_pack_header": _pack_header,
    "_encode_tlvs": _encode_tlvs,
    "_decode_tlvs": _decode_tlvs,
    "_encode_dest_addresses": _encode_dest_addresses,
    "_decode_dest_addresses": _decode_dest_addresses,
    "_encode_unsuccess_smes": _encode_unsuccess_smes,
    "_decode_unsuccess_smes": _decode_unsuccess_smes,
    "_tuple_new": tuple.__new__,
    "isinstance": isinstance,
    "len": len,
    "bytes": bytes,
}


def _encoder_source(cls: type[Pdu], namespace: dict[str, Any]) -> str:
    name = cls.COMMAND_ID.name
    fields = cls.FIELDS
    var = [f"f{i}" for i in range(len(fields))]
    lines = [f"def encode_{name}(pdu):"]
    lines.append(f"    _, status, seq, {''.join(v + ', ' for v in var)}tlvs = pdu")
    if not fields:
        lines.append("    if not tlvs:")
        lines.append("        return _pack_header(16, _command_id, status, seq)")
        lines.append("    body = _encode_tlvs(tlvs)")
        lines.append("    return _pack_header(16 + len(body), _command_id, status, seq) + body")
        return "\n".join(lines) + "\n"

    checks: list[str] = []
    parts: list[str] = []
    fmt = ""  # struct format of the run of integers being gathered ("x" = a NUL)
    args: list[str] = []

    def flush() -> None:
        nonlocal fmt, args
        if args:
            packer = f"_pack{len(namespace)}"
            namespace[packer] = struct.Struct(">" + fmt).pack
            parts.append(f"{packer}({', '.join(args)})")
        elif fmt:
            parts.append(repr(b"\0" * len(fmt)))
        fmt, args = "", []

    for f, v in zip(fields, var, strict=True):
        if f.kind in (CSTRING, TIME):
            lines.append(f"    {v} = {v}.encode('latin-1')")
            if f.kind == TIME:
                checks.append(f"len({v}) not in (0, 16)")
            else:
                checks.append(f"len({v}) > {f.size - 1}")
            checks.append(f"0 in {v}")  # an int needle: memchr, 8x faster than b"\\0"
            flush()
            parts.append(v)
            fmt = "x"
        elif f.kind in _INT_FORMAT:
            fmt += _INT_FORMAT[f.kind]
            args.append(v)
        elif f.kind == SM:
            checks.append(f"not isinstance({v}, bytes) or len({v}) > {f.size}")
            fmt += "B"
            args.append(f"len({v})")
            flush()
            parts.append(v)
        elif f.kind == DEST_ADDRESSES:
            flush()
            parts.append(f"_encode_dest_addresses({v})")
        elif f.kind == UNSUCCESS_SMES:
            flush()
            parts.append(f"_encode_unsuccess_smes({v})")
        else:  # pragma: no cover - a declaration error
            raise AssertionError(f"{name}.{f.name}: unknown kind {f.kind}")
    flush()
    parts.append("(_encode_tlvs(tlvs) if tlvs else b'')")
    if checks:
        lines.append(f"    if {' or '.join(checks)}:")
        lines.append("        raise _Invalid")
    lines.append(f"    body = b''.join(({', '.join(parts)},))")
    lines.append("    return _pack_header(16 + len(body), _command_id, status, seq) + body")
    return "\n".join(lines) + "\n"


def _decoder_source(cls: type[Pdu], namespace: dict[str, Any]) -> str:
    name = cls.COMMAND_ID.name
    fields = cls.FIELDS
    var = [f"f{i}" for i in range(len(fields))]
    lines = [f"def decode_{name}(b, status, seq):"]
    if cls.IS_RESPONSE and fields:
        # SMPP 3.4 4.1.2 / 4.4.2: an error response may come without a body.
        namespace["_defaults"] = (*(f.default_value() for f in fields), ())
        lines.append("    if status and len(b) == 16:")
        lines.append("        return _tuple_new(_cls, (_command_id, status, seq) + _defaults)")
    if any(f.kind not in _INT_WIDTH and f.kind != SM for f in fields):
        # C-Octet Strings are sliced from one Latin-1 decoding of the whole frame: one C call
        # instead of one per field (and Latin-1 maps every octet, so indexes line up).
        lines.append("    s = b.decode('latin-1')")
        has_text = True
    else:
        has_text = False
    base, off = "16", 0  # the read position is the expression `base + off`

    def pos() -> str:
        return base if off == 0 else f"{base} + {off}"

    for f, v in zip(fields, var, strict=True):
        if f.kind == INT8:
            lines.append(f"    {v} = b[{pos()}]")
            off += 1
        elif f.kind in (INT16, INT32):
            unpacker = f"_unpack{len(namespace)}"
            namespace[unpacker] = struct.Struct(">" + _INT_FORMAT[f.kind]).unpack_from
            lines.append(f"    ({v},) = {unpacker}(b, {pos()})")
            off += _INT_WIDTH[f.kind]
        elif f.kind in (CSTRING, TIME):
            if (base, off) != ("p", 0):
                lines.append(f"    p = {pos()}")
            lines.append("    q = b.find(0, p)")  # faster than s.index("\\0", p) or b.index
            if f.kind == TIME:
                lines.append("    if q != p and q - p != 16:")  # also catches q == -1
            else:
                lines.append(f"    if q < 0 or q - p > {f.size - 1}:")
            lines.append("        raise _Invalid")
            lines.append(f"    {v} = s[p:q]")
            base, off = "q", 1
        elif f.kind == SM:
            lines.append(f"    p = {pos()} + 1")
            lines.append("    n = b[p - 1]")
            lines.append("    q = p + n")
            lines.append(f"    if n > {f.size} or q > len(b):")
            lines.append("        raise _Invalid")
            lines.append(f"    {v} = b[p:q]")
            base, off = "q", 0
        elif f.kind == DEST_ADDRESSES:
            lines.append(f"    {v}, p = _decode_dest_addresses(b, s, {pos()})")
            base, off = "p", 0
        elif f.kind == UNSUCCESS_SMES:
            lines.append(f"    {v}, p = _decode_unsuccess_smes(b, s, {pos()})")
            base, off = "p", 0
        else:  # pragma: no cover - a declaration error
            raise AssertionError(f"{name}.{f.name}: unknown kind {f.kind}")
    if (base, off) != ("p", 0):
        lines.append(f"    p = {pos()}")
    text = "s" if has_text else "None"
    lines.append(f"    tlvs = _decode_tlvs(b, {text}, p) if p < len(b) else ()")
    values = ", ".join(["_command_id", "status", "seq", *var, "tlvs"])
    lines.append(f"    return _tuple_new(_cls, ({values}))")
    return "\n".join(lines) + "\n"


def _generate(cls: type[Pdu]) -> tuple[Callable[[Pdu], bytes], Callable[[bytes, int, int], Pdu]]:
    functions = []
    for kind, make_source in (("encode", _encoder_source), ("decode", _decoder_source)):
        namespace = dict(_GENERATED_GLOBALS, _cls=cls, _command_id=cls.COMMAND_ID)
        source = make_source(cls, namespace)
        code = compile(source, f"<smpp.codec {kind}_{cls.COMMAND_ID.name}>", "exec")
        exec(code, namespace)
        function = namespace[f"{kind}_{cls.COMMAND_ID.name}"]
        function.__source__ = source  # for the curious: print(codec._ENCODERS[SubmitSm].__source__)
        functions.append(function)
    return functions[0], functions[1]


_ENCODERS: dict[type[Pdu], Callable[[Pdu], bytes]] = {}
_DECODERS: dict[int, Callable[[bytes, int, int], Pdu]] = {}
for _command_id, _cls in PDU_CLASSES.items():
    _ENCODERS[_cls], _DECODERS[_command_id] = _generate(_cls)
del _command_id, _cls


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def encode(pdu: Pdu) -> bytes:
    """The wire bytes of ``pdu``, header included.

    Raises LocalProtocolError naming the PDU and the field when a value is over its limit
    or of the wrong type; nothing is produced then.
    """
    try:
        return _ENCODERS[pdu.__class__](pdu)
    except Exception:  # the reference path names the problem (or "not a PDU")
        pass
    return reference_encode(pdu)


def decode(frame: bytes | bytearray | memoryview) -> Pdu:
    """The PDU in ``frame``: exactly one whole PDU, header included.

    Raises RemoteProtocolError (and nothing else) when the bytes are not valid SMPP 3.4.
    """
    if frame.__class__ is not bytes:
        frame = bytes(frame)
    size = len(frame)
    if size < 16:
        _fail_header(frame)
    length, command_id, status, seq = _unpack_header(frame)
    if length != size:
        _fail_header(frame)
    decoder = _DECODERS.get(command_id)
    if decoder is None:
        _unknown_command(command_id, seq)
    try:
        return decoder(frame, status, seq)
    except Exception:  # the reference path names the problem
        pass
    return reference_decode(frame)


class Framer:
    """Cuts a byte stream into whole PDU frames (bytes), ready for `decode`.

    ``feed(data)`` appends received bytes; ``next_frame()`` returns the next whole frame or
    None when more bytes are needed; iterating yields every whole frame buffered. Raises
    RemoteProtocolError(framing_lost=True) once a header's command_length is under 16 or
    over ``max_command_length``; every later call raises it again: reset the connection.
    """

    __slots__ = ("_buffer", "_error", "max_command_length")

    def __init__(self, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        if max_command_length < HEADER_LENGTH:
            raise ValueError(f"max_command_length must be at least {HEADER_LENGTH}")
        self.max_command_length = max_command_length
        self._buffer = bytearray()
        self._error: RemoteProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole PDU frame, or None until more bytes are fed."""
        buffer = self._buffer
        if len(buffer) < 16:  # (after an error the bad header stays buffered: never here)
            return None
        (length,) = _unpack_u32(buffer)
        if length < 16 or length > self.max_command_length:
            if self._error is None:
                _, command_id, _, seq = _unpack_header(buffer)
                if length < 16:
                    limit = "under the 16-octet header"
                else:
                    limit = f"over the maximum of {self.max_command_length}"
                self._error = RemoteProtocolError(
                    f"command_length {length} is {limit}: framing lost",
                    command_status=S.ESME_RINVCMDLEN,
                    sequence_number=seq,
                    command_id=command_id,
                    framing_lost=True,
                )
            raise self._error.with_traceback(None)
        if len(buffer) < length:
            return None
        frame = bytes(buffer[:length])
        del buffer[:length]
        return frame

    def __iter__(self) -> Iterator[bytes]:
        while (frame := self.next_frame()) is not None:
            yield frame

    @property
    def buffered(self) -> int:
        """Octets received and not yet returned as a frame."""
        return len(self._buffer)
