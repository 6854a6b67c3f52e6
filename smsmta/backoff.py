"""Back-off and database outages: one doubling formula, one rule for riding out a lost database.

`Backoff(first, maximum).delay(n)` is the wait after the n-th failure in a row: `first`,
then doubled at each failure, never more than `maximum`:
`min(maximum, first * 2 ** (n - 1))` for n >= 1 (n < 1 counts as 1). The exponent stops
at the first one that reaches `maximum` (at least 16), so a failure count of any size
neither overflows nor changes the value. Every exponential delay of the product goes
through it: the MTA's child restarts, the services' reconnections, the marketing
service's push retries and the mid API's delay after failed logins.

`Outage(what, password, event_prefix=...)` is the database outage one loop sees:
- `failed(error)` counts a failed attempt and returns the seconds to wait (its Backoff);
  the first failure of an outage logs `<event_prefix>.db_lost` (warning), the others
  nothing;
- `recovered()` logs `<event_prefix>.db_back` (info: how long, how many attempts) once,
  and only if an outage was going on; the next failure starts a new outage;
- the error's text never carries the connection's password (libpq may quote a DSN):
  it is replaced by `smsmta.obs.MASK`.
Every service keeps its event names through the prefix (and `lost` / `back` when a
loop has its own, like the MTA writer's `mta.flush_failed`); each line carries
`loop=what`.

Pure but for the log and the monotonic clock (Outage). Touches: nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict

#: exponents up to this one are always allowed (the reach of the historical formulas)
MIN_EXPONENT_CAP = 16


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait after the n-th failure in a row: first, 2 x first, ... up to maximum."""

    first: float
    maximum: float
    _cap: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.first > 0:
            raise ValueError(f"Backoff: first must be > 0 (got {self.first})")
        cap = 0
        while self.first * 2**cap < self.maximum:  # exact: doubling a float is exact
            cap += 1
        object.__setattr__(self, "_cap", max(cap, MIN_EXPONENT_CAP))

    def delay(self, n: int) -> float:
        """The wait after the n-th failure in a row (n >= 1; less counts as 1)."""
        return float(min(self.maximum, self.first * 2 ** min(max(n - 1, 0), self._cap)))


#: the services' reconnection to a lost database: 0.2 s doubling up to 5 s
RECONNECT = Backoff(0.2, 5.0)


def dsn_password(dsn: str) -> str | None:
    """The password a libpq connection string carries (to mask it in logs), or None."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(password) if password not in (None, "") else None


class Outage:
    """The database outage one loop sees: logged when it begins and when it ends, once each,
    and the back-off between its attempts. See the module docstring."""

    def __init__(
        self,
        what: str,
        password: str | int | None = None,
        *,
        event_prefix: str,
        backoff: Backoff = RECONNECT,
        lost: str = "db_lost",
        back: str = "db_back",
        logger: Any = None,
    ) -> None:
        self.what = what
        self.password = str(password) if password not in (None, "") else None
        self.backoff = backoff
        self.lost_event = f"{event_prefix}.{lost}"
        self.back_event = f"{event_prefix}.{back}"
        self.log = logger if logger is not None else structlog.get_logger(event_prefix)
        #: monotonic time the outage began, None while the database answers
        self.since: float | None = None
        self.attempts = 0

    @property
    def down(self) -> bool:
        """True from the first failure until recovered()."""
        return self.since is not None

    def failed(self, error: BaseException | str, **fields: Any) -> float:
        """Count a failed attempt; return the seconds to wait before the next one.

        `fields` go on the outage's first line (the one logged)."""
        if self.since is None:
            self.since = time.monotonic()
            self.attempts = 0
            self.log.warning(self.lost_event, loop=self.what, error=self.describe(error), **fields)
        self.attempts += 1
        return self.backoff.delay(self.attempts)

    def recovered(self) -> None:
        """The database answered: log the end of the outage, if one was going on."""
        if self.since is None:
            return
        self.log.info(
            self.back_event,
            loop=self.what,
            outage_seconds=round(time.monotonic() - self.since, 2),
            attempts=self.attempts,
        )
        self.since = None

    def describe(self, error: BaseException | str) -> str:
        """The error's text, the password masked should libpq ever quote it."""
        text = str(error).strip() or type(error).__name__
        if self.password:
            # imported here: smsmta.obs loads prometheus_client, which the MTA command
            # must configure first (PROMETHEUS_MULTIPROC_DIR); midsourcing.auth imports us
            from smsmta.obs import MASK

            text = text.replace(self.password, MASK)
        return text
