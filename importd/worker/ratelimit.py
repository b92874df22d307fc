"""Per-task rate limits shared by every worker: a token bucket in Redis.

``"10/m"`` means at most 10 starts per minute across all workers, with a burst of 10. With
Redis down the limit falls back to a bucket in this process, so imports go on (slower limits
are better than none, and Redis is best effort by design).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis

from importd import keys

#: Seconds a Redis call of the limiter may take before the local bucket is used.
REDIS_TIMEOUT_S = 0.5

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

_LUA = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't'))
local stamp = tonumber(redis.call('HGET', KEYS[1], 's'))
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if tokens == nil then tokens = burst; stamp = now end
tokens = math.min(burst, tokens + (now - stamp) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
"""


@dataclass(frozen=True)
class Rate:
    """``per_s`` tokens a second with a bucket of ``burst`` tokens."""

    per_s: float
    burst: int


def parse(text: str) -> Rate:
    """Parse Celery-style rates: ``"10/m"``, ``"5/s"``, ``"100/h"``, ``"3"`` (per second)."""
    count, _, unit = text.strip().partition("/")
    try:
        n = float(count)
        seconds = _UNITS[unit.strip().lower()[:1] or "s"]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"rate limit {text!r} is not like '10/m'") from exc
    if n <= 0:
        raise ValueError(f"rate limit {text!r} must be positive")
    return Rate(per_s=n / seconds, burst=max(1, int(n)))


class RateLimiter:
    """Token buckets per task name; ``try_acquire`` never blocks."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S,
                                           socket_connect_timeout=REDIS_TIMEOUT_S)
        self._prefix = prefix
        self._script = self._redis.register_script(_LUA)
        self._local: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def try_acquire(self, task: str, rate_limit: str | None) -> bool:
        if not rate_limit:
            return True
        rate = parse(rate_limit)
        try:
            return bool(self._script(keys=[keys.rate_limit(self._prefix, task)],
                                     args=[rate.per_s, rate.burst, time.time()]))
        except redis.RedisError:
            return self._local_acquire(task, rate)

    def _local_acquire(self, task: str, rate: Rate) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._local.get(task, (float(rate.burst), now))
            tokens = min(rate.burst, tokens + (now - stamp) * rate.per_s)
            ok = tokens >= 1
            self._local[task] = (tokens - 1 if ok else tokens, now)
        return ok

    def close(self) -> None:
        self._redis.close()
