"""The go-live check of a provider account: `smsmta account test --config FILE NAME --to MSISDN`.

What it does
    Runs, against the real SMSC of one mid account, what Adobe's set-up guide leaves as a
    manual checklist: bind (transmitter + receiver, or one transceiver in TRX mode), send
    one test MT with registered_delivery on, wait for its receipt, and read that receipt
    exactly as the SMS process would (`smsmta.smpp.receipt.interpret` with the account's rules).
    Each step becomes a `Step` (pass / fail / skip, what was seen, and for a failure the
    settings to change, in the account's field names). `Report.ok` is true only when no
    step failed.

Contract
    - `run_check(account, to, ...)` never raises on provider behaviour: bind refusals,
      timeouts, closed sockets, odd receipts all end as failed steps. Unencodable text
      is a failed step too (it names `smsc.encoding_mapping`).
    - The diagnosis is pure functions, tested on their own: `bind_advice`, `submit_advice`,
      `guess_id_formats` (every (mt_ack_id_format, sr_id_format) pair of `IdFormat` that
      makes the two ids seen equal, best first), `id_difference` (case and zero padding),
      `suggest_id_regex`, `whole_id` (an id the regex cut), `hex_or_decimal_alike`,
      `echo_differences`, `ids_related`.
    - Ids 0 to 9 read the same in decimal and hex: while the MT-ack id is one of them the
      check sends another test MT (at most `MAX_TEST_MTS`), so that a provider writing hex
      MT-ack ids and decimal receipt ids shows. A receipt whose text id disagrees with
      receipted_message_id is reported (the SMS process goes by the TLV and counts it).
    - Receipts and MOs that are not the test MT's (an account already carrying traffic)
      are answered ESME_RX_T_APPN, a temporary error, so the SMSC delivers them again,
      to the SMS process's binds; the test's own receipt is answered ESME_ROK.
    - Passwords are never printed: bind settings have no password in their repr and the
      report only names the field.
    - Every bind counts (SPEC section 4): with max_binds and a database, each test bind on
      the account's login first takes a free bind slot (smsmta.binds.TestSlots, a lease
      of its own); when the running services hold them all the check fails saying so,
      naming the holders, instead of exceeding the contract.
    - A live account: the SMSC may hand the test's receipt to the running SMS process's
      receiver bind rather than to the check's. Given the database (`database_dsn`; the
      command passes the settings file's), the check also looks, while it waits, for the
      receipt where the SMS process stores it (`mid.inbox`, then `mid.receipt`), read
      only, and reads it from there; the receipt step says where it was found.

What it touches
    SMPP sockets to the account's SMSC (through smsmta.smpp.aio: one-shot `connect`, no
    reconnect), the event loop's clock; with max_binds the database's bind slots
    (`mid.mta_lease`, `mid.bind_slot`); with `database_dsn`, reads of `mid.external_account`,
    `mid.inbox` and `mid.receipt`. `run_check` reads no settings file (`run_command`
    loads it) and sets no metrics. It is a tool: it builds the MT with the MTA's
    `mta.submit.MtBuilder` and reads receipts with the SMS process's
    `smsmta.policy.AccountRules`, so that it sends and reads as they do.

Modules (each opens with what it does and touches)
    diagnosis   `Step`, `Report` and the pure functions above: no I/O at all.
    steps       the steps built from what the probe saw (pure as well).
    probe       `run_check`: the binds, the test MT, the wait for its receipt (`_Probe`
                handles the binds' PDUs, `_Stored` reads the SMS process's receipts).
    render      the text and JSON output, and `run_command` (`smsmta account test`).
    This package re-exports what the CLI and the tests use.
"""

from smsmta.golive.diagnosis import (
    FAIL,
    MAX_TEST_MTS,
    PASS,
    SKIP,
    FormatGuess,
    Report,
    Step,
    bind_advice,
    echo_differences,
    format_fixes,
    guess_id_formats,
    hex_or_decimal_alike,
    id_difference,
    ids_related,
    submit_advice,
    suggest_id_regex,
    whole_id,
)
from smsmta.golive.probe import (
    DEFAULT_TEXT,
    DEFAULT_WAIT,
    NoteCallback,
    StepCallback,
    _Probe,
    receipt_rules,
    run_check,
)
from smsmta.golive.render import render_step, render_summary, run_command

__all__ = [
    "DEFAULT_TEXT",
    "DEFAULT_WAIT",
    "FAIL",
    "MAX_TEST_MTS",
    "PASS",
    "SKIP",
    "FormatGuess",
    "NoteCallback",
    "Report",
    "Step",
    "StepCallback",
    "_Probe",
    "bind_advice",
    "echo_differences",
    "format_fixes",
    "guess_id_formats",
    "hex_or_decimal_alike",
    "id_difference",
    "ids_related",
    "receipt_rules",
    "render_step",
    "render_summary",
    "run_check",
    "run_command",
    "submit_advice",
    "suggest_id_regex",
    "whole_id",
]
