"""The ``text/event-stream`` format (Server-Sent Events), parsed from bytes: no I/O.

Each event is its ``event:`` name and its ``data:`` lines joined by ``\\n``, dispatched at
a blank line; ``:`` lines are comments (a gateway's keep-alive) and ``id:`` and ``retry:``
are not used (the client reconnects its own way). Lines end with LF, CRLF or CR.
"""

from __future__ import annotations

#: The longest line held while its end has not come: a gateway's message is one line.
MAX_LINE_BYTES = 16 * 2**20


class EventStream:
    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._max_line = max_line
        self._event = ""
        self._data: list[str] = []
        #: Comment lines seen (``:``), the keep-alives a gateway sends in place of pings.
        self.comments = 0

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """The events completed by ``chunk``, as ``(name, data)``; ``ValueError`` for a
        line longer than the bound."""
        self._buf += chunk
        events: list[tuple[str, str]] = []
        start = 0
        while True:
            ends = [i for i in (self._buf.find(b"\n", start), self._buf.find(b"\r", start)) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if self._buf[end] == 0x0D:
                if end + 1 == len(self._buf):
                    break  # CR last: an LF may follow in the next chunk
                after = end + 2 if self._buf[end + 1] == 0x0A else end + 1
            else:
                after = end + 1
            event = self._line(bytes(self._buf[start:end]).decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = after
        del self._buf[:start]
        if len(self._buf) > self._max_line:
            raise ValueError(f"an event-stream line over {self._max_line} bytes")
        return events

    def _line(self, line: str) -> tuple[str, str] | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None
