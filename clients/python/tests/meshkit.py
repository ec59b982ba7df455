"""A real local mesh for the client's tests: nats-server from `nats/local.conf`,
`tickmesh-ingest` and `tickmesh-edge` as child processes on free loopback ports, as
tests/browser/mesh.mjs starts them.

Binaries: `$TICKMESH_BIN_DIR` (default `target/debug`, built with `cargo build -p
tickmesh-ingest -p tickmesh-edge`) and `$TICKMESH_NATS_SERVER` (default
`.tools/venv/bin/nats-server`, installed by `cargo xtask test`). The services run on their
built-in defaults plus `TICKMESH_*` variables, not on the demo's config files. Each
process logs to `tests/artifacts/py-client-<name>.log`. Every wait has a deadline, and
every process started here is killed when the mesh stops, or failing that when this
Python process exits.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
BIN_DIR = Path(os.environ.get("TICKMESH_BIN_DIR") or ROOT / "target" / "debug")

T = TypeVar("T")

#: The instruments the tests subscribe to, and the chain they read (AAPL's).
LISTED = ["AAPL", "MSFT", "SPY"]


def nats_server_bin() -> str:
    if os.environ.get("TICKMESH_NATS_SERVER"):
        return os.environ["TICKMESH_NATS_SERVER"]
    local = ROOT / ".tools" / "venv" / "bin" / "nats-server"
    return str(local) if local.exists() else "nats-server"


def hs256_token(secret: bytes, **claims: Any) -> str:
    """A JWT signed with ``secret`` (HS256), as `cargo xtask token` mints them; ``exp``
    an hour from now unless given."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iat": now, "exp": now + 3600, **claims}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(body).encode())
    return head + "." + b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def missing_binaries() -> list[str]:
    """The service binaries that are not there, as paths."""
    return [str(BIN_DIR / b) for b in ("tickmesh-ingest", "tickmesh-edge") if not (BIN_DIR / b).exists()]


@contextlib.contextmanager
def running(**options: Any) -> Iterator[Mesh]:
    """A started :class:`Mesh` (``options`` are its own), stopped on the way out; fails at
    once, saying what to build, when a binary is missing."""
    missing = missing_binaries()
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} missing: run `cargo build -p tickmesh-ingest -p tickmesh-edge` (or set TICKMESH_BIN_DIR)"
        )
    m = Mesh(**options).start()
    try:
        yield m
    finally:
        m.stop()


# Taken below the kernel's ephemeral range (32768-60999), as the Rust test kit does: a
# port handed out for `listen(0)` may be handed out again a moment later as the source
# port of an outgoing connection, and the edge then cannot bind it.
FIRST_PORT = 20000
PORT_COUNT = 12000
_next_port = (os.getpid() * 977 + 5003) % PORT_COUNT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    global _next_port
    for _ in range(PORT_COUNT):
        port = FIRST_PORT + _next_port % PORT_COUNT
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {FIRST_PORT}..{FIRST_PORT + PORT_COUNT}")


_running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_all() -> None:
    for child in list(_running):
        child.kill()


class Proc:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"py-client-{name}.log"
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            self.child = subprocess.Popen(
                argv,
                cwd=ROOT,
                # RUST_LIB_BACKTRACE=0: an error that ends a process is its last lines,
                # not a backtrace that pushes it out of the tail shown on failure.
                env={**os.environ, "NO_COLOR": "1", "RUST_LIB_BACKTRACE": "0", **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _running.add(self.child)

    @property
    def exited(self) -> int | None:
        return self.child.poll()

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text("utf-8", "replace").rstrip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> int:
        """Sends ``sig``, then SIGKILL after ``grace`` seconds; the exit status."""
        if self.child.poll() is None:
            self.child.send_signal(sig)
            try:
                self.child.wait(grace)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(5)
        _running.discard(self.child)
        return self.child.returncode


def wait_for(what: str, check: Callable[[], T | None], timeout: float, procs: list[Proc] = ()) -> T:  # type: ignore[assignment]
    """Polls ``check`` until it returns a truthy value; fails with ``what`` (and the
    logs of ``procs``, at once if one of them died) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if p.exited is not None:
                raise RuntimeError(f"{p.name} exited ({p.exited}) while waiting for {what}:\n{p.tail()}")
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} ({p.log_path})\n{p.tail()}" for p in procs)
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.05)


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read().decode("utf-8", "replace")
    finally:
        conn.close()


class Mesh:
    """nats-server, one ingest (the simulator) and one edge, on loopback ports."""

    def __init__(
        self, ticks_per_sec: int = 1000, edge_env: dict[str, str] | None = None, token: str | None = None
    ) -> None:
        """``edge_env``: more ``TICKMESH_EDGE_*`` variables (an edge that wants tokens);
        ``token``: the one the mesh's own readiness checks send."""
        self.ticks_per_sec = ticks_per_sec
        self.edge_env = edge_env or {}
        self.token = token
        self.store = tempfile.mkdtemp(prefix="tickmesh-py-client-")
        self.nats_port = free_port()
        self.nats_http_port = free_port()
        self.edge_port = free_port()
        self.nats_url = f"nats://127.0.0.1:{self.nats_port}"
        self.ws_url = f"ws://127.0.0.1:{self.edge_port}/v1/stream"
        self.nats: Proc | None = None
        self.ingest: Proc | None = None
        self.edge: Proc | None = None
        self.edge_name = ""
        self._edges = 0

    def procs(self) -> list[Proc]:
        return [p for p in (self.nats, self.ingest, self.edge) if p is not None]

    def start(self) -> Mesh:
        try:
            self.nats = Proc(
                "nats",
                [nats_server_bin(), "-c", "nats/local.conf"],
                {
                    "TICKMESH_NATS_PORT": str(self.nats_port),
                    "TICKMESH_NATS_HTTP_PORT": str(self.nats_http_port),
                    "TICKMESH_NATS_STORE": self.store,
                },
            )
            wait_for(
                "nats-server /healthz",
                lambda: http_get(self.nats_http_port, "/healthz")[0] == 200,
                15,
                [self.nats],
            )
            self.start_ingest()
            self.start_edge()
        except BaseException:
            self.stop()
            raise
        return self

    def start_ingest(self, env: dict[str, str] | None = None) -> Proc:
        assert self.ingest is None or self.ingest.exited is not None, "an ingest is running"
        self.ingest = Proc(
            "ingest",
            [str(BIN_DIR / "tickmesh-ingest")],
            {
                "TICKMESH_INGEST_NATS__URLS": f'["{self.nats_url}"]',
                "TICKMESH_INGEST_SIM__TICKS_PER_SEC": str(self.ticks_per_sec),
                # Three seconds of pre-open rather than ten: prints and bars come sooner.
                "TICKMESH_INGEST_SIM__SESSION__START": "09:29:57",
                **(env or {}),
            },
        )
        return self.ingest

    def stop_ingest(self) -> None:
        if self.ingest is not None:
            self.ingest.stop(signal.SIGTERM)
            self.ingest = None

    def start_edge(self) -> Proc:
        """Starts an edge on the mesh's port (a new name each time); returns once it is
        ready (``/readyz`` 200: NATS connected, reference data loaded)."""
        assert self.edge is None or self.edge.exited is not None, "an edge is running"
        self._edges += 1
        self.edge_name = f"edge-py-{self._edges}"
        self.edge = Proc(
            "edge",
            [str(BIN_DIR / "tickmesh-edge")],
            {
                "TICKMESH_EDGE_NAME": self.edge_name,
                "TICKMESH_EDGE_LISTEN": f"127.0.0.1:{self.edge_port}",
                "TICKMESH_EDGE_NATS__URLS": f'["{self.nats_url}"]',
                "TICKMESH_EDGE_SHUTDOWN__RECONNECT_WINDOW_MS": "300",
                "TICKMESH_EDGE_SHUTDOWN__GRACE_MS": "2000",
                # Anonymous access to every symbol at every tick, which the edge refuses
                # unless asked for by name.
                "TICKMESH_EDGE_AUTH__ANONYMOUS": "true",
                "TICKMESH_EDGE_AUTH__ALLOW_OPEN_ANONYMOUS": "true",
                "TICKMESH_EDGE_AUTH__ANONYMOUS_ENT": '["*"]',
                "TICKMESH_EDGE_AUTH__ANONYMOUS_TIER": "realtime",
                **self.edge_env,
            },
        )
        edge = self.edge
        wait_for(
            f"{self.edge_name} /readyz",
            lambda: http_get(self.edge_port, "/readyz")[0] == 200,
            20,
            [edge],
        )
        wait_for(f"{self.edge_name} to list {', '.join(LISTED)}", self.lists_instruments, 20, [edge])
        return edge

    def lists_instruments(self) -> bool:
        """Whether the edge knows the instruments and the chain the tests use. Ready as
        it is once it has read `md_ref`, an edge started while ingest is still writing
        it answers `unknown_symbol` for instruments not written yet."""
        replies: dict[int, dict[str, Any]] = {}
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            with ws_connect(self.ws_url, open_timeout=2, proxy=None, additional_headers=headers) as ws:
                ws.send(json.dumps({"op": "subscribe", "id": 1, "symbols": LISTED, "mode": "ltp"}))
                ws.send(json.dumps({"op": "chains", "id": 2, "underlying": "AAPL"}))
                while len(replies) < 2:
                    msg = json.loads(ws.recv(timeout=2))
                    # The replies, and errors that refuse a request whole (not one symbol).
                    if msg.get("id") in (1, 2) and (
                        msg["type"] != "error" or msg["id"] == 2 or "symbol" not in msg
                    ):
                        replies[msg["id"]] = msg
        except (OSError, WebSocketException):
            return False
        subscribed, chains = replies[1], replies[2]
        return sorted(subscribed.get("symbols", [])) == sorted(LISTED) and bool(chains.get("expiries"))

    def stop_edge(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL: gone without a word; SIGTERM: a drain (clients told to reconnect)."""
        if self.edge is not None:
            self.edge.stop(sig)
            self.edge = None

    def ensure_running(self) -> None:
        """Starts the ingest and the edge again if a test left either stopped."""
        if self.ingest is None or self.ingest.exited is not None:
            self.ingest = None
            self.start_ingest()
        if self.edge is None or self.edge.exited is not None:
            self.edge = None
            self.start_edge()

    def metric(self, series: str) -> float | None:
        """A series of the running edge's /metrics, e.g. ``tickmesh_edge_sessions``."""
        _, text = http_get(self.edge_port, "/metrics")
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line[len(series) + 1 :])
        return None

    def count_messages(self, subject: str, seconds: float, at_least: int = 1) -> int:
        """How many messages nats-server carries on ``subject`` (wildcards allowed) from
        now until ``at_least`` have come or ``seconds`` have passed, read by a plain
        subscriber speaking the NATS text protocol. Tells a test what happened while
        no edge was there to see it."""
        seen = 0
        deadline = time.monotonic() + seconds
        with socket.create_connection(("127.0.0.1", self.nats_port), timeout=seconds) as sock:
            sock.sendall(f'CONNECT {{"verbose":false}}\r\nSUB {subject} 1\r\nPING\r\n'.encode())
            buf = b""
            while seen < at_least and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                buf += chunk
                while b"\r\n" in buf:
                    line, rest = buf.split(b"\r\n", 1)
                    if line.startswith(b"MSG "):
                        size = int(line.split()[-1])
                        if len(rest) < size + 2:
                            break
                        rest = rest[size + 2 :]
                        seen += 1
                    elif line == b"PING":
                        sock.sendall(b"PONG\r\n")
                    buf = rest
        return seen

    def stop(self) -> None:
        """Newest first (nats-server last, so the others drain into it)."""
        for p in reversed(self.procs()):
            p.stop(signal.SIGTERM, 3.0)
        self.nats = self.ingest = self.edge = None
        shutil.rmtree(self.store, ignore_errors=True)
