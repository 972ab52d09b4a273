"""A TCP proxy that can cut the network at an exact moment: a real partition between a client and a real server.

Some windows cannot be hit by stopping a server: Redis answers a command and the network fails before the client's
next one. ``cut_after(marker)`` forwards the first server reply that contains ``marker`` (or, with ``forward=False``,
drops it), then closes every connection and refuses new ones for a while; the server itself never notices.
``hold(marker)`` never delivers that reply and leaves the connection open: the client waits on an answer the server
already gave, for as long as a test needs to kill it there. Other bytes pass through unchanged.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.services import free_port


class CuttableProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port, self.port = host, target_port, free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._marker: bytes | None = None
        self._cut_seconds = 0.0
        self._mode = "cut"
        self._down_until = 0.0
        self.cuts = 0
        self.held = 0
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> CuttableProxy:
        threading.Thread(target=self._serve, daemon=True, name="netcut").start()
        return self

    def cut_after(self, marker: bytes, seconds: float, forward: bool = True) -> None:
        """Arm a cut: after the first server reply holding ``marker`` goes through (or is dropped), the network is
        down for ``seconds`` (open connections are closed, new ones refused)."""
        with self._lock:
            self._marker, self._cut_seconds, self._mode = marker, seconds, "cut" if forward else "drop"

    def hold(self, marker: bytes) -> None:
        """Arm a hold: the first server reply holding ``marker`` is swallowed, and nothing more reaches that client
        on its connection; the connection stays open."""
        with self._lock:
            self._marker, self._cut_seconds, self._mode = marker, 0.0, "hold"

    def stop(self) -> None:
        self._stopped.set()
        self._close_all()

    def _listen(self) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        return listener

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _serve(self) -> None:
        while not self._stopped.is_set():
            if self._down():  # refused: nothing listens on the port
                time.sleep(0.05)
                continue
            if self._listener is None:
                self._listener = self._listen()
            try:
                client, _ = self._listener.accept()
            except OSError:  # a timeout, or the listener closed by a cut
                continue
            upstream = socket.create_connection((self.host, self.target_port))
            with self._lock:
                if self._down():  # the cut came while this connection was being accepted
                    _close(client, upstream)
                    continue
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        tail = b""  # the end of the previous chunk: a marker split across two reads still matches
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                trips = from_server and self._trips(tail + chunk)
                tail = (tail + chunk)[-256:]
                if trips == "hold":
                    self.held += 1
                    return  # this reply and all after it stay here; the client never learns what Redis answered
                if self._down() and not trips:
                    _close(source, sink)  # the network is down: nothing more goes through, on any connection
                    return
                if trips != "drop":
                    sink.sendall(chunk)
                if trips:
                    self.cuts += 1
                    self._close_all()
                    return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _trips(self, data: bytes) -> str | None:
        """The armed action if this reply holds the marker ("cut", "drop" or "hold"). For a cut the network is down
        from now, before the reply is forwarded: nothing the client does in answer to it can reach the server."""
        with self._lock:
            if self._marker is None or self._marker not in data:
                return None
            self._marker = None
            if self._mode != "hold":
                self._down_until = time.monotonic() + self._cut_seconds
            return self._mode

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
            listener, self._listener = self._listener, None
        _close(*sockets, *([listener] if listener else []))


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
