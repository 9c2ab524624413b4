"""The server-sent events decoder, fed the way a network delivers bytes."""

from __future__ import annotations

import pytest

from llm.sse import SSEDecoder, SSEEvent


def decode_in_pieces(raw: bytes, size: int) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for start in range(0, len(raw), size):
        events += decoder.feed(raw[start : start + size])
    return events + decoder.close()


STREAM = (
    ": keep-alive\r\n"
    'data: {"a":\r\n'
    "data:1}\r\n"
    "\r\n"
    "event: error\n"
    "id: 7\n"
    "retry: 100\n"
    "data: boom\n"
    "\n"
    "data: caf\u00e9 \u4f60\u597d\r"
    "\r"
    "data\n"
    "\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEEvent('{"a":\n1}'),
    SSEEvent("boom", "error"),
    SSEEvent("caf\u00e9 \u4f60\u597d"),
    SSEEvent(""),
    SSEEvent("[DONE]"),
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_events_split_anywhere(size: int) -> None:
    # Every split point, a CRLF and a UTF-8 character across two chunks included.
    assert decode_in_pieces(STREAM, size) == EXPECTED


def test_comments_and_empty_events_are_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": ping\n\n\nevent: x\n\n") == []
    assert decoder.feed(b"data: y\n\n") == [SSEEvent("y")]  # the event name was reset


def test_last_event_without_blank_line_is_delivered_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [SSEEvent("[DONE]")]


def test_a_line_that_never_ends_is_refused() -> None:
    decoder = SSEDecoder(max_buffer=10)
    with pytest.raises(ValueError, match="longer than 10"):
        decoder.feed(b"data: " + b"x" * 20)


def test_an_event_that_never_ends_is_refused() -> None:
    decoder = SSEDecoder(max_buffer=10)
    with pytest.raises(ValueError, match="event longer"):
        decoder.feed(b"data: 12345\ndata: 12345\n")
