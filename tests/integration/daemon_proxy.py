"""A proxy on a unix socket in front of the Docker daemon's, that can make container removals
fail: answered with a 500 (a daemon under load), or held unanswered until the client gives up
(a daemon too slow to answer), or carried out with the answer held back (``swallow``: the
container is gone, its remover never hears so). Everything else passes through untouched.

One request per connection: the proxy asks the daemon to close each connection after its
answer (``Connection: close``), so that every request is seen here, and docker-py's pool opens a
new one for the next. Upgraded connections (attach) are relayed as they are.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Literal

DAEMON = "/var/run/docker.sock"
_REMOVAL = re.compile(rb"^DELETE /v[0-9.]+/containers/([0-9a-f]+)[? ]")
_CREATE = re.compile(rb"^POST /v[0-9.]+/containers/create[? ]")
_BODY = b'{"message":"proxy: the daemon is overloaded"}'
_REFUSAL = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + _BODY
)


class DaemonProxy:
    """Forwards ``path`` to the daemon; ``spoil_removals(n, how)`` spoils the next n removals."""

    def __init__(self, path: Path, daemon: str = DAEMON) -> None:
        self.path = path
        self.url = f"unix://{path}"
        self._daemon = daemon
        self._lock = threading.Lock()
        self._spoil = 0
        self._how: Literal["refuse", "hold", "swallow"] = "refuse"
        self._of = b""
        self.spoiled: list[str] = []  # the request lines spoiled, in order
        self.swallowed = threading.Event()  # a swallowed removal has been carried out
        self._hold_creates = 0
        self.create_held = threading.Event()  # a container creation is being held
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def spoil_removals(
        self,
        count: int,
        how: Literal["refuse", "hold", "swallow"] = "refuse",
        *,
        of: str = "",
    ) -> None:
        """Spoil the next ``count`` removals (of the container whose id starts with ``of``)."""
        with self._lock:
            self._spoil, self._how, self._of = count, how, of.encode()

    def hold_creates(self, count: int) -> None:
        """Hold the next ``count`` container creations unanswered (they never reach the
        daemon): a service setting a build up waits there."""
        with self._lock:
            self._hold_creates = count

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head, rest = _read_head(client)
            if head is None:
                return
            if _CREATE.match(head) and self._hold_creates > 0:
                rest = _read_body(client, head, rest)
                if self._held_create(rest):
                    while client.recv(65536):  # no answer: the client's own timeout ends it
                        pass
                    return
            how = self._spoiled(head)
            if how == "refuse":
                client.sendall(_REFUSAL)
                return
            if how == "swallow":
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
                    upstream.connect(self._daemon)
                    upstream.sendall(_closing(head) + rest)
                    while upstream.recv(65536):  # the daemon's answer, which nobody hears
                        pass
                self.swallowed.set()
            if how in ("hold", "swallow"):
                # No answer: the client's own timeout ends it (it closes the connection).
                while client.recv(65536):
                    pass
                return
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
                upstream.connect(self._daemon)
                upstream.sendall(_closing(head) + rest)
                _relay(client, upstream)

    def _held_create(self, body: bytes) -> bool:
        """Whether this creation (of a build's container: it carries a job's label) is held."""
        if b'"orchestrator.job"' not in body:
            return False
        with self._lock:
            if self._hold_creates <= 0:
                return False
            self._hold_creates -= 1
        self.create_held.set()
        return True

    def _spoiled(self, head: bytes) -> str | None:
        removal = _REMOVAL.match(head)
        if removal is None:
            return None
        with self._lock:
            if self._spoil <= 0 or not removal.group(1).startswith(self._of):
                return None
            self._spoil -= 1
            self.spoiled.append(head.split(b"\r\n", 1)[0].decode())
            return self._how

    def close(self) -> None:
        self._server.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> DaemonProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_head(client: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def _read_body(client: socket.socket, head: bytes, rest: bytes) -> bytes:
    """The whole body of a request whose head says its length (docker-py's JSON bodies)."""
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    want = int(length.group(1)) if length else 0
    while len(rest) < want:
        chunk = client.recv(65536)
        if not chunk:
            break
        rest += chunk
    return rest


def _closing(head: bytes) -> bytes:
    """The request head, asking the daemon to close the connection after its answer."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    if any(line.lower().startswith(b"upgrade:") for line in lines):
        return head
    kept = [line for line in lines if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    up = threading.Thread(target=pump, args=(client, upstream), daemon=True)
    up.start()
    pump(upstream, client)
    up.join()
