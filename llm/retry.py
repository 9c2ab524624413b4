"""When and how long to wait before trying a failed generation again.

Backends do not retry themselves: a retry after part of the answer was shown must replace what
the user saw, which only the caller (the reply pipeline) can do. `retry_model_call` gives it the
loop; the attempt number it passes in says when shown text has to be reset.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from llm.base import ModelError

if TYPE_CHECKING:
    from parley.settings import Settings

T = TypeVar("T")

# 2**64 times any sane base delay is already far beyond any cap; bounds the float power.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (retries + 1), with capped exponential backoff and full jitter."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, not {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings, *, rng: random.Random | None = None) -> RetryPolicy:
        return cls(
            attempts=settings.model_retries + 1,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            rng=rng if rng is not None else random.Random(),
        )

    def backoff_cap(self, attempt: int) -> float:
        """The longest wait after failed attempt number `attempt` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, not {attempt}")
        exponent = min(attempt - 1, _MAX_EXPONENT)
        return min(self.max_delay, self.base_delay * 2.0**exponent)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt`: uniform in [0, cap] ("full jitter").

        Full jitter spreads the retries of many replies that failed together (one TGI restart
        fails every stream at once) instead of sending them back in synchronized waves.
        """
        return self.rng.uniform(0.0, self.backoff_cap(attempt))

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether to try again after `error` ended attempt number `attempt`."""
        return isinstance(error, ModelError) and error.retryable and attempt < self.attempts


async def retry_model_call(
    call: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, ModelError, float], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run `call(attempt)` (attempt = 1, 2, ...) until it returns or the policy gives up.

    Only retryable ModelErrors are retried; anything else propagates at once, as does the last
    error. `on_retry(attempt, error, delay)` runs before each wait, e.g. to tell the user or to
    reset the partial answer shown so far.
    """
    attempt = 1
    while True:
        try:
            return await call(attempt)
        except ModelError as error:
            if not policy.should_retry(error, attempt):
                raise
            wait = policy.delay(attempt)
            if on_retry is not None:
                await on_retry(attempt, error, wait)
            await sleep(wait)
            attempt += 1
