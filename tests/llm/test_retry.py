from __future__ import annotations

import random

import pytest

from llm.base import ModelError, ModelOverloaded, ModelRejected, ModelTimeout, ModelUnavailable
from llm.retry import RetryPolicy, retry_model_call
from parley.settings import load_settings


class Highest(random.Random):
    """random() just below 1, so uniform(0, cap) is about cap."""

    def random(self) -> float:
        return 0.999999


def test_from_settings() -> None:
    settings = load_settings(model_retries=2, retry_base_delay=0.25, retry_max_delay=3.0)
    policy = RetryPolicy.from_settings(settings)
    assert (policy.attempts, policy.base_delay, policy.max_delay) == (3, 0.25, 3.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=8.0)
    assert [policy.backoff_cap(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert policy.backoff_cap(10_000) == 8.0  # no overflow


def test_delay_is_full_jitter_within_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=8.0, rng=random.Random(7))
    expected = random.Random(7)
    for attempt in range(1, 9):
        delay = policy.delay(attempt)
        assert 0.0 <= delay <= policy.backoff_cap(attempt)
        assert delay == expected.uniform(0.0, policy.backoff_cap(attempt))
    top = RetryPolicy(base_delay=1.0, max_delay=5.0, rng=Highest())
    assert top.delay(3) == pytest.approx(4.0, rel=1e-5)


def test_invalid_policy() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(base_delay=-1)
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().backoff_cap(0)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ModelOverloaded(), True),
        (ModelUnavailable(), True),
        (ModelTimeout(), True),
        (ModelRejected(), False),
        (ValueError(), False),
    ],
)
def test_should_retry(error: BaseException, retry: bool) -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.should_retry(error, 1) is retry
    assert policy.should_retry(error, 2) is retry
    assert policy.should_retry(error, 3) is False


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[int, str]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def on_retry(self, attempt: int, error: ModelError, delay: float) -> None:
        self.retries.append((attempt, type(error).__name__))


async def test_retry_until_success() -> None:
    rec = Recorder()
    attempts: list[int] = []

    async def call(attempt: int) -> str:
        attempts.append(attempt)
        if attempt < 3:
            raise ModelOverloaded("busy")
        return "ok"

    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=10.0, rng=Highest())
    result = await retry_model_call(call, policy, on_retry=rec.on_retry, sleep=rec.sleep)
    assert result == "ok"
    assert attempts == [1, 2, 3]
    assert rec.retries == [(1, "ModelOverloaded"), (2, "ModelOverloaded")]
    assert rec.sleeps == pytest.approx([1.0, 2.0], rel=1e-5)


async def test_gives_up_after_all_attempts() -> None:
    rec = Recorder()

    async def call(attempt: int) -> str:
        raise ModelUnavailable(f"down {attempt}")

    with pytest.raises(ModelUnavailable, match="down 3"):
        await retry_model_call(call, RetryPolicy(attempts=3), sleep=rec.sleep)
    assert len(rec.sleeps) == 2


async def test_rejected_and_other_errors_are_not_retried() -> None:
    rec = Recorder()

    async def rejected(attempt: int) -> None:
        raise ModelRejected("bad")

    async def broken(attempt: int) -> None:
        raise KeyError("bug")

    with pytest.raises(ModelRejected):
        await retry_model_call(rejected, RetryPolicy(), sleep=rec.sleep)
    with pytest.raises(KeyError):
        await retry_model_call(broken, RetryPolicy(), sleep=rec.sleep)
    assert rec.sleeps == []
