"""Encode + split rate of typical MT texts, and decode rate of an MO part, in `smsmta.smpp.text`.

Prints messages per second, one thread, for: a 1-part GSM7 text (the MTA's hot path), a
3-part GSM7 text with extension characters, a 1-part UCS-2 text (emoji), a French text
kept in GSM7 by transliteration, and the decoding of one GSM7 part with a concat UDH.
Run: `.venv/bin/python bench/text.py [seconds per case]`.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable

from smsmta.smpp.text import decode_short_message, encode_message
from smsmta.testing.conditions import python_version

ENCODE_CASES: dict[str, tuple[str, dict[str, object]]] = {
    "1-part GSM7, 84 chars": (
        "Hello Marie, your code is 482913. Reply STOP to opt out of messages from ACME Ltd.!",
        {},
    ),
    "3-part GSM7, 400 chars, 8 escapes": (
        ("Big sale [today only]: 20€ off {all} shoes | ~ see site. " * 7)[:400],
        {"reference": 42},
    ),
    "1-part UCS-2, 60 chars, emoji": (
        "Joyeux anniversaire Marie 🎉 profitez de -20% avec le code B",
        {},
    ),
    "French via transliteration, 346 chars": (
        (
            "Bonjour Chloé, votre commande n°1234 est prête à être retirée. "
            "N’oubliez pas : « offre spéciale » — jusqu’à 30 % sur les œuvres… "
            "À très bientôt, l’équipe. "
        )
        * 2,
        {"transliterate": True},
    ),
}


def rate(fn: Callable[[], object], seconds: float) -> float:
    n, batch = 0, 1000
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    python = python_version()
    print(
        f"smsmta.smpp.text: {python}, {platform.machine()}, {os.cpu_count()} CPUs "
        f"(one thread used), {seconds:g} s per case"
    )
    for label, (text, kwargs) in ENCODE_CASES.items():
        msg = encode_message(text, **kwargs)  # type: ignore[arg-type]
        per_second = rate(lambda t=text, k=kwargs: encode_message(t, **k), seconds)  # type: ignore[misc]
        shape = f"{msg.encoding}, {msg.part_count} part(s)"
        print(f"  encode {label:38s} {shape:18s} {per_second:>10,.0f} msg/s")
    part = encode_message("x" * 300, reference=7).parts[0]
    per_second = rate(lambda: decode_short_message(part, 0, udhi=True), seconds)
    label, shape = "MO part, concat UDH, 153 chars", "gsm7, 1 part(s)"
    print(f"  decode {label:38s} {shape:18s} {per_second:>10,.0f} msg/s")


if __name__ == "__main__":
    main()
