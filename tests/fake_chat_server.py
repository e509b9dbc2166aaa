"""A chat-completions server on 127.0.0.1 for testing the API judge and server generation over real sockets.

It answers POST /v1/chat/completions. To a judge's request (the last message shows "[Response A]")
the verdict is the letter of the response that contains the marker "GOOD" (so a test knows the right
winner whatever order was shown); to any other request, "<model> answers: <last message>" (so a test
knows which model, base or run id, was asked). A script
of actions, consumed one per request, makes it misbehave: "429" (with Retry-After), "408", "500",
"503" (with Retry-After), "reset" (the connection is reset before any answer), "slow" (sleeps past
the client's timeout), "malformed" (a body that is not JSON), "garbage" (a reply that is not a
verdict), "echo" (a reply whose text is the request's Authorization header), "empty" and "null" (an empty
or null text), "wrong-model" (a reply naming another model), "gzip-broken" (a body declared gzip that is
not), "surrogate" (a text with a lone surrogate), "huge" (a 50 kB reply), "trickle" (a reply sent a few
bytes at a time over about a second), "ok". It counts requests
and the most requests in flight at once, records each request's body and Authorization header, and
refuses (401) a request whose bearer key is not the expected one (``key=None``: a server without auth
that takes any request). With ``echo_key=True`` every answer, 200 replies and errors alike, carries the
request's Authorization header in its body (as an echoing proxy would), to test that nothing the
client writes holds the key.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatServer:
    def __init__(
        self,
        *,
        key: str | None,
        delay: float = 0.0,
        slow_seconds: float = 1.0,
        retry_after: str = "0.01",
        echo_key: bool = False,
    ):
        self.key = key
        self.echo_key = echo_key
        self.delay = delay
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.script: list[str] = []
        self.requests = 0
        self.completed = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = self.completed = self.max_in_flight = 0
            self.bodies.clear()
            self.authorizations.clear()

    def _next_action(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else "ok"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _leave(self) -> None:
                """A request stops counting as in flight once its answer starts out: the client may
                send its next request as soon as it has read this one, before this thread ends."""
                if getattr(self, "_counted", False):
                    self._counted = False
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self._leave()
                if server.echo_key:
                    try:
                        document = json.loads(body)
                    except ValueError:
                        body += f" {self.headers.get('Authorization', '')}".encode()
                    else:
                        document["echo"] = {"authorization": self.headers.get("Authorization", "")}
                        body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.bodies.append(body)
                    server.authorizations.append(self.headers.get("Authorization"))
                self._counted = True
                try:
                    self._answer(body)
                finally:
                    self._leave()

            def _answer(self, body: dict) -> None:
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}')
                    return
                if server.key is not None and self.headers.get("Authorization") != f"Bearer {server.key}":
                    # echo the presented key, as some real APIs do, to test that the client redacts it
                    presented = self.headers.get("Authorization", "")
                    self._send(401, json.dumps({"error": f"invalid key {presented}"}).encode())
                    return
                time.sleep(server.delay)
                action = server._next_action()
                if action == "429":
                    self._send(429, b'{"error": "rate limited"}', {"Retry-After": server.retry_after})
                elif action in ("408", "500"):
                    self._send(int(action), b'{"error": "try again"}')
                elif action == "503":
                    self._send(503, b'{"error": "overloaded"}', {"Retry-After": server.retry_after})
                elif action == "reset":  # RST instead of an answer
                    self._leave()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                elif action == "echo":
                    self._send(200, self._completion(f"A, says {self.headers.get('Authorization', '')}"))
                elif action == "slow":
                    time.sleep(server.slow_seconds)
                    self._send(200, self._completion("A"))
                elif action == "malformed":
                    self._send(200, b"{this is not json")
                elif action == "garbage":
                    self._send(200, self._completion("Both responses are fine."))
                elif action in ("empty", "null"):
                    self._send(200, self._completion("" if action == "empty" else None))
                elif action == "wrong-model":
                    self._send(200, self._completion(self._reply(body), model="some-other-model"))
                elif action == "gzip-broken":
                    self._send(200, b"this is not gzip", {"Content-Encoding": "gzip"})
                elif action == "surrogate":
                    self._send(200, self._completion("half an emoji \ud83d"))
                elif action == "huge":
                    self._send(200, self._completion("x" * 50_000))
                elif action == "trickle":
                    self._trickle(self._completion(self._reply(body)))
                else:
                    with server._lock:  # counted before sending: a client never holds an uncounted verdict
                        server.completed += 1
                    self._send(200, self._completion(self._reply(body)))

            @staticmethod
            def _reply(body: dict) -> str:
                user = body["messages"][-1]["content"]
                if "[Response A]" not in user:  # not a judge's request: a generation
                    return f"{body['model']} answers: {user}"
                first = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", user, re.S).group(1)
                return "A" if "GOOD" in first else "B"

            def _trickle(self, body: bytes) -> None:
                self._leave()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for start in range(0, len(body), max(1, len(body) // 10)):
                        self.wfile.write(body[start : start + max(1, len(body) // 10)])
                        self.wfile.flush()
                        time.sleep(0.1)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            @staticmethod
            def _completion(content: str | None, model: str | None = None) -> bytes:
                document: dict = {
                    "id": "x",
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                }
                if model is not None:
                    document["model"] = model
                return json.dumps(document).encode()

        return Handler
