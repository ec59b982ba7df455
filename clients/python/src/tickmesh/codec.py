"""The two encodings of the protocol, chosen at the upgrade by subprotocol: JSON objects
in text frames, or the same objects as MessagePack maps in binary frames."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

Encoding = Literal["json", "msgpack"]

SUBPROTOCOLS: dict[str, str] = {"json": "tickmesh.v1.json", "msgpack": "tickmesh.v1.msgpack"}


class Codec:
    def __init__(self, encoding: Encoding) -> None:
        if encoding not in SUBPROTOCOLS:
            raise ValueError(f"unknown encoding {encoding!r}: one of {', '.join(SUBPROTOCOLS)}")
        self.encoding = encoding
        self.subprotocol = SUBPROTOCOLS[encoding]
        self.encode: Callable[[dict[str, Any]], str | bytes]
        if encoding == "json":
            self.encode = lambda msg: json.dumps(msg, separators=(",", ":"))
            return
        try:
            import msgpack  # type: ignore[import-untyped,unused-ignore]
        except ImportError as err:
            raise ImportError(
                'encoding="msgpack" needs the msgpack package: pip install "tickmesh[msgpack]"'
            ) from err
        self._msgpack = msgpack
        self.encode = msgpack.packb

    def decode(self, data: str | bytes) -> Any:
        """A frame as the gateway sent it; the frame's type tells the format."""
        if isinstance(data, str):
            return json.loads(data)
        if self.encoding == "msgpack":
            return self._msgpack.unpackb(data, raw=False, strict_map_key=False)
        return json.loads(data)
