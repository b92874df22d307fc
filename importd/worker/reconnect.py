"""One reconnect policy for every broker client (issue 11 point 4): tenacity, exponential
backoff with jitter, each wait logged (and optionally reported) before it is slept.

Used by the consumer loop, the supervisor's first declare and ``importd events``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_exponential_jitter
from tenacity.stop import stop_base

#: Seconds of the first wait; each further wait about doubles, with jitter.
INITIAL_S = 0.5
#: Longest wait between two attempts.
MAX_S = 10.0


def retrying(retry_on: Callable[[BaseException], bool], log: Any | None, event: str, *,
             initial_s: float = INITIAL_S, max_s: float = MAX_S,
             stop: stop_base | Callable[[RetryCallState], bool] | None = None,
             on_retry: Callable[[BaseException | None, float], None] | None = None) -> Retrying:
    """A tenacity ``Retrying`` that retries while ``retry_on(exc)``; any other exception, or
    the last one once ``stop`` says so, is raised as it is (not wrapped in RetryError)."""
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.upcoming_sleep
        if log is not None:  # None: the caller tells its user itself (``importd events`` on stderr)
            log.warning(event, error=str(exc) if exc else "", retry_in_s=round(delay, 2))
        if on_retry is not None:
            on_retry(exc, delay)

    return Retrying(retry=retry_if_exception(retry_on), wait=wait_exponential_jitter(initial=initial_s, max=max_s),
                    stop=stop or stop_never, before_sleep=before_sleep, reraise=True)
