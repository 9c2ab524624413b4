"""An incremental decoder for server-sent events (the WHATWG "text/event-stream" format).

Bytes go in as the network delivers them (an event, a line or a UTF-8 character may be split
anywhere); complete events come out. Handled: LF, CRLF and CR line ends, comment lines
(": keep-alive"), `data:` with or without the space, several `data:` lines joined with "\n",
named events (`event: error`). `id:` and `retry:` mean nothing to a chat stream and are dropped.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

DEFAULT_MAX_BUFFER = 1 << 20  # bytes of one unfinished line or event


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"


class SSEDecoder:
    def __init__(self, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""  # text after the last complete line
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._max_buffer = max_buffer

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events that `chunk` completes. Raises ValueError when a line or an event grows
        past `max_buffer` (a server that never ends its lines)."""
        return self._lines(self._decoder.decode(chunk), final=False)

    def close(self) -> list[SSEEvent]:
        """At end of stream: an event the server did not end with a blank line is still
        delivered (the spec drops it; being lenient here costs nothing)."""
        events = self._lines(self._decoder.decode(b"", final=True), final=True)
        if self._line:
            events += self._field(self._line)
            self._line = ""
        events += self._dispatch()
        return events

    def _lines(self, text: str, *, final: bool) -> list[SSEEvent]:
        buffer = self._line + text
        events: list[SSEEvent] = []
        start = 0
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            if end == cr and end + 1 == len(buffer) and not final:
                break  # a CR at the end of a chunk may be the first half of CRLF
            line = buffer[start:end]
            start = end + 2 if buffer.startswith("\r\n", end) else end + 1
            events += self._field(line)
        self._line = buffer[start:]
        if len(self._line) > self._max_buffer:
            raise ValueError(f"server-sent event line longer than {self._max_buffer} characters")
        return events

    def _field(self, line: str) -> list[SSEEvent]:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return []  # a comment, e.g. a keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self._max_buffer:
                raise ValueError(f"server-sent event longer than {self._max_buffer} characters")
        elif name == "event":
            self._event = value
        return []

    def _dispatch(self) -> list[SSEEvent]:
        if not self._data:
            self._event = ""  # an event without data is not dispatched
            return []
        event = SSEEvent("\n".join(self._data), self._event or "message")
        self._data, self._data_size, self._event = [], 0, ""
        return [event]
