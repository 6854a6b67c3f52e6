"""Rate limits of one MTA child: an exact sliding-second cap, and AIMD on throttling.

`RateLimiter(rate)` grants sends so that no span of one second, sliding, ever holds more
than `rate` of them (Kannel's per-calendar-second counter lets 1.4-1.8x through in a
sliding second). The cap binds where the provider counts: on arrival. Sends leave in
event-loop batches and arrive a few milliseconds apart from how they left, so the log
spans `1 s + jitter` (30 ms by default): what arrives within any one second then stays
within the cap, for 3% of its throughput. It is two limits in one:

- a log of recent grants, `(time, count)` batches, summed over the last `span`: the
  exact guarantee;
- a token bucket of `rate / 10` tokens refilled at `rate` per second in front of it: so
  the grants spread over the second instead of leaving in one burst at its start.

`Aimd` adapts a child's rate to the provider's answers: `threshold` throttling statuses
(ESME_RTHROTTLED, ESME_RMSGQFUL) within one `cooldown` halve the rate, at most once per
`cooldown`; clean
answers make it climb back linearly, never above the cap. With no cap configured, the
rate at which throttling began stands in for it, and the limit lifts once climbed
back to twice that.

`SmscWindow` tells the two causes of a throttling answer apart. An SMSC that holds fewer
submits of a bind than our `window` throttles the excess whatever the rate: halving the
rate then only slows everything down (our window 50 against an SMSC's 10 took 21 s for
2,000 messages where 5.5 s were enough). A throttled part sent while `n` others were
unanswered on its bind, when the SMSC has never accepted one sent with `n` or more, says
the SMSC's window is at most `n`: the bind's window shrinks to `n` and the rate is left
alone. Throttled with nothing else unanswered, or at an occupancy the SMSC has accepted
before, it is the rate: AIMD. A
shrunk window probes one more every `probe_after` seconds.

Pure: time enters as `now` (seconds, monotonic). Touches nothing.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW = 1.0  # the span the cap applies to, in seconds
JITTER = 0.03  # how far apart from their send times sends may arrive, in seconds
_EPSILON = 1e-6  # float slack on token counts, so a grant at next_grant_at() succeeds


class RateLimiter:
    """At most `rate` grants in any one-second span; `rate` None or 0 means unlimited."""

    def __init__(
        self,
        rate: float | None,
        now: float = 0.0,
        *,
        burst_share: float = 0.1,
        jitter: float = JITTER,
    ) -> None:
        self._burst_share = burst_share
        self.span = WINDOW + jitter
        self._log: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self._tokens = 0.0
        self._refilled_at = now
        self.rate: float | None = None
        self.set_rate(rate, now)

    def set_rate(self, rate: float | None, now: float) -> None:
        """Change the cap; what was granted in the last second still counts against it."""
        self._refill(now)
        self.rate = rate if rate else None
        if self.rate is not None:
            self._burst = max(1.0, self.rate * self._burst_share)
            self._refill_rate = self.rate / self.span
            self._cap = math.floor(self.rate) if self.rate >= 1 else 1
            self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        if self.rate is not None:
            elapsed = now - self._refilled_at
            if elapsed > 0:
                self._tokens = min(self._burst, self._tokens + elapsed * self._refill_rate)
        self._refilled_at = max(self._refilled_at, now)

    def _expire(self, now: float) -> None:
        log = self._log
        # same arithmetic as next_grant_at(): stamp + span, so the two agree exactly
        span = self.span
        while log and log[0][0] + span <= now:
            self._in_window -= log.popleft()[1]

    def in_window(self, now: float) -> int:
        """Grants within the last span."""
        self._expire(now)
        return self._in_window

    def acquire(self, wanted: int, now: float) -> int:
        """Grant up to `wanted` sends now; return how many (0 when none may go)."""
        if wanted <= 0:
            return 0
        if self.rate is None:
            granted = wanted
        else:
            self._refill(now)
            self._expire(now)
            if self.rate < 1:
                # below one a second: one grant every 1/rate seconds, nothing in between
                granted = 1 if self._tokens + _EPSILON >= 1 and not self._log else 0
            else:
                tokens = int(self._tokens + _EPSILON)
                granted = min(wanted, tokens, self._cap - self._in_window)
            if granted <= 0:
                return 0
            self._tokens = max(0.0, self._tokens - granted)
        log = self._log
        if log and log[-1][0] == now:
            log[-1] = (now, log[-1][1] + granted)
        else:
            log.append((now, granted))
        self._in_window += granted
        return granted

    def next_grant_at(self, now: float) -> float:
        """The earliest time at which `acquire` may grant one more (now if it can now)."""
        if self.rate is None:
            return now
        self._refill(now)
        self._expire(now)
        missing = 1 - self._tokens
        token_at = now if missing <= 0 else now + missing / self._refill_rate
        if self.rate < 1:
            window_at = self._log[-1][0] + self.span if self._log else now
        elif self._in_window < self._cap:
            window_at = now
        else:
            # the oldest grants must leave the window for one more to fit
            excess, window_at = self._in_window - self._cap + 1, now
            for stamp, count in self._log:
                excess -= count
                window_at = stamp + self.span
                if excess <= 0:
                    break
        return max(token_at, window_at)


class Aimd:
    """Additive-increase, multiplicative-decrease of one child's rate on throttling."""

    def __init__(
        self,
        cap: float | None,
        *,
        threshold: int = 3,
        cooldown: float = 1.0,
        recovery_seconds: float = 20.0,
        floor: float = 1.0,
    ) -> None:
        self.cap = cap or None
        self.threshold = threshold
        self.cooldown = cooldown
        self.recovery_seconds = recovery_seconds
        self.floor = floor
        self.rate: float | None = self.cap  # None: no limit in force
        self.reference: float | None = self.cap  # what the rate climbs back towards
        self.decreases = 0
        self._throttled: deque[float] = deque()  # times of recent throttling answers
        self._last_change = -math.inf
        self._last_update: float | None = None

    def set_cap(self, cap: float | None) -> None:
        """A new cap (the child's share of the account's): the rate never exceeds it."""
        self.cap = cap or None
        if self.cap is not None:
            self.reference = self.cap
            if self.rate is None or self.rate > self.cap:
                self.rate = self.cap

    def on_throttled(self, now: float, observed_rate: float) -> bool:
        """A throttling answer; returns True when this one halved the rate."""
        self._advance(now)
        recent = self._throttled
        recent.append(now)
        while recent and recent[0] < now - self.cooldown:
            recent.popleft()
        if len(recent) < self.threshold or now - self._last_change < self.cooldown:
            return False
        current = self.rate if self.rate is not None else max(observed_rate, self.floor)
        if self.cap is None:
            self.reference = max(observed_rate, current, self.floor)
        self.rate = max(self.floor, current / 2)
        recent.clear()
        self._last_change = now
        self.decreases += 1
        return True

    def on_clean(self, now: float) -> None:
        """An answer that is not throttling: the rate climbs back linearly."""
        self._advance(now)

    def _advance(self, now: float) -> None:
        last, self._last_update = self._last_update, now
        if last is None or self.rate is None or self.reference is None:
            return
        # the climb starts when the cooldown after the last halving ends
        since = max(last, self._last_change + self.cooldown)
        if now <= since:
            return
        step = self.reference / self.recovery_seconds * (now - since)
        self.rate += step
        if self.cap is not None:
            self.rate = min(self.rate, self.cap)
        elif self.rate >= 2 * self.reference:
            self.rate = None  # recovered well past where throttling began: lift the limit
            self.reference = None


class SmscWindow:
    """The SMSC's own window on one account's binds, learned from throttling answers."""

    def __init__(self, window: int, *, probe_after: float = 10.0) -> None:
        self.window = window  # what the settings allow
        self.limit = window  # what the SMSC is believed to hold
        self.probe_after = probe_after
        self.accepted_max = -1  # most unanswered when an accepted part was sent
        self._since = -math.inf  # when the limit last changed

    def on_accepted(self, unanswered: int) -> None:
        """A part sent while `unanswered` others were on its bind was accepted."""
        if unanswered > self.accepted_max:
            self.accepted_max = unanswered

    def on_throttled(self, unanswered: int, now: float) -> bool:
        """A part sent while `unanswered` others were on its bind was throttled.

        True when the window explains it (the limit is lowered if needed, the rate must
        stay); False when the SMSC accepted as full a window before: its rate.
        """
        if unanswered == 0 or unanswered <= self.accepted_max:
            return False  # nothing else of ours held, or as full as accepted before: rate
        if unanswered < self.limit:
            self.limit = unanswered
            self._since = now
        return True

    def tick(self, now: float) -> bool:
        """Probe one more after `probe_after` s at a lowered limit; True when it grew."""
        if self.limit >= self.window or now - self._since < self.probe_after:
            return False
        self.limit += 1
        self._since = now
        return True
