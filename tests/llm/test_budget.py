from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm.base import ModelRejected
from llm.budget import PromptTooLong, fit_history


def fit(history: list[int], *, context: int = 100, new: int = 20, fixed: int = 30) -> int:
    return fit_history(
        context_tokens=context, max_new_tokens=new, fixed_tokens=fixed, history_token_counts=history
    )


def test_everything_fits() -> None:
    assert fit([10, 10, 10]) == 3
    assert fit([]) == 0


def test_oldest_are_dropped_first() -> None:
    # Room is 100 - 20 - 30 = 50: the newest 20 + 25 fit, adding 10 would not.
    assert fit([10, 10, 25, 20]) == 2


def test_exact_fit_counts() -> None:
    assert fit([25, 25]) == 2
    assert fit([1, 25, 25]) == 2


def test_kept_history_has_no_hole() -> None:
    # The 40 does not fit after the newest 20; the older 5 would, but is not kept.
    assert fit([5, 40, 20]) == 1


def test_no_room_for_history() -> None:
    assert fit([1], fixed=80) == 0


def test_fixed_part_too_long() -> None:
    with pytest.raises(PromptTooLong) as caught:
        fit([1], fixed=81)
    error = caught.value
    assert isinstance(error, ModelRejected)
    assert not error.retryable
    assert (error.fixed_tokens, error.max_new_tokens, error.context_tokens) == (81, 20, 100)
    assert "81" in str(error)


@pytest.mark.parametrize(
    ("context", "new", "fixed", "history"),
    [(0, 1, 0, []), (10, 0, 0, []), (10, 1, -1, []), (10, 1, 0, [-1])],
)
def test_invalid_arguments(context: int, new: int, fixed: int, history: list[int]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        fit(history, context=context, new=new, fixed=fixed)


@given(
    history=st.lists(st.integers(min_value=0, max_value=50), max_size=30),
    fixed=st.integers(min_value=0, max_value=80),
)
def test_keeps_the_longest_newest_run_that_fits(history: list[int], fixed: int) -> None:
    room = 100 - 20 - fixed
    kept = fit(history, fixed=fixed)
    newest = history[len(history) - kept :]
    assert sum(newest) <= room
    if kept < len(history):
        assert sum(newest) + history[-kept - 1] > room
