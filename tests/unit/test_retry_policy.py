"""Retry backoff: exponential, capped, with equal jitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.listener import RetryPolicy

POLICY = RetryPolicy(max_retries=8, backoff_base=2.0, backoff_cap=60.0)


def full_step(policy: RetryPolicy, attempt: int) -> float:
    return policy.delay(attempt, rand=lambda: 1.0)


def test_backoff_doubles_with_each_attempt_until_the_cap() -> None:
    steps = [full_step(POLICY, attempt) for attempt in range(1, 9)]
    assert steps == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_backoff_never_exceeds_the_cap_even_for_huge_attempt_numbers() -> None:
    assert full_step(POLICY, 10_000) == 60.0


def test_attempt_zero_is_treated_as_the_first() -> None:
    assert full_step(POLICY, 0) == full_step(POLICY, 1) == 2.0


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 4.0), (0.5, 6.0), (1.0, 8.0)])
def test_jitter_spreads_the_delay_over_the_upper_half_of_the_step(
    rand: float, expected: float
) -> None:
    assert POLICY.delay(3, rand=lambda: rand) == expected


@given(
    attempt=st.integers(min_value=1, max_value=64),
    base=st.floats(min_value=0.01, max_value=100),
    cap_factor=st.floats(min_value=1, max_value=1000),
)
def test_jittered_delay_stays_within_half_step_and_step(
    attempt: int, base: float, cap_factor: float
) -> None:
    policy = RetryPolicy(backoff_base=base, backoff_cap=base * cap_factor)
    step = min(policy.backoff_cap, base * 2 ** (attempt - 1))
    delay = policy.delay(attempt)  # the real random source
    assert step / 2 <= delay <= step


def test_the_policy_describes_itself_for_the_listeners_command() -> None:
    assert str(POLICY) == "8 retries, backoff 2s doubling to 60s"
