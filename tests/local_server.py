"""A local OpenAI-compatible chat server for tests and benches (stdlib only).

It plays the remote paid service, nothing else: the shipped code talks to it through the real
`openai` client. A `responder(body) -> Reply` decides what each request gets, so tests can script
answers, inject faults (429, 500, 400 with the server's message, malformed JSON, hangs), count requests
and the most that were in flight at once; `seeded` samples deterministically from the request's seed,
as vLLM does.

    with LocalServer(lambda body: Reply(["4"])) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="test")
"""
from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    """What the server sends back for one request."""
    contents: list[str] = field(default_factory=lambda: [""])  # one per choice
    status: int = 200            # e.g. 429 or 500 to inject a fault
    raw_body: str | None = None  # send these bytes as is (malformed JSON)
    delay_s: float = 0.0         # extra latency for this request (a hang when > client timeout)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None     # the error message of a non-200 reply (default "injected <status>")
    param: str | None = None     # the error's `param`, as OpenAI sends for a rejected parameter


def echo_last_user(body: dict) -> Reply:
    """Default responder: answer every choice with the last user message."""
    text = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    return Reply([text] * body.get("n", 1))


def seeded(body: dict) -> Reply:
    """Sample like a server that honours `seed`: choice j of a request seeded s is a stable function of
    (s, j), so equal seeds give equal answers; without a seed every answer is fresh."""
    seed = body.get("seed")
    pick = (lambda j: random.Random(f"{seed}-{j}")) if seed is not None else (lambda j: random.Random())
    return Reply([json.dumps({"answer": str(pick(j).randrange(10 ** 9))}) for j in range(body.get("n", 1))])


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 serving POST /v1/chat/completions and GET /v1/models."""

    def __init__(self, responder: Callable[[dict], Reply] = echo_last_user, latency_s: float = 0.0,
                 supports_n: bool = True):
        self.responder = responder
        self.latency_s = latency_s
        self.supports_n = supports_n  # False: behave like servers that ignore n and return one choice
        self.requests: list[dict] = []  # every request body, in arrival order
        self.in_flight = 0      # requests being answered now
        self.max_in_flight = 0  # the most at once since the start
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 1024
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> "LocalServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms delayed-ACK stall

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: str) -> None:
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "local", "object": "model"}]}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    server.requests.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.responder(body)
                    time.sleep(server.latency_s + reply.delay_s)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                if reply.raw_body is not None:
                    return self._send(reply.status, reply.raw_body)
                if reply.status != 200:
                    error = {"message": reply.error or f"injected {reply.status}", "param": reply.param}
                    return self._send(reply.status, json.dumps({"error": error}))
                contents = reply.contents if server.supports_n else reply.contents[:1]
                prompt_tokens = reply.prompt_tokens
                if prompt_tokens is None:
                    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
                completion_tokens = reply.completion_tokens
                if completion_tokens is None:
                    completion_tokens = sum(len(c.split()) for c in contents)
                self._send(200, json.dumps({
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model", "local"),
                    "choices": [{"index": i, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": c}}
                                for i, c in enumerate(contents)],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                }))

        return Handler


def serve_forever_cli() -> None:
    """`python tests/local_server.py [--latency-s L]`: an echo server in its own process (prints its URL)."""
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--latency-s", type=float, default=0.0)
    a = p.parse_args()
    with LocalServer(latency_s=a.latency_s) as srv:
        print(srv.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    serve_forever_cli()
