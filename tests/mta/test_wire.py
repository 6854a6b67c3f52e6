"""What goes on the wire: every account and delivery option, read back from the PDUs.

The real MTA sends to the simulator with `record_pdus` on; each test asserts the fields of
the bind and submit_sm PDUs as the SMSC received them (SPEC sections 3, 4 and 6), not what
our builder meant to send. One MTA run per account shape, several deliveries in each.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smsmta.queue.enqueue import DeliverySpec
from smsmta.simulator import SimulatorConfig, Smsc
from tests.mta.conftest import Harness, mid_config

pytestmark = pytest.mark.timeout(120)

LONG_TEXT = "Long message " + "x" * 180  # GSM7, 193 characters: two parts
VALIDITY = datetime(2031, 5, 17, 8, 30, 15, tzinfo=UTC)


def account_config(port: int, **sections: dict[str, Any]) -> str:
    """mid_config's single account, with sections merged in (connection, channel...)."""
    config = json.loads(mid_config(port, children=1, connections=1))
    account = config["accounts"][0]
    for section, values in sections.items():
        if section == "sms_process":
            config["sms_process"] = {"metrics_port": None, **values}
        else:
            account.setdefault(section, {}).update(values)
    return json.dumps(config, indent=2)


async def run_deliveries(
    harness: Harness, smsc: Smsc, text: str, deliveries: list[tuple[DeliverySpec, str, str]]
) -> dict[str, list[dict[str, Any]]]:
    """Send (spec, address, text) deliveries; the submits received, by destination_addr."""
    path, config = harness.write_config(text)
    for spec, address, body in deliveries:
        await harness.enqueue(
            config, 1, text=lambda _, b=body: b, spec=spec, address=lambda _, a=address: a
        )
    mta = await harness.start_mta(path)

    async def all_sent() -> bool:
        return (await harness.statuses()).get("sent", 0) == len(deliveries)

    await harness.wait_until(all_sent, 60, "every message sent", mta)
    assert await mta.stop() == 0
    submits: dict[str, list[dict[str, Any]]] = {}
    for record in smsc.recorded:
        if record["pdu"] == "submit_sm":
            submits.setdefault(record["destination_addr"], []).append(record)
    return submits


@pytest.fixture
async def wire_smsc() -> Any:
    async with Smsc(SimulatorConfig(port=0, seed=7, record_pdus=1000)) as simulator:
        yield simulator


async def test_account_and_delivery_options_reach_the_wire(
    harness: Harness, wire_smsc: Smsc
) -> None:
    text = account_config(
        wire_smsc.port,
        connection={"system_type": "VMA"},
        channel={
            "source_number": "+33700000000",
            "short_code": "38000",
            "service_type": "CMT",
            "dest_ton": 1,
            "dest_npi": 1,
        },
        smsc={
            "bind_ton": 1,
            "bind_npi": 1,
            "address_range": "^336",
            "service_id_tlv_tag": 0x1400,
            "encoding_mapping": [
                {"data_coding": 0, "encoding": "gsm7"},
                {"data_coding": 3, "encoding": "latin1"},
                {"data_coding": 8, "encoding": "ucs2"},
            ],
        },
    )
    deliveries = [
        (DeliverySpec("plain"), "+33612345601", "Hello"),
        (
            DeliverySpec(
                "options",
                source_addr="MyBrand",
                transmission_mode="flash",
                priority=2,
                service_type="XYZ",
                service_id="campaign-7",
                validity_end=VALIDITY,
            ),
            "+33612345602",
            "Smile \u263a",
        ),
        (DeliverySpec("normal", transmission_mode="normal"), "+33612345603", "Plus \u00b1"),
        (DeliverySpec("me", transmission_mode="mobile_equipment"), "+33612345604", LONG_TEXT),
        (DeliverySpec("sim", transmission_mode="sim", source_addr="38123"), "+33612345605", "Sim"),
    ]
    submits = await run_deliveries(harness, wire_smsc, text, deliveries)

    [bind] = [r for r in wire_smsc.recorded if r["pdu"].startswith("bind_")]
    assert bind["pdu"] == "bind_transmitter"
    assert (bind["system_id"], bind["system_type"]) == ("smsmta", "VMA")
    assert (bind["addr_ton"], bind["addr_npi"], bind["address_range"]) == (1, 1, "^336")
    assert bind["password"] == "********"
    assert bind["interface_version"] == 0x34

    [plain] = submits["33612345601"]  # digits only: the '+' is carried by TON/NPI
    assert (plain["dest_addr_ton"], plain["dest_addr_npi"]) == (1, 1)
    # the account's number: its '+' never goes out, TON international says it
    assert (plain["source_addr"], plain["source_addr_ton"], plain["source_addr_npi"]) == (
        "33700000000",
        1,
        1,
    )
    assert plain["service_type"] == "CMT"
    assert (plain["esm_class"], plain["registered_delivery"], plain["data_coding"]) == (0, 1, 0)
    assert (plain["priority_flag"], plain["validity_period"]) == (0, "")
    assert "0x0005" not in plain["tlvs"]  # no transmission mode: no dest_addr_subunit
    assert "0x1400" not in plain["tlvs"]  # no service id value: no service-id TLV

    [options] = submits["33612345602"]
    # alphanumeric From: TON 5 / NPI 0 by default
    assert (options["source_addr"], options["source_addr_ton"], options["source_addr_npi"]) == (
        "MyBrand",
        5,
        0,
    )
    assert options["service_type"] == "XYZ"  # the delivery's service_type wins
    assert options["priority_flag"] == 2
    assert options["validity_period"] == "310517083015000+"  # absolute, UTC
    assert options["tlvs"]["0x0005"] == 1  # flash
    assert bytes.fromhex(options["tlvs"]["0x1400"]) == b"campaign-7"
    assert options["data_coding"] == 8  # the smiley: neither GSM7 nor Latin-1

    [normal] = submits["33612345603"]
    assert normal["tlvs"]["0x0005"] == 0
    assert normal["data_coding"] == 3  # '±' is Latin-1, not GSM7: the mapping's second entry

    parts = submits["33612345604"]
    assert len(parts) == 2
    assert [p["tlvs"]["0x0005"] for p in parts] == [2, 2]
    assert [p["esm_class"] & 0x40 for p in parts] == [0x40, 0x40]  # UDHI
    assert [p["registered_delivery"] for p in parts] == [1, 0]  # first part only by default
    assert {p["data_coding"] for p in parts} == {0}

    [sim] = submits["33612345605"]
    assert sim["tlvs"]["0x0005"] == 3
    # a numeric From without '+' keeps the account's source TON/NPI (0/0 by default)
    assert (sim["source_addr"], sim["source_addr_ton"], sim["source_addr_npi"]) == ("38123", 0, 0)


async def test_receipts_on_every_part_full_numbers_and_no_source(
    harness: Harness, wire_smsc: Smsc
) -> None:
    text = account_config(
        wire_smsc.port,
        connection={"mode": "trx"},
        channel={"source_number": "", "short_code": "38000", "alphanumeric_ton": 0},
        smsc={"send_full_phone_number": True},
        sms_process={"multipart_status": "all_parts"},
    )
    # the seed's arrival order: one delivery per shape
    deliveries = [
        (DeliverySpec("none"), "+33612345611", LONG_TEXT),
        (DeliverySpec("plus", source_addr="+33799999999"), "+33612345612", "Hi"),
        (DeliverySpec("alpha", source_addr="Shop"), "+33612345613", "Hi"),
        (
            DeliverySpec("late", validity_end=datetime.now(UTC) + timedelta(days=1)),
            "+33612345614",
            "Hi",
        ),
    ]
    submits = await run_deliveries(harness, wire_smsc, text, deliveries)

    [bind] = [r for r in wire_smsc.recorded if r["pdu"].startswith("bind_")]
    assert bind["pdu"] == "bind_transceiver"

    parts = submits["+33612345611"]  # send_full_phone_number: as typed
    assert [p["registered_delivery"] for p in parts] == [1, 1]  # all_parts: every part
    # neither a From nor a source number: no source_addr, the provider puts its own (the
    # short code is for the preview and the blacklist, never sent)
    assert {(p["source_addr"], p["source_addr_ton"], p["source_addr_npi"]) for p in parts} == {
        ("", 0, 0)
    }
    [plus] = submits["+33612345612"]
    assert (plus["source_addr"], plus["source_addr_ton"], plus["source_addr_npi"]) == (
        "33799999999",
        1,
        1,
    )
    [alpha] = submits["+33612345613"]  # the account's alphanumeric TON override, NPI default
    assert (alpha["source_addr"], alpha["source_addr_ton"], alpha["source_addr_npi"]) == (
        "Shop",
        0,
        0,
    )
    [late] = submits["+33612345614"]
    assert late["validity_period"].endswith("000+") and len(late["validity_period"]) == 16
