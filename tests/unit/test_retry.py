"""The retry rule: delays, jitter bounds, and when to give up."""

import random

from hypothesis import given
from hypothesis import strategies as st

from importd.worker import retry


def test_delays_double_from_two_seconds():
    assert [retry.step_delay_s(s) for s in (1, 2, 3)] == [2.0, 4.0, 8.0]


@given(step=st.integers(1, retry.STEPS), seed=st.integers(0, 2**32))
def test_jittered_delay_stays_within_its_step_and_under_the_queue_ttl(step: int, seed: int):
    delay = retry.jittered_delay_ms(step, random.Random(seed))
    assert retry.step_delay_s(step) * 1000 <= delay <= retry.step_ttl_ms(step)


def test_head_of_line_wait_is_bounded_by_the_jitter_width():
    for step in range(1, retry.STEPS + 1):
        width = retry.step_ttl_ms(step) - retry.step_delay_s(step) * 1000
        assert width <= retry.JITTER * retry.step_delay_s(step) * 1000 + 1


def test_three_retries_then_give_up():
    decisions = [retry.decide(a, max_retries=3) for a in (1, 2, 3, 4)]
    assert [d.step for d in decisions] == [1, 2, 3, None]
    assert [d.next_attempt for d in decisions[:3]] == [2, 3, 4]
    assert decisions[3].gives_up


def test_more_retries_than_steps_reuse_the_last_delay_queue():
    assert retry.decide(5, max_retries=6).step == retry.STEPS


def test_zero_retries_gives_up_at_once():
    assert retry.decide(1, max_retries=0).gives_up
