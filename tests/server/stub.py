"""A tiny real HTTP/1.1 upstream on a loopback socket, scripted per connection and request.

Real sockets, so the gateway's httpx pool behaves as it does against vLLM: connections are
kept alive and reused, and the stub can close one at the worst moment.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable

# respond(connection number, request number on that connection, request head) -> raw bytes to
# send, or None to close the connection without answering (what a keep-alive expiry looks like);
# a response with "Connection: close" is followed by closing the connection, complete or not
Respond = Callable[[int, int, bytes], "bytes | None"]


def sse(*chunks: dict | str) -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks)


CHAT = sse(
    {"id": "x", "model": "stub", "choices": [{"index": 0, "delta": {"reasoning": "Just greet."}}]},
    {"id": "x", "model": "stub", "choices": [{"index": 0, "delta": {"content": "Hello."}, "finish_reason": "stop"}]},
    {"id": "x", "model": "stub", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    "[DONE]",
)


def http_response(body: bytes, *, length: int | None = None, close: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len(body) if length is None else length}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


@dataclass
class StubUpstream:
    respond: Respond
    requests: list[tuple[int, int, bytes]] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                n = self.connections
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        buf = b""
        with conn:
            for k in range(1000):
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                with self._lock:
                    self.requests.append((n, k, head))
                out = self.respond(n, k, head)
                if out is None:
                    return
                conn.sendall(out)
                if b"\r\nconnection: close\r\n" in out.partition(b"\r\n\r\n")[0].lower() + b"\r\n":
                    return

    def close(self) -> None:
        self.sock.close()
