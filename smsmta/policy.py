"""The retry policy: what becomes of a message whose attempt did not succeed.

Decided here and nowhere else (Postfix's smtp_trouble.c in spirit):

- a throttling answer (ESME_RTHROTTLED, ESME_RMSGQFUL) is not a failure: the part is
  sent again after `throttle_backoff`, and the retry count does not move;
- an attempt whose fate is unknown (MT timeout, connection lost before the answer) is
  sent again at once by the same child, flagged as a possible duplicate, up to
  `max_unknown` times; then it goes back to the queue like a soft failure;
- a failure qualified `soft` in the message log goes back to the queue, `period` later,
  while retries remain and the validity has not ended;
- `hard` ends the message; `ignored` ends it too, without counting as a hard failure.

Pure: time enters as an argument. Touches nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from smsmta.db import FailureType


class Verdict(enum.Enum):
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    failure_type: FailureType
    next_try_at: datetime | None = None
    reason: str = ""


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
