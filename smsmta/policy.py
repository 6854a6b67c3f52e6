"""The failure policy: every verdict on a message, decided here and nowhere else.

Postfix's smtp_trouble.c in spirit: the services do the I/O, this module decides. Each
verdict is a pure function (time enters as an argument), tested as a table in
tests/smsmta/test_policy.py:

- **submit_sm_resp** (`submit_verdict`): status 0 -> the part is SENT; a throttling
  answer (ESME_RTHROTTLED, ESME_RMSGQFUL) is not a failure -> THROTTLED: the part is
  sent again after `throttle_backoff`, the retry count does not move; any other status
  -> ERROR: the message log qualifies it under its key (`submit_error_key`,
  `SUBMIT <smsc> 0x... NAME`) and `after_failure` decides.
- **no answer** (`RetryPolicy.no_answer`): a part whose fate is unknown (MT timeout,
  connection lost before the answer) is RESENT at once by the same child, flagged as a
  possible duplicate, up to `max_unknown` times and not while draining; then it is
  given up (GIVE_UP) and the message goes back to the queue like a soft failure
  (`RetryPolicy.after_no_answer`, reason "no answer from <smsc> after N attempts").
- **decided without the SMSC** (`before_submit`): a blacklisted number, or a text that
  cannot be encoded, fails the message `hard`.
- **after a failure** (`RetryPolicy.decide`, and `RetryPolicy.after_failure`, which also
  writes the reason text): `hard` ends the message; `ignored` ends it too, without
  counting as a hard failure; `soft` goes back to the queue `period` later while retries
  remain and the validity has not ended, else it ends `soft` with the reason why.
- **receipts** (`receipt_verdicts`, `unmatched`): an intermediate stat is history; a
  receipt of an earlier attempt is ignored; a final stat on a `sent` message of the
  current attempt changes it (delivered, or failed -> `after_failure`); on a final
  message it is a duplicate, on any other status (pending, cancelled) ignored; later
  receipts of a message the batch already changed are duplicates; multipart:
  `first_part` lets part 1 decide, `all_parts` fails on any failed part and delivers
  when every part is delivered. A receipt whose MT is not found waits, until
  `match_wait`: then unmatched.
  `AccountRules` holds what reading an account's receipts needs.

Inputs decided elsewhere, by design: what a receipt's stat means (delivered, failed,
intermediate) is read by the SMPP library (`smsmta.smpp.receipt`, `ReceiptRules.classify`),
and whether a failure text is hard, soft or ignored is its qualification in the message
log (`mid.broad_log_msg`, `hard` until someone qualifies it). What follows is decided here.

Touches nothing: no database, no clock, no logging.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from smsmta.db import FailureType, ReceiptResult
from smsmta.settings import Account
from smsmta.smpp.constants import is_throttling
from smsmta.smpp.receipt import Outcome, ReceiptRules, submit_error_log

# --- the retry schedule ------------------------------------------------------------------


class Verdict(enum.Enum):
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    failure_type: FailureType
    next_try_at: datetime | None = None
    reason: str = ""


class NoAnswer(enum.Enum):
    """What becomes of a part that got no submit_sm_resp."""

    RESEND = "resend"  # at once, by the same child, flagged as a possible duplicate
    GIVE_UP = "give up"  # the part is done: the message's fate is `after_no_answer`


@dataclass(frozen=True)
class RetryPolicy:
    period: float = 300.0  # seconds between soft-failure attempts
    max_retries: int = 5  # attempts after the first
    throttle_backoff: float = 1.0  # seconds before a throttled part goes again
    max_unknown: int = 3  # in-process resends of a part whose fate is unknown
    default_validity: float = 48 * 3600.0  # from the delivery's creation, when it sets none

    def validity_end(self, validity_end: datetime | None, created_at: datetime) -> datetime:
        return validity_end or created_at + timedelta(seconds=self.default_validity)

    def decide(
        self,
        qualification: FailureType,
        retry_count: int,
        now: datetime,
        validity_end: datetime,
    ) -> Decision:
        """The fate of a message after a failure qualified by the message log."""
        if qualification is FailureType.HARD:
            return Decision(Verdict.FAIL, FailureType.HARD)
        if qualification is FailureType.IGNORED:
            return Decision(Verdict.FAIL, FailureType.IGNORED)
        if retry_count >= self.max_retries:
            return Decision(
                Verdict.FAIL, FailureType.SOFT, reason=f"{retry_count} retries exhausted"
            )
        next_try = now + timedelta(seconds=self.period)
        if next_try >= validity_end:
            return Decision(Verdict.FAIL, FailureType.SOFT, reason="validity period ended")
        return Decision(Verdict.RETRY, FailureType.SOFT, next_try_at=next_try)

    def after_failure(
        self,
        qualification: FailureType,
        retry_count: int,
        now: datetime,
        validity_end: datetime,
        text: str,
    ) -> tuple[Decision, str]:
        """Qualify-then-decide: the decision and the reason text to write with it.

        `text` is the failure as the caller writes it (a message-log key, a receipt's text
        already masked, ...); when the decision has a reason of its own (retries exhausted,
        validity ended), it follows in parentheses.
        """
        decision = self.decide(qualification, retry_count, now, validity_end)
        reason = f"{text} ({decision.reason})" if decision.reason else text
        return decision, reason

    def no_answer(self, unknown_attempts: int, draining: bool) -> NoAnswer:
        """A part's `unknown_attempts`-th attempt got no answer (this one counted)."""
        if unknown_attempts <= self.max_unknown and not draining:
            return NoAnswer.RESEND
        return NoAnswer.GIVE_UP

    def after_no_answer(
        self,
        smsc_name: str,
        unknown_attempts: int,
        retry_count: int,
        now: datetime,
        validity_end: datetime,
    ) -> tuple[Decision, str]:
        """The message of a part given up for no answer: a soft failure, and its reason."""
        text = f"no answer from {smsc_name} after {unknown_attempts} attempts"
        return self.after_failure(FailureType.SOFT, retry_count, now, validity_end, text)


# --- submit_sm_resp, and what is decided without the SMSC --------------------------------


class SubmitVerdict(enum.Enum):
    """What a submit_sm_resp's command_status means for its part."""

    SENT = "sent"  # status 0: the SMSC took it; its message_id is the provider id
    THROTTLED = "throttled"  # too fast / queue full: again after throttle_backoff, not a failure
    ERROR = "error"  # a synchronous error: the message log qualifies its key


def submit_verdict(status: int) -> SubmitVerdict:
    """The verdict on one submit_sm_resp."""
    if status == 0:
        return SubmitVerdict.SENT
    if is_throttling(status):
        return SubmitVerdict.THROTTLED
    return SubmitVerdict.ERROR


def submit_error_key(smsc_name: str, status: int) -> str:
    """The message-log key (and full text) of a submit error: `SUBMIT <smsc> 0x... NAME`."""
    key, _ = submit_error_log(smsc_name, status)
    return key


BLACKLISTED = "blacklisted"


def before_submit(blacklisted: bool, text_error: str | None = None) -> Decision | None:
    """A message decided without the SMSC (hard), or None when it may be submitted.

    Blacklisted numbers fail with the reason "blacklisted"; a text that cannot be encoded
    (`text_error`, the TextError's message) fails with that message.
    """
    if blacklisted:
        return Decision(Verdict.FAIL, FailureType.HARD, reason=BLACKLISTED)
    if text_error is not None:
        return Decision(Verdict.FAIL, FailureType.HARD, reason=text_error)
    return None


# --- receipts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRules:
    """What reconciliation needs of one account."""

    account_id: int
    name: str
    rules: ReceiptRules
    realtime_kpi: bool

    @classmethod
    def of(cls, account_id: int, account: Account) -> AccountRules:
        smsc = account.smsc
        rules = ReceiptRules.build(
            account.connection.smsc_name,
            id_regex=smsc.sr_id_regex,
            success_regex=smsc.sr_success_regex,
            error_regex=smsc.sr_error_regex,
            sr_id_format=smsc.sr_id_format,
            mt_ack_id_format=smsc.mt_ack_id_format,
            id_in_optional_fields=smsc.sr_id_in_optional_fields,
            id_in_text_field=smsc.sr_id_in_text_field,
        )
        return cls(account_id, account.name, rules, account.channel.realtime_kpi)


def fallback_rules(account_id: int) -> AccountRules:
    """An account that left the settings file: its receipts are still read, with the defaults."""
    return AccountRules(account_id, f"#{account_id}", ReceiptRules.build("unknown"), True)


FINAL_STATUSES = frozenset({"delivered", "failed", "no_receipt"})


def is_current_attempt(mt_sent_at: datetime, sent_at: datetime | None) -> bool:
    """A part recorded before its message's `sent_at` belongs to an earlier attempt."""
    return sent_at is None or mt_sent_at >= sent_at


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    """A matched receipt: its outcome, and its MT part and message as read."""

    broad_log_id: int
    part_no: int
    parts: int
    status: str  # the message's status, as the last commit left it
    current_attempt: bool  # `is_current_attempt` of the part
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class ReceiptVerdict:
    result: ReceiptResult
    change: str | None = None  # 'delivered' | 'failed': this receipt sets the status
    note: str | None = None


_INTERMEDIATE = ReceiptVerdict(ReceiptResult.INTERMEDIATE)
_DUPLICATE = ReceiptVerdict(ReceiptResult.DUPLICATE)
_PART = ReceiptVerdict(ReceiptResult.PART)
_EARLIER_ATTEMPT = ReceiptVerdict(
    ReceiptResult.IGNORED, note="receipt of an earlier attempt of a message sent again"
)


def receipt_verdicts(
    receipts: Sequence[ReceiptFacts],
    all_parts: bool,
    part_state: Mapping[int, Mapping[int, str]],
) -> list[ReceiptVerdict]:
    """The verdict on each matched receipt of a batch, in arrival order.

    A receipt that changes its message makes the later ones of the same message in the
    batch duplicates. `part_state` (all_parts): outcome by part already recorded, of the
    multipart messages (broad_log id -> part_no -> 'delivered' | 'failed'); not modified.
    """
    verdicts: list[ReceiptVerdict] = []
    status_now: dict[int, str] = {}
    parts_seen: dict[int, dict[int, str]] = {k: dict(v) for k, v in part_state.items()}
    for facts in receipts:
        verdicts.append(_receipt_verdict(facts, all_parts, status_now, parts_seen))
    return verdicts


def _receipt_verdict(
    facts: ReceiptFacts,
    all_parts: bool,
    status_now: dict[int, str],
    parts_seen: dict[int, dict[int, str]],
) -> ReceiptVerdict:
    status = status_now.get(facts.broad_log_id, facts.status)
    if facts.outcome is Outcome.INTERMEDIATE:
        return _INTERMEDIATE
    if not facts.current_attempt:
        return _EARLIER_ATTEMPT
    if status in FINAL_STATUSES or (status == "pending" and facts.broad_log_id in status_now):
        return _DUPLICATE
    if status != "sent":
        return ReceiptVerdict(ReceiptResult.IGNORED, note=f"the message is {status}")
    outcome = facts.outcome.value  # 'delivered' | 'failed'
    if facts.parts > 1 and not all_parts and facts.part_no != 1:
        return ReceiptVerdict(
            ReceiptResult.IGNORED, note=f"part {facts.part_no}: the first part's receipt decides"
        )
    if facts.parts > 1 and all_parts:
        seen = parts_seen.setdefault(facts.broad_log_id, {})
        if seen.get(facts.part_no) == outcome:
            return _DUPLICATE
        seen[facts.part_no] = outcome
        delivered_parts = sum(1 for v in seen.values() if v == "delivered")
        if outcome == "delivered" and delivered_parts < facts.parts:
            return _PART
    status_now[facts.broad_log_id] = outcome if outcome == "delivered" else "pending"
    return ReceiptVerdict(ReceiptResult.APPLIED, change=outcome)


def unmatched(
    provider_id: str, received_at: datetime, now: datetime, match_wait: timedelta
) -> ReceiptVerdict | None:
    """A receipt no MT matched: it waits (None) until `match_wait` after its arrival."""
    if received_at + match_wait <= now:
        return ReceiptVerdict(
            ReceiptResult.UNMATCHED, note=f"no MT with provider id {provider_id!r}"
        )
    return None
