"""How fast the SMPP codec encodes and decodes, on one core, and under which conditions.

What it does: times `smsmta.smpp.codec.encode` (a built PDU -> bytes) and `smsmta.smpp.codec.decode`
(one frame -> PDU) for the three PDUs that carry an MTA's traffic: a typical one-part MT
``submit_sm`` with a few TLVs, its ``submit_sm_resp``, and a ``deliver_sm`` carrying an
Annex B delivery receipt with the receipted_message_id and message_state TLVs. Also times
the `Framer` cutting a stream of such frames, and, when it is installed, PyPI's smpplib on
the same submit_sm for comparison. Prints the rates with the Python version, the CPU model
(from /proc/cpuinfo), the iterations and the best-of-N rule used.

Target (SPEC-level decision for the codec): >= 200,000 per second for each encode and
each decode, on one core. Exit status 1 when a figure is under it and --check is given.

Run: ``.venv/bin/python bench/codec.py [--iterations N] [--repeat R] [--check]``.
Touches nothing but the CPU: no network, no files written.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smsmta.smpp.codec import Framer, decode, encode
from smsmta.smpp.constants import EsmClass, MessageState, Npi, Tag, Ton
from smsmta.smpp.pdu import DeliverSm, SubmitSm, SubmitSmResp
from smsmta.testing.conditions import describe_conditions

TARGET_PER_SECOND = 200_000

TEXT = b"Votre code de confirmation est 482913. Il expire dans 10 minutes. STOP au 36180"
RECEIPT = (
    b"id:7f3a9c21d04e sub:001 dlvrd:001 submit date:2406011200 done date:2406011201"
    b" stat:DELIVRD err:000 Text:Votre code de confirmat"
)

SUBMIT_SM = SubmitSm(
    sequence_number=123456,
    source_addr_ton=Ton.ALPHANUMERIC,
    source_addr_npi=Npi.UNKNOWN,
    source_addr="MyBrand",
    dest_addr_ton=Ton.INTERNATIONAL,
    dest_addr_npi=Npi.ISDN,
    destination_addr="33612345678",
    registered_delivery=1,
    data_coding=0,
    short_message=TEXT,
    tlvs=(
        (Tag.user_message_reference, 4242),
        (Tag.dest_addr_subunit, 1),
        (0x1400, b"campaign-2024-06"),  # a vendor service-id TLV
    ),
)
SUBMIT_SM_RESP = SubmitSmResp(sequence_number=123456, message_id="7f3a9c21d04e")
DELIVER_SM = DeliverSm(
    sequence_number=987654,
    source_addr_ton=Ton.INTERNATIONAL,
    source_addr_npi=Npi.ISDN,
    source_addr="33612345678",
    dest_addr_ton=Ton.ALPHANUMERIC,
    destination_addr="MyBrand",
    esm_class=EsmClass.DELIVERY_RECEIPT,
    short_message=RECEIPT,
    tlvs=(
        (Tag.receipted_message_id, "7f3a9c21d04e"),
        (Tag.message_state, MessageState.DELIVERED),
    ),
)


def best_rate(function: Callable[[Any], Any], argument: Any, iterations: int, repeat: int) -> float:
    """Operations per second: the best of ``repeat`` timed loops of ``iterations`` calls."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            loop = range(iterations)
            start = time.perf_counter()
            for _ in loop:
                function(argument)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return iterations / best


def framer_rate(frame: bytes, iterations: int, repeat: int) -> float:
    """Frames per second through Framer.feed + iteration, fed in 4 KiB-ish chunks."""
    per_chunk = max(1, 4096 // len(frame))
    chunk = frame * per_chunk
    rounds = max(1, iterations // per_chunk)
    best = float("inf")
    for _ in range(repeat):
        framer = Framer()
        start = time.perf_counter()
        for _ in range(rounds):
            framer.feed(chunk)
            for _frame in framer:
                pass
        best = min(best, time.perf_counter() - start)
    return rounds * per_chunk / best


def smpplib_rates(iterations: int, repeat: int) -> tuple[float, float] | None:
    try:
        from smpplib import smpp
    except ImportError:
        return None
    fields = {
        "sequence": 123456,
        "source_addr_ton": 5,
        "source_addr_npi": 0,
        "source_addr": "MyBrand",
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": "33612345678",
        "registered_delivery": 1,
        "data_coding": 0,
        "short_message": TEXT,
        "user_message_reference": 4242,
        "dest_addr_subunit": 1,
    }

    class Client:  # what smpplib wants of a client to number and parse PDUs
        sequence = 0

        def next_sequence(self) -> int:
            return 1

    client = Client()

    def smpplib_encode(_: Any) -> bytes:
        return smpp.make_pdu("submit_sm", client=client, **fields).generate()

    frame = smpplib_encode(None)

    def smpplib_decode(data: bytes) -> Any:
        return smpp.parse_pdu(data, client=client)

    return (
        best_rate(smpplib_encode, None, iterations, repeat),
        best_rate(smpplib_decode, frame, iterations, repeat),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200_000, help="calls per timed loop")
    parser.add_argument("--repeat", type=int, default=5, help="timed loops; the best is kept")
    parser.add_argument("--check", action="store_true", help="exit 1 if under the target")
    parser.add_argument("--no-smpplib", action="store_true", help="skip the smpplib comparison")
    args = parser.parse_args(argv)

    print(
        describe_conditions(
            "SMPP codec benchmark (one core, one thread)",
            rows=[
                ("platform", platform.platform()),
                ("method", f"best of {args.repeat} loops of {args.iterations:,} calls, gc off"),
                ("target", f">= {TARGET_PER_SECOND:,}/s for each encode and each decode"),
            ],
        )
    )
    print()
    print(f"  {'PDU':<44}{'octets':>7}{'encode/s':>13}{'decode/s':>13}")
    under = []
    cases = (
        ("submit_sm (1-part MT, 3 TLVs)", SUBMIT_SM),
        ("submit_sm_resp", SUBMIT_SM_RESP),
        ("deliver_sm (Annex B receipt, 2 TLVs)", DELIVER_SM),
    )
    for label, pdu in cases:
        frame = encode(pdu)
        assert decode(frame) == pdu, label
        encode_rate = best_rate(encode, pdu, args.iterations, args.repeat)
        decode_rate = best_rate(decode, frame, args.iterations, args.repeat)
        print(f"  {label:<44}{len(frame):>7}{encode_rate:>13,.0f}{decode_rate:>13,.0f}")
        under += [
            f"{label} {op}"
            for op, r in (("encode", encode_rate), ("decode", decode_rate))
            if r < TARGET_PER_SECOND
        ]
    frames = framer_rate(encode(SUBMIT_SM), args.iterations, args.repeat)
    print(f"  {'Framer (submit_sm frames, 4 KiB chunks)':<44}{'':>7}{'':>13}{frames:>13,.0f}")
    if not args.no_smpplib:
        rates = smpplib_rates(max(1, args.iterations // 10), args.repeat)
        if rates is None:
            print("  smpplib not installed: no comparison")
        else:
            print(
                f"  {'smpplib 2.x submit_sm, for comparison':<44}{'':>7}"
                f"{rates[0]:>13,.0f}{rates[1]:>13,.0f}"
            )
    print()
    if under:
        print("UNDER TARGET: " + "; ".join(under))
        return 1 if args.check else 0
    print("all encode and decode rates meet the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
