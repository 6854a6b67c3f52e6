"""Fuzz the codec: any input either decodes or raises RemoteProtocolError, never anything else.

The promise checked (as h11's fuzz harness does): for every input, fed to `decode` whole
and to the `Framer` both whole and one byte at a time,

- `decode` returns a PDU or raises RemoteProtocolError (no other exception, no hang);
- the generated fast decoder and the table-driven reference decoder agree (same PDU, or
  both refuse), and whatever decodes re-encodes to something that decodes the same;
- the Framer yields the same frames and the same framing error however the bytes are
  chunked; a frame it yields never loses framing when decoded, so a bad PDU whose
  command_length is sane never stops the next PDU from decoding.

The bulk is a seeded `random.Random` loop (110,000 inputs: random bytes, random bodies
under a sane header, and valid PDUs mutated by bit flips, truncations, command_length
changes, inserted/deleted bytes, swapped command_ids and appended TLVs); a smaller
Hypothesis part mutates structured PDUs drawn from the strategies of test_codec.py.
"""

from __future__ import annotations

import random
import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsmta.smpp.codec import _DECODERS, Framer, decode, encode, reference_decode
from smsmta.smpp.errors import RemoteProtocolError
from smsmta.smpp.pdu import (
    CSTRING,
    DEST_ADDRESSES,
    INT8,
    INT16,
    INT32,
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
from tests.smpp.test_codec import GOLDEN, any_pdu

SEED = 0x5A5A_2024
EXAMPLES = 110_000
MAX_COMMAND_LENGTH = 4096  # small, so that "over the maximum" is reached by mutations too
COMMAND_IDS = sorted(PDU_CLASSES)
_UINT = {INT8: 0xFF, INT16: 0xFFFF, INT32: 0xFFFFFFFF}


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def _outcome(function: Any, data: bytes) -> tuple[Any, ...]:
    """("ok", pdu) or ("error", ...what the error says); any other exception propagates."""
    try:
        return ("ok", function(data))
    except RemoteProtocolError as error:
        return (
            "error",
            error.command_status,
            error.framing_lost,
            error.sequence_number,
            error.command_id,
            error.field,
            str(error),
        )


def _fast_outcome(data: bytes) -> tuple[Any, ...] | None:
    """The generated decoder alone, on a frame whose header is sane; None otherwise."""
    if len(data) < 16:
        return None
    length, command_id, status, seq = struct.unpack_from(">IIII", data)
    decoder = _DECODERS.get(command_id)
    if length != len(data) or decoder is None:
        return None
    try:
        return ("ok", decoder(data, status, seq))
    except Exception:
        return ("refused",)


def _frames(stream: bytes, *, bytewise: bool) -> tuple[list[bytes], str | None, int]:
    """Frames the Framer yields, the framing error if any, and the octets left over."""
    framer = Framer(MAX_COMMAND_LENGTH)
    frames: list[bytes] = []
    try:
        if bytewise:
            feed, next_frame = framer.feed, framer.next_frame
            for i in range(len(stream)):
                feed(stream[i : i + 1])
                frame = next_frame()  # one more octet completes at most one frame
                if frame is not None:
                    frames.append(frame)
        else:
            framer.feed(stream)
            frames.extend(framer)
    except RemoteProtocolError as error:
        assert error.framing_lost, error
        return frames, f"{error} seq={error.sequence_number} id={error.command_id}", -1
    return frames, None, framer.buffered


def check(data: bytes, tail: bytes = b"") -> str:
    """Run every check on one input; return what happened, for the statistics."""
    outcome = _outcome(decode, data)
    reference = _outcome(reference_decode, data)
    assert outcome == reference, (outcome, reference)
    fast = _fast_outcome(data)
    if fast is not None:
        if fast[0] == "ok":
            assert reference[0] == "ok" and fast[1] == reference[1], (fast, reference)
        else:
            assert reference[0] == "error", ("fast path refused a valid frame", reference)
    if outcome[0] == "ok":
        pdu = outcome[1]
        assert isinstance(pdu, Pdu)
        assert decode(encode(pdu)) == pdu

    stream = data + tail
    whole = _frames(stream, bytewise=False)
    assert whole == _frames(stream, bytewise=True)
    frames, framing_error, _ = whole
    for frame in frames:
        result = _outcome(decode, frame)
        assert result[0] == "ok" or result[2] is False, ("a framed PDU lost framing", result)
    if len(data) >= 16 and 16 <= struct.unpack_from(">I", data)[0] == len(data) <= (
        MAX_COMMAND_LENGTH
    ):
        # command_length delimited this PDU: whatever it holds, the next PDU still decodes
        assert framing_error is None
        assert frames == ([data, tail] if tail else [data])
    if outcome[0] == "ok":
        return "decoded"
    return "framing lost" if outcome[2] else f"refused 0x{outcome[1]:02X}"


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _text(rng: random.Random, max_chars: int) -> str:
    n = rng.choice((0, 1, rng.randrange(max_chars + 1), max_chars))
    return rng.randbytes(min(n, max_chars)).decode("latin-1").replace("\0", "0")


def _value(rng: random.Random, kind: str, size: int) -> Any:
    if kind in _UINT:
        return rng.choice((0, 1, _UINT[kind], rng.randrange(_UINT[kind] + 1)))
    if kind == CSTRING:
        return _text(rng, size - 1)
    if kind == TIME:
        return rng.choice(("", _text(rng, 16).ljust(16, "0")))
    if kind == SM:
        return rng.randbytes(rng.choice((0, rng.randrange(40), rng.randrange(size + 1))))
    if kind == DEST_ADDRESSES:
        return tuple(
            SmeAddress(rng.randrange(256), rng.randrange(256), _text(rng, 20))
            if rng.random() < 0.7
            else DistributionList(_text(rng, 20))
            for _ in range(rng.randint(1, 4))
        )
    if kind == UNSUCCESS_SMES:
        return tuple(
            UnsuccessSme(rng.randrange(256), rng.randrange(256), _text(rng, 20), rng.randrange(99))
            for _ in range(rng.randint(0, 3))
        )
    raise AssertionError(kind)


_TLV_SPECS = list(TLVS.values())


def _tlv(rng: random.Random) -> tuple[int, Any]:
    if rng.random() < 0.2:
        tag = rng.choice((0x1400, 0x1401, 0x3FFF, 0x0000, 0xFFFF))
        return tag, rng.randbytes(rng.randrange(12))
    spec = rng.choice(_TLV_SPECS)
    if spec.kind in _UINT:
        return spec.tag, _value(rng, spec.kind, 0)
    if spec.kind == CSTRING:
        return spec.tag, _text(rng, min(spec.max_len - 1, 40))
    return spec.tag, rng.randbytes(rng.randint(spec.min_len, min(spec.max_len, 40)))


def random_pdu(rng: random.Random) -> Pdu:
    cls = PDU_CLASSES[rng.choice(COMMAND_IDS)]
    fields = {f.name: _value(rng, f.kind, f.size) for f in cls.FIELDS}
    tlvs = tuple(_tlv(rng) for _ in range(rng.choice((0, 0, 1, 2, 3))))
    return cls(
        sequence_number=rng.randrange(1 << 32),
        command_status=rng.choice((0, 0, 0x58, rng.randrange(1 << 32))),
        tlvs=tlvs,
        **fields,
    )


def _fix_length(data: bytearray) -> None:
    if len(data) >= 4:
        data[0:4] = struct.pack(">I", len(data))


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(9)
        if op == 0 and data:  # bit flip
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # byte set to a boundary value
            data[rng.randrange(len(data))] = rng.choice((0, 0xFF, 0x10, rng.randrange(256)))
        elif op == 2 and data:  # truncation
            del data[rng.randrange(len(data)) :]
        elif op == 3:  # inserted bytes (often a NUL)
            at = rng.randrange(len(data) + 1)
            data[at:at] = b"\0" if rng.random() < 0.3 else rng.randbytes(rng.randint(1, 8))
        elif op == 4 and data:  # deleted bytes
            at = rng.randrange(len(data))
            del data[at : at + rng.randint(1, 4)]
        elif op == 5 and len(data) >= 4:  # command_length changed
            length = rng.choice(
                (len(data) + rng.randint(-3, 3), rng.randrange(32), rng.randrange(1 << 32))
            )
            data[0:4] = struct.pack(">I", max(0, length))
        elif op == 6 and len(data) >= 8:  # another command's layout over this body
            data[4:8] = struct.pack(">I", rng.choice((*COMMAND_IDS, rng.randrange(1 << 32))))
        elif op == 7:  # a TLV appended, its length right or wrong
            spec = rng.choice(_TLV_SPECS)
            value = rng.randbytes(rng.randrange(6))
            length = rng.choice((len(value), rng.randrange(8), spec.max_len, 0xFFFF))
            data += struct.pack(">HH", spec.tag, length) + value
        elif op == 8 and len(data) > 16:  # sm_length-like byte near the end bumped
            at = rng.randrange(16, len(data))
            data[at] = (data[at] + rng.choice((1, -1, 128))) % 256
    if rng.random() < 0.6:
        _fix_length(data)
    return bytes(data)


def _inputs(rng: random.Random, count: int, corpus: list[bytes]) -> Any:
    for _ in range(count):
        roll = rng.random()
        if roll < 0.12:  # random bytes
            yield rng.randbytes(rng.choice((rng.randrange(16), rng.randrange(64))))
        elif roll < 0.27:  # a sane header over a random body
            body = rng.randbytes(rng.choice((0, rng.randrange(8), rng.randrange(80))))
            command_id = rng.choice((*COMMAND_IDS, rng.randrange(1 << 32)))
            status = rng.choice((0, 0x58))
            yield struct.pack(">IIII", 16 + len(body), command_id, status, 7) + body
        else:  # a valid PDU, mutated
            yield mutate(rng, rng.choice(corpus))


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_seeded_fuzz() -> None:
    rng = random.Random(SEED)
    corpus = [wire for _, _, wire in GOLDEN] + [encode(random_pdu(rng)) for _ in range(3000)]
    tail = encode(GOLDEN[0][1])
    for frame in corpus:
        assert check(frame, tail) == "decoded"
    seen: dict[str, int] = {}
    started = time.perf_counter()
    for index, data in enumerate(_inputs(rng, EXAMPLES, corpus)):
        try:
            kind = check(data, tail if index % 2 else b"")
        except AssertionError as error:
            raise AssertionError(f"input #{index} {data.hex()}: {error}") from error
        seen[kind] = seen.get(kind, 0) + 1
    elapsed = time.perf_counter() - started
    # the mix reached every kind of outcome, not just one
    assert seen["decoded"] > EXAMPLES // 20, seen
    assert seen["framing lost"] > EXAMPLES // 20, seen
    for status in ("0x02", "0x03", "0x01", "0xC0", "0xC2", "0x0A", "0x0B", "0x0C", "0x62"):
        assert seen.get(f"refused {status}", 0) > 0, (status, seen)
    print(f"{EXAMPLES} inputs in {elapsed:.1f}s: {dict(sorted(seen.items()))}")


def test_generated_pdus_are_diverse_and_valid() -> None:
    rng = random.Random(SEED)
    pdus = [random_pdu(rng) for _ in range(500)]
    assert {pdu.COMMAND_ID for pdu in pdus} == set(PDU_CLASSES)
    for pdu in pdus:
        assert decode(encode(pdu)) == pdu


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pdu=any_pdu,
    edits=st.lists(
        st.tuples(st.sampled_from(("flip", "cut", "insert", "length")), st.integers(0, 1 << 16)),
        min_size=1,
        max_size=3,
    ),
    fix_length=st.booleans(),
)
def test_mutated_structured_pdus(pdu: Pdu, edits: list[tuple[str, int]], fix_length: bool) -> None:
    data = bytearray(encode(pdu))
    for op, n in edits:
        at = n % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << (n % 8)
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = bytes([n % 256])
        elif op == "length" and len(data) >= 4:
            data[0:4] = struct.pack(">I", n)
    if fix_length:
        _fix_length(data)
    check(bytes(data), encode(pdu))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=200, deadline=None)
@given(
    command_id=st.sampled_from(COMMAND_IDS),
    status=st.sampled_from((0, 0x58)),
    body=st.binary(max_size=120),
)
def test_random_bodies_under_a_sane_header(command_id: int, status: int, body: bytes) -> None:
    check(struct.pack(">IIII", 16 + len(body), command_id, status, 1) + body)
