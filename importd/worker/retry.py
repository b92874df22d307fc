"""The retry rule: how long a failed attempt waits and where the message goes next.

A failed attempt ``n`` (1-based) waits ``BASE_DELAY_S * 2**(n-1)`` seconds, stretched by a
random factor in ``[1, 1 + JITTER)``: about 2, 4 and 8 s. The wait is made by a delay queue
per work queue and step whose fixed ``x-message-ttl`` is the longest wait of that step; each
message carries its own shorter ``expiration``. RabbitMQ expires messages only from a queue's
head, so a message can be held back by the one before it, but never by more than the
jitter's width (``JITTER`` x the step's delay).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: Seconds the first retry waits; each further retry doubles it.
BASE_DELAY_S = 2.0
#: Largest extra fraction of a step's delay added at random (0.25: up to 25 % longer).
JITTER = 0.25
#: Delay steps (and so delay queues per work queue); a task with more retries reuses the last.
STEPS = 3


def step_for_attempt(attempt: int) -> int:
    """The delay step that follows failed attempt ``attempt`` (1-based), capped at STEPS."""
    return max(1, min(attempt, STEPS))


def step_delay_s(step: int) -> float:
    """The shortest wait of a delay step."""
    return BASE_DELAY_S * 2 ** (step - 1)


def step_ttl_ms(step: int) -> int:
    """The delay queue's fixed TTL: the longest wait a message of this step may have."""
    return math.ceil(step_delay_s(step) * (1 + JITTER) * 1000)


def jittered_delay_ms(step: int, rng: random.Random | None = None) -> int:
    """A message's own expiration for this step: between the step's delay and its TTL."""
    r = (rng or random).random()
    return min(step_ttl_ms(step), math.ceil(step_delay_s(step) * (1 + JITTER * r) * 1000))


@dataclass(frozen=True)
class Decision:
    """What to do with a failed attempt: retry at ``step`` or give up (``step`` is None)."""

    step: int | None
    next_attempt: int

    @property
    def gives_up(self) -> bool:
        return self.step is None


def decide(attempt: int, max_retries: int) -> Decision:
    """Attempt ``attempt`` failed: retry while fewer than ``max_retries`` retries were made."""
    if attempt > max_retries:
        return Decision(step=None, next_attempt=attempt)
    return Decision(step=step_for_attempt(attempt), next_attempt=attempt + 1)
