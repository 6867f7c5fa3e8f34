"""A TCP proxy on 127.0.0.1 that cuts SSE responses part-way, to test resuming."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class CuttingProxy:
    """Forwards to ``upstream_port``; the first ``cuts`` stream requests (on any connection,
    kept-alive or new) have their response cut after ``cut_after_bytes``."""

    def __init__(self, upstream_port: int, *, cut_after_bytes: int, cuts: int = 1) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._cut_after = cut_after_bytes
        self._cuts_left = cuts
        self.cuts_made = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self._upstream)
        armed = threading.Event()  # set when a stream request passes on this connection
        threading.Thread(target=self._requests, args=(client, upstream, armed), daemon=True).start()
        since_armed = 0
        try:
            while chunk := upstream.recv(65536):
                if armed.is_set():
                    if since_armed + len(chunk) >= self._cut_after:
                        client.sendall(chunk[: self._cut_after - since_armed])
                        self.cuts_made += 1
                        break
                    since_armed += len(chunk)
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _requests(
        self, client: socket.socket, upstream: socket.socket, armed: threading.Event
    ) -> None:
        try:
            while chunk := client.recv(65536):
                if b"/stream" in chunk:
                    with self._lock:
                        if self._cuts_left > 0:
                            self._cuts_left -= 1
                            armed.set()
                upstream.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
