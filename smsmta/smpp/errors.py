"""The two ways an SMPP exchange goes wrong, named by the party at fault (as in h11).

What it does: defines `SmppError` and its two subclasses.

- `LocalProtocolError`: *we* asked for something the protocol forbids (a field over its
  limit, a value of the wrong type, a response to a PDU that has none). Raised before any
  byte is produced, so nothing has changed: no state moved, nothing was queued.
- `RemoteProtocolError`: the *peer* sent bytes that are not valid SMPP 3.4. It carries what
  the session needs to answer and decide without parsing the message text:
  ``command_status`` (the status to answer with: ESME_RINVCMDLEN, ESME_RINVCMDID,
  ESME_RINVSRCADR, ESME_RINVPARLEN...), ``sequence_number`` and ``command_id`` when the
  16-octet header was readable (else None), ``field`` (the offending field or TLV, if any)
  and ``framing_lost``: True when the byte stream can no longer be split into PDUs
  (command_length under 16 or over the maximum), after which the connection must be reset.
  When framing is not lost, the bad PDU's own command_length delimited it and the stream
  goes on with the next PDU.

Contract: every exception the codec lets out on bad input is a `RemoteProtocolError`; on a
bad `encode` argument it is a `LocalProtocolError`. Touches nothing (no I/O, no logging).

Why our own: smpplib raises plain exceptions (or truncates silently) without saying whose
fault it is or which status answers it, so a session on top of it cannot decide between
answering, generic_nack and resetting the connection.
"""

from __future__ import annotations


class SmppError(Exception):
    """Base of every error raised by the `smpp` package."""


class LocalProtocolError(SmppError):
    """Our own request breaks SMPP 3.4 (e.g. a field over its limit); nothing was changed.

    ``field`` names the offending field or TLV when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RemoteProtocolError(SmppError):
    """The peer sent something that is not valid SMPP 3.4.

    Attributes:
        command_status: the status to answer with (``CommandStatus`` value).
        sequence_number: of the offending PDU, when its header was readable, else None.
        command_id: of the offending PDU, when its header was readable, else None.
        framing_lost: True when the stream cannot be split into PDUs any more (reset it).
        field: the offending field or TLV name, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        command_status: int,
        sequence_number: int | None = None,
        command_id: int | None = None,
        framing_lost: bool = False,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.command_status = command_status
        self.sequence_number = sequence_number
        self.command_id = command_id
        self.framing_lost = framing_lost
        self.field = field

    def __repr__(self) -> str:
        return (
            f"RemoteProtocolError({self.args[0]!r}, command_status=0x{self.command_status:08X},"
            f" sequence_number={self.sequence_number!r}, command_id="
            f"{'None' if self.command_id is None else f'0x{self.command_id:08X}'},"
            f" framing_lost={self.framing_lost!r}, field={self.field!r})"
        )
