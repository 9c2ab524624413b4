"""The one small interface every model backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 0.95  # 1.0 means no nucleus filtering
    repetition_penalty: float = 1.1


class ModelError(Exception):
    """A generation failed. `retryable` says whether trying again may succeed."""

    retryable: bool = True


class ModelOverloaded(ModelError):
    """The server is saturated (HTTP 429)."""


class ModelUnavailable(ModelError):
    """The server is down, unreachable, or failed (5xx, refused, error mid-stream)."""


class ModelTimeout(ModelError):
    """The generation took too long or stalled between tokens."""


class ModelRejected(ModelError):
    """The request itself is invalid (HTTP 4xx other than 429, e.g. 422): do not retry."""

    retryable = False


class ChatModel(Protocol):
    """A chat model: rendered and budgeted by the backend, streamed as text chunks."""

    @property
    def context_tokens(self) -> int:
        """Tokens the model accepts in all: prompt plus new tokens."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str]:
        """Yield the answer's text in chunks (special tokens skipped). Raises ModelError."""
        ...

    async def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as a message's content."""
        ...

    def prompt_overhead_tokens(self, n_messages: int) -> int:
        """Tokens the chat template adds around n messages plus the assistant header."""
        ...

    async def server_info(self) -> dict[str, Any]:
        """What the backend says about itself, `model_id` at least. Raises ModelError."""
        ...

    async def aclose(self) -> None: ...
