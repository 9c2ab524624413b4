"""Token counts of message contents, remembered: budgeting a prompt asks for the same
turns again and again, and a server round trip per turn would cost more than the prompt."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

CACHE_SIZE = 4096


class TokenCounts:
    def __init__(
        self,
        exact: Callable[[str], Awaitable[int | None]],
        estimate: Callable[[str], int],
        *,
        size: int = CACHE_SIZE,
    ) -> None:
        self._exact = exact  # None when the server cannot count right now
        self._estimate = estimate
        self._size = size
        self._known: OrderedDict[bytes, int] = OrderedDict()

    async def count(self, content: str) -> int:
        if not content:
            return 0
        key = hashlib.blake2b(content.encode("utf-8"), digest_size=16).digest()
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
            return known
        count = await self._exact(content)
        if count is None:
            return self._estimate(content)  # not remembered: exact counts may come back later
        self._known[key] = count
        if len(self._known) > self._size:
            self._known.popitem(last=False)
        return count
