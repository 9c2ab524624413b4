"""How much conversation history fits in the model's context. Pure arithmetic, no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from llm.base import ModelRejected


class PromptTooLong(ModelRejected):
    """The parts that are never cut (system prompt, new message, template) leave no room to
    answer. Not retryable: the same message fails the same way."""

    def __init__(self, *, fixed_tokens: int, max_new_tokens: int, context_tokens: int) -> None:
        self.fixed_tokens = fixed_tokens
        self.max_new_tokens = max_new_tokens
        self.context_tokens = context_tokens
        super().__init__(
            f"prompt needs {fixed_tokens} tokens plus {max_new_tokens} for the answer, "
            f"more than the model's context of {context_tokens}"
        )


def fit_history(
    *,
    context_tokens: int,
    max_new_tokens: int,
    fixed_tokens: int,
    history_token_counts: Sequence[int],
) -> int:
    """How many of the most recent history items fit; older ones are dropped first.

    `history_token_counts` runs oldest to newest, each the full cost of one message: its
    content tokens plus its template overhead (llama3.TOKENS_PER_MESSAGE). `fixed_tokens` is
    everything that is always sent: system prompt, the new message, their overhead, BOS and the
    assistant header. Only a contiguous run of the newest items is kept, so the model never
    sees a conversation with a hole in it. Raises PromptTooLong when the fixed part plus
    `max_new_tokens` alone exceed `context_tokens`.
    """
    if context_tokens <= 0 or max_new_tokens <= 0 or fixed_tokens < 0:
        raise ValueError("context_tokens and max_new_tokens must be > 0, fixed_tokens >= 0")
    room = context_tokens - max_new_tokens - fixed_tokens
    if room < 0:
        raise PromptTooLong(
            fixed_tokens=fixed_tokens, max_new_tokens=max_new_tokens, context_tokens=context_tokens
        )
    kept = 0
    for count in reversed(history_token_counts):
        if count < 0:
            raise ValueError(f"token counts must be >= 0, not {count}")
        if count > room:
            break
        room -= count
        kept += 1
    return kept
