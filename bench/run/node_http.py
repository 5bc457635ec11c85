"""The node agent's HTTP server: what reaches `NodeAgent` and in which order.

1. At accept, before a byte is read: a connection from an address that is not the head's is
   closed; one over `max_connections` gets a 503 and is closed (never queued, never a thread).
2. Reading the request: every socket read times out after `timeout_s`, and the whole request
   (line, headers, body) must arrive within `timeout_s` too, or the connection is cut.
3. Before the body: the signature headers must be present and the sender's time fresh
   (bench.engines.node_auth); the route must exist; the body must declare a length of at most
   `MAX_BODY_BYTES`.
4. The body is read, the signature verified and the nonce checked for replay; only then is the
   body parsed as JSON, a start request validated into its type (bench.engines.node_wire
   .StartRequest, bench.run.node_policy) and handed to the agent. Answers (the wire types) to
   authenticated requests are signed.
A refusal is an HTTP 4xx with a one-line JSON error (node_wire.Refusal) and one line on the agent's log.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel

from bench.engines.node_auth import (
    SIGNATURE_HEADER,
    RequestVerifier,
    Unauthenticated,
    sign_answer,
)
from bench.engines.node_wire import Exiting, Refusal
from bench.errors import BenchError, one_line
from bench.run.node_policy import start_request

MAX_BODY_BYTES = 64 * 1024  # a start request is ~1 KB
TIMEOUT_S = 10.0  # per socket read, and for the whole request to arrive
MAX_CONNECTIONS = 8  # the head uses ~3 at once (energy sampler, health, start/stop)
REFUSAL_LOG_EVERY_S = 60.0  # one line per refused address per minute, not one per connection

ROUTES = {("GET", "/health"): "health", ("GET", "/energy"): "energy",
          ("POST", "/engine/start"): "start", ("POST", "/engine/stop"): "stop", ("POST", "/exit"): "exit"}


class _Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class AgentServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that refuses other addresses at accept and bounds its connections."""

    daemon_threads = True
    # The listen backlog (socketserver's default is 5). Connections wait in it until accepted,
    # refused or answered 503; with 5 slots a burst of strangers filled it and the kernel
    # dropped the next SYNs, so every connection after them, the head's included, waited for
    # TCP's 1 s, 3 s ... SYN retry (60 stranger connects took 9 s on a 2-core box).
    request_queue_size = 128

    def __init__(self, address, handler, *, allowed: set[str], max_connections: int, log: Callable[[str], None]):
        self.allowed = set(allowed)
        self.log = log
        self._max = max_connections
        self._open = 0
        self._open_lock = threading.Lock()
        self._logged_at: dict[str, float] = {}
        super().__init__(address, handler)

    def verify_request(self, request, client_address) -> bool:
        host = client_address[0]
        if host in self.allowed:
            return True
        now = time.monotonic()
        if now - self._logged_at.get(host, -REFUSAL_LOG_EVERY_S) >= REFUSAL_LOG_EVERY_S:
            if len(self._logged_at) > 1000:
                self._logged_at.clear()
            self._logged_at[host] = now
            self.log(f"bench node: refused connections from {host}: {host} is not the head ({', '.join(sorted(self.allowed))})")
        return False  # socketserver closes it: no thread, no read

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            full = self._open >= self._max
            self._open += 0 if full else 1
        if full:
            _answer_busy(request, self._max)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # its thread ends in process_request_thread
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._open_lock:
            self._open -= 1

    def open_connections(self) -> int:
        """Connections being served now."""
        with self._open_lock:
            return self._open


def _answer_busy(request: socket.socket, limit: int) -> None:
    body = Refusal(error=f"busy: {limit} connections open").model_dump_json().encode()
    head = f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    try:
        request.setblocking(False)  # the accept loop never waits on a client
        request.send(head.encode() + body)
    except OSError:
        pass


def make_server(agent: Any, host: str, port: int, allowed: set[str], secret: bytes, *, timeout_s: float = TIMEOUT_S,
                max_connections: int = MAX_CONNECTIONS, log: Callable[[str], None] | None = None) -> AgentServer:
    """The agent's server on (host, port): only clients at `allowed` addresses, only requests
    signed with `secret`; refusals go to `log` (default: a line on stderr)."""
    verifier = RequestVerifier(secret)
    say: Callable[[str], None] = log or _stderr_line

    class Handler(BaseHTTPRequestHandler):
        timeout = timeout_s  # every read of this connection (StreamRequestHandler.setup)
        server: AgentServer  # the server that made it (make_server below)

        def setup(self):
            super().setup()
            # the whole request must arrive within timeout_s: a drip of one byte per read timeout is cut
            self._deadline = threading.Timer(timeout_s, self._cut)
            self._deadline.daemon = True
            self._deadline.start()

        def finish(self):
            self._deadline.cancel()
            super().finish()

        def _cut(self):
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def _serve(self, method: str) -> None:
            nonce, self._body_read = None, False
            try:
                verifier.check_fresh(self.headers)
                name = ROUTES.get((method, self.path))
                if name is None:
                    raise _Refusal(404, f"no route {method} {self.path[:100]}")
                body = self._body()
                self._deadline.cancel()  # the request is in: what follows is the agent's time
                nonce = verifier.verify(method, self.path, self.headers, body)
                answer = self._dispatch(name, body)
            except Unauthenticated as e:
                return self._refuse(method, 401, str(e), None)
            except _Refusal as e:
                return self._refuse(method, e.status, str(e), nonce)
            except BenchError as e:
                return self._refuse(method, getattr(e, "http_status", 400), str(e), nonce)
            except Exception as e:  # noqa: BLE001 -- one bad request never stops the agent
                return self._refuse(method, 500, f"{type(e).__name__}: {e}", nonce)
            self._send(200, answer, nonce)

        def _length(self) -> int:
            if self.headers.get("Transfer-Encoding"):
                raise _Refusal(411, "a body needs a Content-Length")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise _Refusal(400, "bad Content-Length") from None
            if not 0 <= length <= MAX_BODY_BYTES:
                raise _Refusal(413, f"body of {length} bytes is larger than {MAX_BODY_BYTES}")
            return length

        def _body(self) -> bytes:
            length = self._length()
            self._body_read = True
            return self.rfile.read(length) if length else b""

        def _drain(self) -> None:
            """Read and drop a small body a refusal left unread: closing on unread bytes resets the
            connection, and the client might lose the answer. Never parsed; an oversized one is left."""
            try:
                length = 0 if self._body_read else self._length()
            except _Refusal:
                return
            if length:
                try:
                    self.rfile.read(length)
                except OSError:
                    pass

        def _dispatch(self, name: str, body: bytes) -> BaseModel:
            try:
                request = json.loads(body) if body else {}
            except ValueError:
                raise _Refusal(400, "body is not JSON") from None
            if name == "start":
                return agent.start(start_request(request), heads=self.server.allowed)
            if name == "exit":  # the head is done with this node (`bench node release`): stop serving
                agent.stop()
                threading.Thread(target=self.server.shutdown, daemon=True).start()
                return Exiting()
            return getattr(agent, name)()

        def _refuse(self, method: str, status: int, message: str, nonce: str | None) -> None:
            line = one_line(message)
            self._drain()
            say(f"bench node: refused {method} {self.path[:100]} from {self.client_address[0]} ({status}): {line}")
            self._send(status, Refusal(error=line), nonce)

        def _send(self, status: int, payload: BaseModel, nonce: str | None) -> None:
            data = payload.model_dump_json().encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if nonce is not None:  # an authenticated request: the head checks the answer came from this agent
                self.send_header(SIGNATURE_HEADER, sign_answer(secret, nonce, status, data))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # the head polls /energy every 100 ms: no access log
            pass

    return AgentServer((host, port), Handler, allowed=allowed, max_connections=max_connections, log=say)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
