"""Fixtures of the fault suite: the simulator's `start` and `connect` (tests/smpp)."""

from tests.smpp.test_simulator import connect, start  # noqa: F401
