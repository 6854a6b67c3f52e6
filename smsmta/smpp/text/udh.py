"""The user data header and GSM 7-bit septet packing (TS 23.040 9.2.3.24, TS 23.038 6.1.2).

- `pack_septets` / `unpack_septets` / `fill_bits_after`: septets one per octet <-> packed.
- `build_udh(elements)` writes a UDH; `parse_udh(data)` reads one into a `UserDataHeader`
  (concatenation, national language shift tables, application ports) and raises
  `MalformedUDH` when its lengths do not hold together or a known IE has the wrong size.

Touches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from smsmta.smpp.text.base import SM_OCTETS, MalformedUDH

IEI_CONCAT_8 = 0x00
IEI_PORTS_8 = 0x04
IEI_PORTS_16 = 0x05
IEI_CONCAT_16 = 0x08
IEI_SINGLE_SHIFT = 0x24
IEI_LOCKING_SHIFT = 0x25


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack one-septet-per-octet data into GSM 7-bit packed octets.

    `fill_bits` zero bits come first (after a UDH, so the first septet starts on a septet
    boundary of the user data: see `fill_bits_after`). When the last octet would end with
    7 spare bits, they carry a CR (TS 23.038 6.1.2.3.1) so they are not read as "@".
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    n = len(septets)
    if n == 0:
        return b""
    if max(septets) > 0x7F:
        raise ValueError("a septet above 0x7F cannot be packed")
    value = 0
    for s in reversed(septets):
        value = (value << 7) | s
    bits = fill_bits + 7 * n
    value <<= fill_bits
    octets = (bits + 7) // 8
    if octets * 8 - bits == 7:
        value |= 0x0D << bits
    return value.to_bytes(octets, "little")


def unpack_septets(data: bytes, fill_bits: int = 0, count: int | None = None) -> bytes:
    """Unpack GSM 7-bit packed octets to one septet per octet.

    `count` is the number of septets when known; without it every whole septet is
    returned, except a CR in the last 7 bits, which TS 23.038 6.1.2.3.1 makes padding.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    bits = len(data) * 8 - fill_bits
    available = max(bits, 0) // 7
    n = available if count is None else min(count, available)
    value = int.from_bytes(data, "little") >> fill_bits
    out = bytearray(n)
    for i in range(n):
        out[i] = value & 0x7F
        value >>= 7
    if count is None and n and bits % 7 == 0 and out[-1] == 0x0D:
        del out[-1]
    return bytes(out)


def fill_bits_after(udh_octets: int) -> int:
    """Fill bits between a UDH of `udh_octets` octets (UDHL included) and the first septet."""
    return (7 - (udh_octets * 8) % 7) % 7


def _shift_ies(single: int | None, locking: int | None) -> bytes:
    ies = b""
    if single is not None:
        ies += bytes((IEI_SINGLE_SHIFT, 1, single))
    if locking is not None:
        ies += bytes((IEI_LOCKING_SHIFT, 1, locking))
    return ies


def build_udh(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """A UDH (UDHL included) from (IEI, value) pairs, in the given order."""
    body = b"".join(bytes((iei, len(value))) + value for iei, value in elements)
    if len(body) > SM_OCTETS - 1:
        raise ValueError(f"a UDH of {len(body) + 1} octets does not fit an SMS")
    return bytes((len(body),)) + body


@dataclass(frozen=True, slots=True)
class Concat:
    """A concatenation IE: this is part `seq` of `total` of message `reference`."""

    reference: int
    total: int
    seq: int
    reference_bits: int = 8


@dataclass(frozen=True, slots=True)
class UserDataHeader:
    length: int
    """Octets the UDH takes at the start of the short message, UDHL included."""
    elements: tuple[tuple[int, bytes], ...]
    """Every IE as (IEI, value), unknown ones included, in order."""
    concat: Concat | None = None
    single_shift: int | None = None
    locking_shift: int | None = None
    ports: tuple[int, int] | None = None
    """(destination port, originator port) of an application port IE (0x04 or 0x05)."""
    notes: tuple[str, ...] = ()
    """IEs ignored as TS 23.040 asks (a concatenation IE with sequence 0, for instance)."""


_KNOWN_IE_SIZES = {
    IEI_CONCAT_8: (3, "concatenation, 8-bit reference"),
    IEI_PORTS_8: (2, "application ports, 8-bit"),
    IEI_PORTS_16: (4, "application ports, 16-bit"),
    IEI_CONCAT_16: (4, "concatenation, 16-bit reference"),
    IEI_SINGLE_SHIFT: (1, "national language single shift"),
    IEI_LOCKING_SHIFT: (1, "national language locking shift"),
}


def parse_udh(data: bytes) -> UserDataHeader:
    """Parse the UDH at the start of a short message (UDHI set). Raises `MalformedUDH`."""
    if not data:
        raise MalformedUDH("UDHI is set but the short message is empty")
    udhl = data[0]
    end = 1 + udhl
    if end > len(data):
        raise MalformedUDH(
            f"UDH length {udhl} runs past the end of the {len(data)}-octet short message"
        )
    elements: list[tuple[int, bytes]] = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise MalformedUDH(f"information element at UDH offset {pos} is cut short")
        iei, size = data[pos], data[pos + 1]
        if pos + 2 + size > end:
            raise MalformedUDH(
                f"information element 0x{iei:02X} at UDH offset {pos} declares {size} octets "
                f"but only {end - pos - 2} remain in the UDH"
            )
        elements.append((iei, bytes(data[pos + 2 : pos + 2 + size])))
        pos += 2 + size

    concat = None
    single = locking = None
    ports = None
    notes: list[str] = []
    for iei, value in elements:  # a repeated IE: the last one counts (TS 23.040 9.2.3.24)
        known = _KNOWN_IE_SIZES.get(iei)
        if known is None:
            continue
        if len(value) != known[0]:
            raise MalformedUDH(
                f"information element 0x{iei:02X} ({known[1]}) must hold {known[0]} octets, "
                f"got {len(value)}"
            )
        if iei in (IEI_CONCAT_8, IEI_CONCAT_16):
            if iei == IEI_CONCAT_8:
                ref, total, seq, bits = value[0], value[1], value[2], 8
            else:
                ref, total, seq, bits = (value[0] << 8) | value[1], value[2], value[3], 16
            if total == 0 or seq == 0 or seq > total:
                notes.append(
                    f"concatenation IE ignored: part {seq} of {total} is impossible (TS 23.040)"
                )
                continue
            concat = Concat(ref, total, seq, bits)
        elif iei == IEI_SINGLE_SHIFT:
            single = value[0]
        elif iei == IEI_LOCKING_SHIFT:
            locking = value[0]
        elif iei == IEI_PORTS_8:
            ports = (value[0], value[1])
        else:
            ports = ((value[0] << 8) | value[1], (value[2] << 8) | value[3])
    return UserDataHeader(end, tuple(elements), concat, single, locking, ports, tuple(notes))
