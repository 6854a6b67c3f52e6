"""Every verdict of smsmta.policy as a table: one row per case, input -> expected verdict.

Pure functions, so no database and no clock: `NOW` is a fixed instant and each row gives
the message's retry count, validity end and the failure as the message log qualified it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smsmta.db import FailureType, ReceiptResult
from smsmta.policy import (
    AccountRules,
    Decision,
    NoAnswer,
    ReceiptFacts,
    ReceiptVerdict,
    RetryPolicy,
    SubmitVerdict,
    Verdict,
    before_submit,
    fallback_rules,
    is_current_attempt,
    receipt_verdicts,
    submit_error_key,
    submit_verdict,
    unmatched,
)
from smsmta.smpp.constants import CommandStatus as S
from smsmta.smpp.receipt import Outcome

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(period=300, max_retries=5, throttle_backoff=1.0, max_unknown=3)
NEXT = NOW + timedelta(seconds=300)  # when a soft failure goes again
LATER = NOW + timedelta(days=2)  # a validity that has not ended
HARD, SOFT, IGNORED = FailureType.HARD, FailureType.SOFT, FailureType.IGNORED
RETRY, FAIL = Verdict.RETRY, Verdict.FAIL


# --- soft / hard / ignored and the retry schedule: RetryPolicy.decide ----------------------

DECIDE = [
    # qualification, retry_count, validity_end -> decision
    ("hard", HARD, 0, LATER, Decision(FAIL, HARD)),
    ("hard, retries exhausted: still hard", HARD, 9, LATER, Decision(FAIL, HARD)),
    ("hard, past validity: still hard", HARD, 0, NOW, Decision(FAIL, HARD)),
    ("ignored", IGNORED, 0, LATER, Decision(FAIL, IGNORED)),
    ("ignored, retries exhausted", IGNORED, 9, LATER, Decision(FAIL, IGNORED)),
    ("soft, first failure", SOFT, 0, LATER, Decision(RETRY, SOFT, next_try_at=NEXT)),
    ("soft, last retry left", SOFT, 4, LATER, Decision(RETRY, SOFT, next_try_at=NEXT)),
    ("soft, retries exhausted", SOFT, 5, LATER, Decision(FAIL, SOFT, None, "5 retries exhausted")),
    ("soft, beyond max_retries", SOFT, 7, LATER, Decision(FAIL, SOFT, None, "7 retries exhausted")),
    ("soft, validity ended", SOFT, 0, NOW, Decision(FAIL, SOFT, None, "validity period ended")),
    (
        "soft, validity ends at next try",
        SOFT,
        0,
        NEXT,
        Decision(FAIL, SOFT, None, "validity period ended"),
    ),
    (
        "soft, validity ends just after next try",
        SOFT,
        0,
        NEXT + timedelta(microseconds=1),
        Decision(RETRY, SOFT, next_try_at=NEXT),
    ),
    (
        "soft, exhausted and past validity: exhausted",
        SOFT,
        5,
        NOW,
        Decision(FAIL, SOFT, None, "5 retries exhausted"),
    ),
]


@pytest.mark.parametrize(
    ("case", "qualification", "retry_count", "validity_end", "expected"),
    DECIDE,
    ids=[row[0] for row in DECIDE],
)
def test_decide(
    case: str,
    qualification: FailureType,
    retry_count: int,
    validity_end: datetime,
    expected: Decision,
) -> None:
    assert POLICY.decide(qualification, retry_count, NOW, validity_end) == expected


# --- qualify then decide, with the reason text: RetryPolicy.after_failure -----------------

KEY = "SUBMIT acme 0x00000045 ESME_RSUBMITFAIL"
TEXT = "SR acme UNDELIV 001|#MESSAGE#"

AFTER_FAILURE = [
    # qualification, retry_count, validity_end, text -> verdict, failure type, reason written
    ("hard submit error", HARD, 0, LATER, KEY, FAIL, HARD, KEY),
    ("ignored receipt", IGNORED, 0, LATER, TEXT, FAIL, IGNORED, TEXT),
    ("soft, retried", SOFT, 1, LATER, KEY, RETRY, SOFT, KEY),
    ("soft, exhausted", SOFT, 5, LATER, TEXT, FAIL, SOFT, f"{TEXT} (5 retries exhausted)"),
    ("soft, past validity", SOFT, 0, NOW, KEY, FAIL, SOFT, f"{KEY} (validity period ended)"),
]


@pytest.mark.parametrize(
    ("case", "qualification", "retry_count", "validity_end", "text", "verdict", "kind", "reason"),
    AFTER_FAILURE,
    ids=[row[0] for row in AFTER_FAILURE],
)
def test_after_failure(
    case: str,
    qualification: FailureType,
    retry_count: int,
    validity_end: datetime,
    text: str,
    verdict: Verdict,
    kind: FailureType,
    reason: str,
) -> None:
    decision, written = POLICY.after_failure(qualification, retry_count, NOW, validity_end, text)
    assert (decision.verdict, decision.failure_type, written) == (verdict, kind, reason)
    assert decision == POLICY.decide(qualification, retry_count, NOW, validity_end)


VALIDITY = [
    # the delivery's validity_end, its created_at -> the message's validity end
    ("set by the delivery", LATER, NOW, LATER),
    ("none: default_validity from creation", None, NOW, NOW + timedelta(hours=48)),
]


@pytest.mark.parametrize(
    ("case", "validity_end", "created_at", "expected"), VALIDITY, ids=[row[0] for row in VALIDITY]
)
def test_validity_end(
    case: str, validity_end: datetime | None, created_at: datetime, expected: datetime
) -> None:
    assert RetryPolicy().validity_end(validity_end, created_at) == expected


# --- submit_sm_resp: submit_verdict and the message-log key ------------------------------

SUBMIT = [
    # command_status -> verdict
    ("ESME_ROK", S.ESME_ROK, SubmitVerdict.SENT),
    ("ESME_RTHROTTLED", S.ESME_RTHROTTLED, SubmitVerdict.THROTTLED),
    ("ESME_RMSGQFUL", S.ESME_RMSGQFUL, SubmitVerdict.THROTTLED),
    ("ESME_RSUBMITFAIL", S.ESME_RSUBMITFAIL, SubmitVerdict.ERROR),
    ("ESME_RSYSERR", S.ESME_RSYSERR, SubmitVerdict.ERROR),
    ("ESME_RINVDSTADR", S.ESME_RINVDSTADR, SubmitVerdict.ERROR),
    ("vendor code", 0x401, SubmitVerdict.ERROR),
]


@pytest.mark.parametrize(("case", "status", "expected"), SUBMIT, ids=[row[0] for row in SUBMIT])
def test_submit_verdict(case: str, status: int, expected: SubmitVerdict) -> None:
    assert submit_verdict(status) is expected


SUBMIT_KEYS = [
    # smsc, command_status -> message-log key
    ("acme", S.ESME_RSUBMITFAIL, "SUBMIT acme 0x00000045 ESME_RSUBMITFAIL"),
    ("acme", S.ESME_RINVDSTADR, "SUBMIT acme 0x0000000B ESME_RINVDSTADR"),
    ("other", 0x401, "SUBMIT other 0x00000401"),
]


@pytest.mark.parametrize(("smsc", "status", "key"), SUBMIT_KEYS)
def test_submit_error_key(smsc: str, status: int, key: str) -> None:
    assert submit_error_key(smsc, status) == key


# --- no answer: RetryPolicy.no_answer and after_no_answer ---------------------------------

NO_ANSWER = [
    # unknown attempts (this one counted), draining -> what becomes of the part
    ("first", 1, False, NoAnswer.RESEND),
    ("below max_unknown", 2, False, NoAnswer.RESEND),
    ("at max_unknown", 3, False, NoAnswer.RESEND),
    ("beyond max_unknown", 4, False, NoAnswer.GIVE_UP),
    ("draining", 1, True, NoAnswer.GIVE_UP),
]


@pytest.mark.parametrize(
    ("case", "attempts", "draining", "expected"), NO_ANSWER, ids=[row[0] for row in NO_ANSWER]
)
def test_no_answer(case: str, attempts: int, draining: bool, expected: NoAnswer) -> None:
    assert POLICY.no_answer(attempts, draining) is expected


NO_ANSWER_REASON = "no answer from acme after 4 attempts"
AFTER_NO_ANSWER = [
    # unknown attempts, retry_count, validity_end -> verdict, failure type, reason written
    ("retries left", 4, 0, LATER, RETRY, SOFT, NO_ANSWER_REASON),
    ("exhausted", 4, 5, LATER, FAIL, SOFT, f"{NO_ANSWER_REASON} (5 retries exhausted)"),
    ("past validity", 4, 0, NOW, FAIL, SOFT, f"{NO_ANSWER_REASON} (validity period ended)"),
    ("drained after one", 1, 0, LATER, RETRY, SOFT, "no answer from acme after 1 attempts"),
]


@pytest.mark.parametrize(
    ("case", "attempts", "retry_count", "validity_end", "verdict", "kind", "reason"),
    AFTER_NO_ANSWER,
    ids=[row[0] for row in AFTER_NO_ANSWER],
)
def test_after_no_answer(
    case: str,
    attempts: int,
    retry_count: int,
    validity_end: datetime,
    verdict: Verdict,
    kind: FailureType,
    reason: str,
) -> None:
    decision, written = POLICY.after_no_answer("acme", attempts, retry_count, NOW, validity_end)
    assert (decision.verdict, decision.failure_type, written) == (verdict, kind, reason)
    if verdict is RETRY:
        assert decision.next_try_at == NEXT


# --- decided without the SMSC: before_submit ---------------------------------------------

UNENCODABLE = "character '\\u20ac' cannot be encoded"  # a TextError's message, as an example

BEFORE_SUBMIT = [
    # blacklisted, text error -> decision (None: it may be submitted)
    ("sendable", False, None, None),
    ("blacklisted", True, None, Decision(FAIL, HARD, reason="blacklisted")),
    ("unencodable text", False, UNENCODABLE, Decision(FAIL, HARD, reason=UNENCODABLE)),
    ("both: blacklisted first", True, UNENCODABLE, Decision(FAIL, HARD, reason="blacklisted")),
]


@pytest.mark.parametrize(
    ("case", "blacklisted", "text_error", "expected"),
    BEFORE_SUBMIT,
    ids=[row[0] for row in BEFORE_SUBMIT],
)
def test_before_submit(
    case: str, blacklisted: bool, text_error: str | None, expected: Decision | None
) -> None:
    assert before_submit(blacklisted, text_error) == expected


# --- receipts ----------------------------------------------------------------------------

T0 = NOW - timedelta(minutes=10)

CURRENT_ATTEMPT = [
    # the part's provider_msg_id created_at, the message's sent_at -> current attempt?
    ("never sent again", T0, None, True),
    ("same transaction", T0, T0, True),
    ("earlier attempt", T0 - timedelta(microseconds=1), T0, False),
]


@pytest.mark.parametrize(
    ("case", "mt_sent_at", "sent_at", "expected"),
    CURRENT_ATTEMPT,
    ids=[row[0] for row in CURRENT_ATTEMPT],
)
def test_is_current_attempt(
    case: str, mt_sent_at: datetime, sent_at: datetime | None, expected: bool
) -> None:
    assert is_current_attempt(mt_sent_at, sent_at) is expected


DELIVERED, FAILED, INTERMEDIATE = Outcome.DELIVERED, Outcome.FAILED, Outcome.INTERMEDIATE


def r(
    outcome: Outcome = DELIVERED,
    *,
    message: int = 1,
    part: int = 1,
    parts: int = 1,
    status: str = "sent",
    current: bool = True,
) -> ReceiptFacts:
    return ReceiptFacts(message, part, parts, status, current, outcome)


def v(result: ReceiptResult, change: str | None = None, note: str | None = None) -> ReceiptVerdict:
    return ReceiptVerdict(result, change, note)


APPLIED_DELIVERED = v(ReceiptResult.APPLIED, "delivered")
APPLIED_FAILED = v(ReceiptResult.APPLIED, "failed")
DUPLICATE = v(ReceiptResult.DUPLICATE)
PART = v(ReceiptResult.PART)
FIRST_PART_DECIDES = v(ReceiptResult.IGNORED, note="part 2: the first part's receipt decides")

RECEIPTS = [
    # multipart mode, parts already recorded, the batch in arrival order -> verdict of each
    ("delivered", "first_part", {}, [r(DELIVERED)], [APPLIED_DELIVERED]),
    ("failed", "first_part", {}, [r(FAILED)], [APPLIED_FAILED]),
    ("intermediate", "first_part", {}, [r(INTERMEDIATE)], [v(ReceiptResult.INTERMEDIATE)]),
    (
        "intermediate on a final message",
        "first_part",
        {},
        [r(INTERMEDIATE, status="delivered")],
        [v(ReceiptResult.INTERMEDIATE)],
    ),
    (
        "earlier attempt",
        "first_part",
        {},
        [r(FAILED, current=False)],
        [v(ReceiptResult.IGNORED, note="receipt of an earlier attempt of a message sent again")],
    ),
    ("already delivered", "first_part", {}, [r(status="delivered")], [DUPLICATE]),
    ("already failed", "first_part", {}, [r(FAILED, status="failed")], [DUPLICATE]),
    ("already no_receipt", "first_part", {}, [r(status="no_receipt")], [DUPLICATE]),
    (
        "message pending (sent again)",
        "first_part",
        {},
        [r(status="pending")],
        [v(ReceiptResult.IGNORED, note="the message is pending")],
    ),
    (
        "message cancelled",
        "first_part",
        {},
        [r(status="cancelled")],
        [v(ReceiptResult.IGNORED, note="the message is cancelled")],
    ),
    (
        "twice in one batch",
        "first_part",
        {},
        [r(DELIVERED), r(DELIVERED)],
        [APPLIED_DELIVERED, DUPLICATE],
    ),
    (
        "failed then delivered in one batch",
        "first_part",
        {},
        [r(FAILED), r(DELIVERED)],
        [APPLIED_FAILED, DUPLICATE],
    ),
    (
        "two messages in one batch",
        "first_part",
        {},
        [r(DELIVERED, message=1), r(FAILED, message=2)],
        [APPLIED_DELIVERED, APPLIED_FAILED],
    ),
    (
        "first_part: part 1 decides",
        "first_part",
        {},
        [r(DELIVERED, part=1, parts=2)],
        [APPLIED_DELIVERED],
    ),
    (
        "first_part: part 2 delivered is ignored",
        "first_part",
        {},
        [r(DELIVERED, part=2, parts=2)],
        [FIRST_PART_DECIDES],
    ),
    (
        "first_part: part 2 failed is ignored",
        "first_part",
        {},
        [r(FAILED, part=2, parts=2)],
        [FIRST_PART_DECIDES],
    ),
    ("all_parts: single part", "all_parts", {}, [r(DELIVERED)], [APPLIED_DELIVERED]),
    (
        "all_parts: one of two delivered",
        "all_parts",
        {},
        [r(DELIVERED, part=1, parts=2)],
        [PART],
    ),
    (
        "all_parts: both delivered in one batch",
        "all_parts",
        {},
        [r(DELIVERED, part=1, parts=2), r(DELIVERED, part=2, parts=2)],
        [PART, APPLIED_DELIVERED],
    ),
    (
        "all_parts: the last part, the other recorded before",
        "all_parts",
        {1: {1: "delivered"}},
        [r(DELIVERED, part=2, parts=2)],
        [APPLIED_DELIVERED],
    ),
    (
        "all_parts: a failed part fails the message",
        "all_parts",
        {1: {1: "delivered"}},
        [r(FAILED, part=2, parts=2)],
        [APPLIED_FAILED],
    ),
    (
        "all_parts: a part's receipt again",
        "all_parts",
        {1: {1: "delivered"}},
        [r(DELIVERED, part=1, parts=2)],
        [DUPLICATE],
    ),
    (
        "all_parts: a part twice in one batch",
        "all_parts",
        {},
        [r(DELIVERED, part=1, parts=3), r(DELIVERED, part=1, parts=3)],
        [PART, DUPLICATE],
    ),
    (
        "all_parts: a part delivered, then failed",
        "all_parts",
        {},
        [r(DELIVERED, part=1, parts=2), r(FAILED, part=1, parts=2)],
        [PART, APPLIED_FAILED],
    ),
    (
        "all_parts: after the failure, the other part is a duplicate",
        "all_parts",
        {},
        [r(FAILED, part=1, parts=2), r(DELIVERED, part=2, parts=2)],
        [APPLIED_FAILED, DUPLICATE],
    ),
]


@pytest.mark.parametrize(
    ("case", "multipart", "part_state", "receipts", "expected"),
    RECEIPTS,
    ids=[row[0] for row in RECEIPTS],
)
def test_receipt_verdicts(
    case: str,
    multipart: str,
    part_state: dict[int, dict[int, str]],
    receipts: list[ReceiptFacts],
    expected: list[ReceiptVerdict],
) -> None:
    before = {k: dict(v) for k, v in part_state.items()}
    assert receipt_verdicts(receipts, multipart == "all_parts", part_state) == expected
    assert part_state == before  # the caller's part state is read, not changed


WAIT = timedelta(minutes=10)
UNMATCHED = [
    # received this long before now -> verdict (None: waits in the inbox)
    ("just arrived", timedelta(0), None),
    ("within match_wait", WAIT - timedelta(seconds=1), None),
    (
        "at match_wait",
        WAIT,
        v(ReceiptResult.UNMATCHED, note="no MT with provider id 'abc'"),
    ),
    (
        "beyond match_wait",
        WAIT * 3,
        v(ReceiptResult.UNMATCHED, note="no MT with provider id 'abc'"),
    ),
]


@pytest.mark.parametrize(("case", "age", "expected"), UNMATCHED, ids=[row[0] for row in UNMATCHED])
def test_unmatched(case: str, age: timedelta, expected: ReceiptVerdict | None) -> None:
    assert unmatched("abc", NOW - age, NOW, WAIT) == expected


def test_fallback_rules_of_an_account_that_left_the_settings() -> None:
    rules = fallback_rules(7)
    assert isinstance(rules, AccountRules)
    assert (rules.account_id, rules.name, rules.realtime_kpi) == (7, "#7", True)
    assert rules.rules.smsc_name == "unknown"
