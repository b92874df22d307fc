"""Rate limits: parsing, and the shared token bucket on the real Redis."""

import pytest

from importd.config import Settings
from importd.worker import ratelimit


def test_parse_celery_style_rates():
    assert ratelimit.parse("10/m") == ratelimit.Rate(per_s=10 / 60, burst=10)
    assert ratelimit.parse("5/s").per_s == 5
    with pytest.raises(ValueError):
        ratelimit.parse("ten/m")


def test_bucket_allows_the_burst_then_refuses_across_limiters(settings: Settings):
    a = ratelimit.RateLimiter(settings.redis_url, settings.redis_prefix + ":rl")
    b = ratelimit.RateLimiter(settings.redis_url, settings.redis_prefix + ":rl")
    got = [limiter.try_acquire("t", "3/m") for limiter in (a, b, a, b)]
    assert got == [True, True, True, False]


def test_redis_down_falls_back_to_a_local_bucket():
    limiter = ratelimit.RateLimiter("redis://127.0.0.1:6390/0", "x")
    assert [limiter.try_acquire("t", "2/m") for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire("t", None)
