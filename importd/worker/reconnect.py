"""The one reconnect policy for the broker: exponential backoff with jitter, by tenacity.

The consumer loop, the supervisor's first declare and ``importd events`` all wait the same
way after a lost or refused broker connection, so an operator reads one rule: 0.5 s doubling
to 10 s, each wait stretched by up to its own length in jitter, forever unless a deadline is
given. What counts as a broker failure is the caller's to say.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    stop_never,
    wait_exponential_jitter,
)

#: First wait after a failure, in seconds.
FIRST_WAIT_S = 0.5
#: Longest wait between two attempts, in seconds.
MAX_WAIT_S = 10.0


def retrying(should_retry: Callable[[BaseException], bool], *,
             on_wait: Callable[[BaseException | None, float], Any], deadline: float | None = None) -> Retrying:
    """Attempts of one broker operation: retried while ``should_retry(exc)``; ``on_wait(error,
    wait_s)`` is told before each wait (a log line, a message on stderr); ``deadline`` (a
    ``time.monotonic()`` value) bounds the whole, and the last error is raised then."""

    def before_sleep(state: RetryCallState) -> None:
        on_wait(state.outcome.exception() if state.outcome else None, state.upcoming_sleep)

    stop = stop_never if deadline is None else stop_before_delay(max(0.0, deadline - time.monotonic()))
    return Retrying(retry=retry_if_exception(should_retry),
                    wait=wait_exponential_jitter(initial=FIRST_WAIT_S, max=MAX_WAIT_S, jitter=FIRST_WAIT_S),
                    stop=stop, before_sleep=before_sleep, reraise=True)
