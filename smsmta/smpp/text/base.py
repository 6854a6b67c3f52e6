"""SMS text limits and errors: what every part of `smsmta.smpp.text` shares.

The size of one SMS and of a long message, and the `TextError` family: `UnencodableText`,
`TooManyParts` and `PayloadTooLong` (raised while encoding), `MalformedUDH` and
`BadSegment` (raised while reading a UDH or putting a long MO together).

Touches nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smsmta.smpp.text.encode import Rejection

MAX_PARTS = 255
"""Protocol ceiling: the concatenation IE counts parts in one octet."""

SM_OCTETS = 140
"""User data of one SMS: 140 octets = 160 septets."""

PAYLOAD_MAX_OCTETS = 0xFFFF
"""The message_payload TLV length field is 16 bits."""


class TextError(ValueError):
    """Base class of this module's errors."""


class UnencodableText(TextError):
    """No encoding of the mapping takes the text; names the blocking character."""

    def __init__(self, blocking: Rejection, rejected: tuple[Rejection, ...]) -> None:
        self.char = blocking.char
        self.index = blocking.index
        self.rejected = rejected
        message = (
            f"cannot encode the text: {_describe(self.char)} at index {self.index} (0-based) "
            f"is not in {blocking.encoding}"
        )
        others = [r for r in rejected if r is not blocking]
        if others:
            tried = "; ".join(
                f"{r.encoding} stopped at {_describe(r.char)}, index {r.index}" for r in others
            )
            message += f" ({tried})"
        super().__init__(message)


class TooManyParts(TextError):
    """The text needs more SMS parts than the delivery allows."""

    def __init__(self, needed: int, allowed: int, encoding: str, detail: str) -> None:
        self.needed = needed
        self.allowed = allowed
        self.encoding = encoding
        super().__init__(
            f"the text needs {needed} SMS parts in {encoding} ({detail}) "
            f"but at most {allowed} are allowed"
            + (" (255 is the protocol ceiling)" if allowed == MAX_PARTS else "")
        )


class PayloadTooLong(TextError):
    """The encoded text does not fit the 16-bit message_payload TLV length."""


class MalformedUDH(TextError):
    """A user data header whose lengths do not hold together, or a known IE of the wrong size."""


class BadSegment(TextError):
    """A concatenation segment with an impossible reference, total or sequence number."""


def _describe(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X})" if len(char) == 1 else repr(char)
