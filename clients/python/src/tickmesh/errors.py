"""Why a request failed, or why the client stopped: values with codes, never strings to
parse."""

from __future__ import annotations

from .events import ServerError


class TickMeshError(Exception):
    """A request failed. ``code`` is the gateway's error code (``error`` is then its
    message), or one of the client's own: ``disconnected`` (the connection dropped
    before the reply), ``timeout``, ``queue_full`` (too many requests held while
    disconnected), ``closed`` (the client was closed, or closed for good by a terminal
    close code)."""

    def __init__(self, code: str, message: str, error: ServerError | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.error = error


class ClosedError(TickMeshError):
    """The gateway closed the connection with a terminal code (4400-4499) and no fresh
    token was to be had: raised by the event iterator once the events before it are
    consumed, and by requests made after it."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__("closed", f"closed for good by the gateway ({close_code} {reason})".strip())
        self.close_code = close_code
        self.reason = reason
