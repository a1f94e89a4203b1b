"""An HTTP server on 127.0.0.1 that misbehaves on purpose, for the service's FHIR reads and JWKS fetches.

The first path segment says how:

* ``/drip/...``: a 200 with a declared length, then its body one byte every ``interval`` seconds;
* ``/drip-headers/...``: the status line and headers themselves one byte every ``interval`` seconds;
* ``/huge/...``: a 200 without a length, then bytes as fast as the socket takes them (``huge_bytes`` of them);
* ``/huge-declared/...``: a 200 that declares ``huge_bytes`` (and sends them, if read).

``served`` counts the bytes of body sent; ``requests`` the paths asked for.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class HostileServer:
    interval: float = 0.1
    huge_bytes: int = 300 * 1024 * 1024
    requests: list[str] = field(default_factory=list)
    served: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                path = request.split(b" ", 2)[1].decode()
                self.requests.append(path)
                mode = path.strip("/").split("/", 1)[0]
                body = b'{"resourceType": "Patient", "id": "p1"}' + b" " * 4000
                if mode == "drip":
                    conn.sendall(self._head(len(body)))
                    self._drip(conn, body)
                elif mode == "drip-headers":
                    self._drip(conn, self._head(len(body)) + body)
                elif mode in ("huge", "huge-declared"):
                    conn.sendall(self._head(self.huge_bytes if mode == "huge-declared" else None))
                    block = b"[" + b"0," * 32767 + b"0"
                    sent = 0
                    while sent < self.huge_bytes and not self._stop.is_set():
                        conn.sendall(block)
                        sent += len(block)
                        self.served += len(block)
                else:
                    conn.sendall(self._head(len(body)) + body)
            except OSError:
                return  # the client gave up

    def _head(self, length: int | None) -> bytes:
        lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Connection: close"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self._stop.is_set():
                return
            conn.sendall(data[i : i + 1])
            self.served += 1
            time.sleep(self.interval)
