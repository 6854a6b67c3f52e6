"""The reference path of the SMPP codec: the declarations of `smsmta.smpp.pdu`, interpreted
field by field. Slow, exact, and it explains.

- ``reference_decode(frame) -> Pdu``: same contract as `smsmta.smpp.codec.decode`; every
  failure is a `RemoteProtocolError` naming the PDU, the field, what is wrong and the
  command_status to answer with.
- ``reference_encode(pdu) -> bytes``: same contract as `smsmta.smpp.codec.encode`; a value
  over its limit or of the wrong type raises `LocalProtocolError` naming the field.

The fast generated codec (`smsmta.smpp.codec`) only *detects* bad input and calls these to
name what is wrong; the tests check that both paths agree on every input the fuzzer
produces. Both are importable from `smsmta.smpp.codec`.

Touches nothing: no I/O, no clock, no logging, no global state after import.
"""

from __future__ import annotations

import struct
from typing import Any, NoReturn

from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.errors import LocalProtocolError, RemoteProtocolError
from smsmta.smpp.pdu import (
    CSTRING,
    DEST_ADDRESSES,
    DEST_FLAG,
    DL_NAME,
    INT8,
    INT16,
    INT32,
    PDU_CLASSES,
    SM,
    SME_ADDRESS_FIELDS,
    TIME,
    TLVS,
    UNSUCCESS_SME_FIELDS,
    UNSUCCESS_SMES,
    DistributionList,
    Field,
    Pdu,
    SmeAddress,
    UnsuccessSme,
    tlv_name,
)

_HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_unpack_tlv_header = _TLV_HEADER.unpack_from
_pack_tlv_header = _TLV_HEADER.pack
_INT_WIDTH = {INT8: 1, INT16: 2, INT32: 4}
_SM_LENGTH = Field("sm_length", INT8, 1, S.ESME_RINVMSGLEN)
_NUMBER_OF_DESTS = Field("number_of_dests", INT8, 1, S.ESME_RINVNUMDESTS)
_NO_UNSUCCESS = Field("no_unsuccess", INT8, 1, S.ESME_RSYSERR)
_MAX_DESTS = 254  # SMPP 3.4 5.2.24: number_of_dests is 1..254
_PDU_TYPES = frozenset(PDU_CLASSES.values())


def _unknown_command(command_id: int, seq: int) -> NoReturn:
    raise RemoteProtocolError(
        f"unknown command_id 0x{command_id:08X}",
        command_status=S.ESME_RINVCMDID,
        sequence_number=seq,
        command_id=command_id,
    )


def _fail_header(frame: bytes) -> NoReturn:
    size = len(frame)
    if size < 16:
        raise RemoteProtocolError(
            f"frame of {size} octets is shorter than the 16-octet header",
            command_status=S.ESME_RINVCMDLEN,
            framing_lost=True,
        )
    length, command_id, _, seq = _unpack_header(frame)
    problem = "under the 16-octet header" if length < 16 else f"but the frame is {size} octets"
    raise RemoteProtocolError(
        f"command_length {length} {problem}",
        command_status=S.ESME_RINVCMDLEN,
        sequence_number=seq,
        command_id=command_id,
        framing_lost=True,
    )


class _Reader:
    """Reads one frame's body field by field and names what is wrong."""

    __slots__ = ("b", "command_id", "end", "name", "p", "seq")

    def __init__(self, b: bytes, name: str, command_id: int, seq: int) -> None:
        self.b, self.name, self.command_id, self.seq = b, name, command_id, seq
        self.p, self.end = 16, len(b)

    def fail(self, status: int, message: str, field: str | None = None) -> NoReturn:
        raise RemoteProtocolError(
            f"{self.name}: {message}",
            command_status=status,
            sequence_number=self.seq,
            command_id=self.command_id,
            field=field,
        )

    def integer(self, field: Field, label: str) -> int:
        width = _INT_WIDTH[field.kind]
        if self.p + width > self.end:
            self.fail(
                S.ESME_RINVCMDLEN,
                f"body ends before {label} (offset {self.p} of {self.end})",
                field.name,
            )
        value = int.from_bytes(self.b[self.p : self.p + width], "big")
        self.p += width
        return value

    def cstring(self, field: Field, label: str) -> str:
        b, p, end, size = self.b, self.p, self.end, field.size
        if p >= end:
            self.fail(S.ESME_RINVCMDLEN, f"body ends before {label} (offset {p})", field.name)
        q = b.find(b"\0", p)
        if q < 0:
            if end - p < size:
                self.fail(
                    S.ESME_RINVCMDLEN,
                    f"body ends inside {label}: no NUL in its last {end - p} octet(s)",
                    field.name,
                )
            self.fail(
                field.status,
                f"{label} has no NUL terminator within its maximum of {size} octets",
                field.name,
            )
        if q - p + 1 > size:
            self.fail(
                field.status,
                f"{label} is {q - p + 1} octets with its NUL, over the maximum of {size}",
                field.name,
            )
        if field.kind == TIME and q - p not in (0, 16):
            self.fail(
                field.status,
                f"{label} must be empty or 16 characters (YYMMDDhhmmsstnnp), got {q - p}",
                field.name,
            )
        self.p = q + 1
        return b[p:q].decode("latin-1")

    def read(self, field: Field, label: str | None = None) -> Any:
        label = label or field.name
        kind = field.kind
        if kind in _INT_WIDTH:
            return self.integer(field, label)
        if kind in (CSTRING, TIME):
            return self.cstring(field, label)
        if kind == SM:
            n = self.integer(_SM_LENGTH, "sm_length")
            if n > field.size:
                self.fail(
                    field.status, f"sm_length {n} is over the maximum of {field.size}", "sm_length"
                )
            if self.p + n > self.end:
                self.fail(
                    field.status,
                    f"sm_length {n} runs past the end of the PDU ({self.end - self.p} octets left)",
                    "sm_length",
                )
            self.p += n
            return self.b[self.p - n : self.p]
        if kind == DEST_ADDRESSES:
            count = self.integer(_NUMBER_OF_DESTS, "number_of_dests")
            if not 0 < count <= _MAX_DESTS:
                self.fail(
                    field.status,
                    f"number_of_dests {count} is not in 1..{_MAX_DESTS}",
                    "number_of_dests",
                )
            dests: list[Any] = []
            for i in range(count):
                flag = self.integer(DEST_FLAG, f"dest_address[{i}].dest_flag")
                if flag == 1:
                    label = f"dest_address[{i}]"
                    values = [self.read(f, f"{label}.{f.name}") for f in SME_ADDRESS_FIELDS]
                    dests.append(SmeAddress(*values))
                elif flag == 2:
                    dests.append(DistributionList(self.read(DL_NAME, f"dest_address[{i}].dl_name")))
                else:
                    self.fail(
                        DEST_FLAG.status,
                        f"dest_address[{i}].dest_flag is {flag}, expected 1 (SME) or 2 (list)",
                        "dest_flag",
                    )
            return tuple(dests)
        if kind == UNSUCCESS_SMES:
            count = self.integer(_NO_UNSUCCESS, "no_unsuccess")
            smes = []
            for i in range(count):
                label = f"unsuccess_sme[{i}]"
                values = [self.read(f, f"{label}.{f.name}") for f in UNSUCCESS_SME_FIELDS]
                smes.append(UnsuccessSme(*values))
            return tuple(smes)
        raise AssertionError(f"unknown kind {kind}")  # pragma: no cover

    def tlvs(self) -> tuple[tuple[int, Any], ...]:
        b, end = self.b, self.end
        out: list[tuple[int, Any]] = []
        while self.p < end:
            left = end - self.p
            if left < 4:
                self.fail(
                    S.ESME_RINVOPTPARSTREAM,
                    f"{left} octet(s) after the last field, too few for a TLV header",
                )
            tag, length = _unpack_tlv_header(b, self.p)
            name = tlv_name(tag)
            p = self.p + 4
            if p + length > end:
                self.fail(
                    S.ESME_RINVOPTPARSTREAM,
                    f"TLV {name} length {length} runs past the end of the PDU"
                    f" ({end - p} octets left)",
                    name,
                )
            raw = b[p : p + length]
            spec = TLVS.get(tag)
            value: Any = raw
            if spec is not None:
                tag = spec.tag
                if not spec.min_len <= length <= spec.max_len:
                    expected = (
                        str(spec.min_len)
                        if spec.min_len == spec.max_len
                        else f"{spec.min_len}..{spec.max_len}"
                    )
                    self.fail(
                        S.ESME_RINVPARLEN,
                        f"TLV {name} has length {length}, expected {expected}",
                        name,
                    )
                if spec.kind in _INT_WIDTH:
                    value = int.from_bytes(raw, "big")
                elif spec.kind == CSTRING:
                    text = raw[:-1] if raw.endswith(b"\0") else raw
                    if 0 in text:
                        self.fail(S.ESME_RINVOPTPARAMVAL, f"TLV {name} has a NUL inside", name)
                    if len(text) >= spec.max_len:
                        self.fail(
                            S.ESME_RINVPARLEN,
                            f"TLV {name} has {len(text)} octets and no NUL terminator,"
                            f" over the maximum of {spec.max_len} with it",
                            name,
                        )
                    value = text.decode("latin-1")
            out.append((tag, value))
            self.p = p + length
        return tuple(out)


def reference_decode(frame: bytes | bytearray | memoryview) -> Pdu:
    """Same contract as `decode`, by interpreting the declarations field by field.

    Slow. `decode` calls it to name what is wrong when its generated fast path refuses a
    frame; tests check both agree on every input.
    """
    frame = bytes(frame)
    if len(frame) < 16:
        _fail_header(frame)
    length, command_id, status, seq = _unpack_header(frame)
    if length != len(frame) or length < 16:
        _fail_header(frame)
    cls = PDU_CLASSES.get(command_id)
    if cls is None:
        _unknown_command(command_id, seq)
    if cls.IS_RESPONSE and status and length == 16:
        return cls(sequence_number=seq, command_status=status)
    reader = _Reader(frame, cls.COMMAND_ID.name, command_id, seq)
    values = {f.name: reader.read(f) for f in cls.FIELDS}
    tlvs = reader.tlvs()
    return cls(sequence_number=seq, command_status=status, tlvs=tlvs, **values)


def _local(pdu: Pdu, label: str, problem: str, field: str | None = None) -> LocalProtocolError:
    return LocalProtocolError(f"{pdu.COMMAND_ID.name}.{label} {problem}", field=field or label)


def _value_problem(field: Field, value: Any) -> str | None:
    """Why ``value`` cannot be encoded as ``field``, or None."""
    kind = field.kind
    if kind in _INT_WIDTH:
        top = (1 << (8 * _INT_WIDTH[kind])) - 1
        if not isinstance(value, int):
            return f"must be an int, got {type(value).__name__} {value!r}"
        if not 0 <= value <= top:
            return f"is {value}, outside 0..{top}"
        return None
    if kind in (CSTRING, TIME):
        if not isinstance(value, str):
            return f"must be a str, got {type(value).__name__} {value!r}"
        for i, char in enumerate(value):
            if ord(char) > 0xFF:
                return f"has {char!r} at position {i}, outside Latin-1 (one octet per character)"
            if char == "\0":
                return f"has a NUL at position {i} (C-Octet Strings end at the first NUL)"
        if kind == TIME and len(value) not in (0, 16):
            return f"must be empty or 16 characters (YYMMDDhhmmsstnnp), got {len(value)}"
        if len(value) + 1 > field.size:
            return (
                f"is {len(value)} characters, over the maximum of {field.size - 1}"
                f" (C-Octet String of {field.size} octets with its NUL)"
            )
        return None
    if kind == SM:
        if not isinstance(value, bytes):
            return f"must be bytes, got {type(value).__name__}"
        if len(value) > field.size:
            return f"is {len(value)} octets, over the maximum of {field.size} (use message_payload)"
        return None
    raise AssertionError(f"unknown kind {kind}")  # pragma: no cover


def _check_list(pdu: Pdu, field: Field, value: Any) -> None:
    name = field.name
    if not isinstance(value, tuple):
        raise _local(pdu, name, f"must be a tuple, got {type(value).__name__}")
    if field.kind == DEST_ADDRESSES:
        if not 0 < len(value) <= _MAX_DESTS:
            raise _local(pdu, name, f"has {len(value)} entries; number_of_dests must be 1..254")
        for i, dest in enumerate(value):
            if isinstance(dest, SmeAddress):
                subfields: tuple[Field, ...] = SME_ADDRESS_FIELDS
            elif isinstance(dest, DistributionList):
                subfields = (DL_NAME,)
            else:
                raise _local(
                    pdu, f"{name}[{i}]", "must be a SmeAddress or a DistributionList", name
                )
            for sub, item in zip(subfields, dest, strict=True):
                problem = _value_problem(sub, item)
                if problem:
                    raise _local(pdu, f"{name}[{i}].{sub.name}", problem, name)
    else:
        if len(value) > 255:
            raise _local(pdu, name, f"has {len(value)} entries; no_unsuccess is at most 255")
        for i, sme in enumerate(value):
            if not isinstance(sme, UnsuccessSme):
                raise _local(pdu, f"{name}[{i}]", "must be an UnsuccessSme", name)
            for sub, item in zip(UNSUCCESS_SME_FIELDS, sme, strict=True):
                problem = _value_problem(sub, item)
                if problem:
                    raise _local(pdu, f"{name}[{i}].{sub.name}", problem, name)


def _tlv_problem(tag: Any, value: Any) -> str | None:
    if not isinstance(tag, int) or not 0 <= tag <= 0xFFFF:
        return f"tag {tag!r} is not an int in 0..0xFFFF"
    spec = TLVS.get(tag)
    if spec is None:
        if not isinstance(value, bytes):
            return f"value must be bytes (unknown tag), got {type(value).__name__}"
        if len(value) > 0xFFFF:
            return f"value is {len(value)} octets, over 65535"
        return None
    if spec.kind in _INT_WIDTH:
        return _value_problem(Field(spec.tag.name, spec.kind, 0, 0), value)
    if spec.kind == CSTRING:
        return _value_problem(Field(spec.tag.name, CSTRING, spec.max_len, 0), value)
    if not isinstance(value, bytes):
        return f"value must be bytes, got {type(value).__name__}"
    if not spec.min_len <= len(value) <= spec.max_len:
        bounds = (
            str(spec.min_len) if spec.min_len == spec.max_len else f"{spec.min_len}..{spec.max_len}"
        )
        return f"value is {len(value)} octets, expected {bounds}"
    return None


def reference_encode(pdu: Pdu) -> bytes:
    """Same contract as `encode`, by interpreting the declarations field by field.

    Slow. `encode` calls it to name the offending field when its generated fast path
    refuses a PDU; tests check both produce the same bytes.
    """
    if not isinstance(pdu, Pdu) or pdu.__class__ not in _PDU_TYPES:
        raise LocalProtocolError(f"not an SMPP PDU: {type(pdu).__name__}")
    for label, value in (("command_status", pdu[1]), ("sequence_number", pdu[2])):
        if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            raise _local(pdu, label, f"must be an int in 0..0xFFFFFFFF, got {value!r}")
    body = bytearray()
    for field, value in zip(pdu.FIELDS, pdu[3:-1], strict=True):
        if field.kind in (DEST_ADDRESSES, UNSUCCESS_SMES):
            _check_list(pdu, field, value)
            if field.kind == DEST_ADDRESSES:
                body.append(len(value))
                for dest in value:
                    if isinstance(dest, SmeAddress):
                        body += bytes((1, dest.dest_addr_ton, dest.dest_addr_npi))
                        body += dest.destination_addr.encode("latin-1") + b"\0"
                    else:
                        body += b"\x02" + dest.dl_name.encode("latin-1") + b"\0"
            else:
                body.append(len(value))
                for sme in value:
                    body += bytes((sme.dest_addr_ton, sme.dest_addr_npi))
                    body += sme.destination_addr.encode("latin-1") + b"\0"
                    body += sme.error_status_code.to_bytes(4, "big")
            continue
        problem = _value_problem(field, value)
        if problem:
            raise _local(pdu, field.name, problem)
        if field.kind in _INT_WIDTH:
            body += value.to_bytes(_INT_WIDTH[field.kind], "big")
        elif field.kind == SM:
            body.append(len(value))
            body += value
        else:
            body += value.encode("latin-1") + b"\0"
    tlvs = pdu[-1]
    if not isinstance(tlvs, tuple):
        raise _local(pdu, "tlvs", f"must be a tuple of (tag, value) pairs, got {tlvs!r}")
    for i, item in enumerate(tlvs):
        if not isinstance(item, tuple) or len(item) != 2:
            raise _local(pdu, f"tlvs[{i}]", f"must be a (tag, value) pair, got {item!r}", "tlvs")
        tag, value = item
        problem = _tlv_problem(tag, value)
        if problem:
            if isinstance(tag, int) and 0 <= tag <= 0xFFFF:
                name = tlv_name(tag)
                raise _local(pdu, f"tlvs[{name}]", problem, name)
            raise _local(pdu, f"tlvs[{i}]", problem)
        spec = TLVS.get(tag)
        if spec is not None and spec.kind in _INT_WIDTH:
            raw = value.to_bytes(_INT_WIDTH[spec.kind], "big")
        elif spec is not None and spec.kind == CSTRING:
            raw = value.encode("latin-1") + b"\0"
        else:
            raw = value
        body += _pack_tlv_header(tag, len(raw)) + raw
    if 16 + len(body) > 0xFFFFFFFF:  # pragma: no cover - 4 GiB
        raise _local(pdu, "command_length", "is over 0xFFFFFFFF")
    return _pack_header(16 + len(body), pdu.COMMAND_ID, pdu[1], pdu[2]) + bytes(body)
