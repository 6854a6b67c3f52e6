"""Putting long MOs back together from UDH concatenation IEs or SAR TLVs.

`Reassembler` takes the parts in any arrival order, ignores duplicates, and hands back
incomplete messages (`PartialMessage`) once their time is up. Time enters as an argument.

Touches nothing.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from smsmta.smpp.text.base import MAX_PARTS, BadSegment
from smsmta.smpp.text.decode import _fix_surrogates


@dataclass(frozen=True, slots=True)
class PartialMessage:
    """A long MO whose parts did not all arrive in time."""

    key: Hashable
    reference: int
    total: int
    parts: tuple[tuple[int, str], ...]
    """(sequence number, text) of the parts received, in order."""
    first_seen: float

    @property
    def missing(self) -> tuple[int, ...]:
        have = {seq for seq, _ in self.parts}
        return tuple(seq for seq in range(1, self.total + 1) if seq not in have)

    def joined(self, gap: str = "[...]") -> str:
        """The received text in order, with `gap` where parts are missing."""
        texts = dict(self.parts)
        pieces: list[str] = []
        for seq in range(1, self.total + 1):
            piece = texts.get(seq)
            if piece is None:
                if not pieces or pieces[-1] is not gap:
                    pieces.append(gap)
            else:
                pieces.append(piece)
        return _fix_surrogates("".join(pieces))[0]


class Reassembler:
    """Puts long MOs back together, whatever the order their parts arrive in.

    A message is identified by the caller's `key` (say account, source and destination
    address), its reference and its total; parts come from a UDH concat IE or from the SAR
    TLVs. `add` returns the whole text when the last part arrives, else None. Duplicates are
    ignored (also for `timeout` after completion). Call `expired(now)` regularly: it hands
    back, and forgets, messages still incomplete `timeout` seconds after their first part.
    """

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = timeout
        self._pending: dict[tuple[Hashable, int, int], tuple[float, dict[int, str]]] = {}
        self._done: dict[tuple[Hashable, int, int], float] = {}

    def __len__(self) -> int:
        """Messages waiting for parts."""
        return len(self._pending)

    def add(
        self, key: Hashable, ref: int, total: int, seq: int, text: str, now: float
    ) -> str | None:
        if not 1 <= total <= MAX_PARTS:
            raise BadSegment(f"total {total} is outside 1..{MAX_PARTS}")
        if not 1 <= seq <= total:
            raise BadSegment(f"part {seq} of {total} is out of range")
        if not 0 <= ref <= 0xFFFF:
            raise BadSegment(f"reference {ref} is outside 0..65535")
        if total == 1:
            return _fix_surrogates(text)[0]
        ident = (key, ref, total)
        if ident in self._done:
            return None  # a late duplicate of a message already handed back
        entry = self._pending.get(ident)
        if entry is None:
            entry = self._pending[ident] = (now, {})
        parts = entry[1]
        if seq in parts:
            return None
        parts[seq] = text
        if len(parts) < total:
            return None
        del self._pending[ident]
        self._done[ident] = now
        return _fix_surrogates("".join(parts[i] for i in range(1, total + 1)))[0]

    def expired(self, now: float) -> list[PartialMessage]:
        """Incomplete messages whose first part is `timeout` or more old, now forgotten."""
        deadline = now - self.timeout
        for ident in [i for i, done_at in self._done.items() if done_at <= deadline]:
            del self._done[ident]
        out: list[PartialMessage] = []
        for ident in [i for i, (first, _) in self._pending.items() if first <= deadline]:
            first, parts = self._pending.pop(ident)
            key, ref, total = ident
            received = tuple((seq, _fix_surrogates(parts[seq])[0]) for seq in sorted(parts))
            out.append(PartialMessage(key, ref, total, received, first))
        return out
