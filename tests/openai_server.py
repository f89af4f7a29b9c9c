"""A real OpenAI-compatible HTTP server for tests: stdlib ``http.server`` on 127.0.0.1, an ephemeral port.

It answers ``POST /v1/chat/completions`` with proper chat-completion JSON (``choices[i].message.content``,
``finish_reason``, ``usage``), generating with any ``curate.generation.Generator`` (tests pass an ``HFGenerator``
on a tiny model). Knobs make it misbehave the way real servers do: a scripted list of failures (status +
headers) to answer before succeeding, a status it always fails with, a cap on the choices it returns, and a
delay while a request is in flight, so tests can see retries, fallbacks and how many requests overlap.

    with OpenAIServer(HFGenerator(path), fail=[(429, {"Retry-After": "0"})]) as server:
        OpenAIGenerator("tiny", base_url=server.base_url).generate(...)
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from curate.generation import Generator, Sampling


class OpenAIServer:
    """Context manager running the server on a background thread; ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        generator: Generator,
        *,
        fail: list[tuple[int, dict[str, str]]] | None = None,
        always_fail: int | None = None,
        max_n: int | None = None,
        delay: float = 0.0,
    ):
        self.generator = generator
        self.fail = list(fail or [])
        self.always_fail = always_fail
        self.max_n = max_n
        self.delay = delay
        self.requests: list[dict[str, Any]] = []  # every request body, failed ones included
        self.statuses: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # one generate at a time: torch on 2 cores gains nothing from more
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                status, payload, headers = server._handle(body)
                self._send(status, payload, headers)

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            failure = self.fail.pop(0) if self.fail else None
        try:
            if self.delay:
                time.sleep(self.delay)
            if failure is None and self.always_fail is not None:
                failure = (self.always_fail, {})
            if failure is not None:
                status, headers = failure
                with self._lock:
                    self.statuses.append(status)
                return status, {"error": {"message": f"scripted failure {status}", "type": "server_error"}}, headers
            n = int(body.get("n") or 1)
            if self.max_n is not None:
                n = min(n, self.max_n)
            sampling = Sampling(
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
                seed=int(body.get("seed") or 0),
                stop=body.get("stop") if isinstance(body.get("stop"), list) else None,
            )
            with self._model_lock:
                (completions,) = self.generator.generate([body["messages"]], n=n, sampling=sampling)
            with self._lock:
                self.statuses.append(200)
            payload = {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "tiny"),
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": c.text},
                        "finish_reason": c.finish_reason,
                        "logprobs": None,
                    }
                    for i, c in enumerate(completions)
                ],
                "usage": {
                    "prompt_tokens": completions[0].prompt_tokens,
                    "completion_tokens": sum(c.tokens for c in completions),
                    "total_tokens": completions[0].prompt_tokens + sum(c.tokens for c in completions),
                },
            }
            return 200, payload, {}
        finally:
            with self._lock:
                self.in_flight -= 1


def save_sharp_tiny_model(path: str | Path, *, seed: int = 0, std: float = 0.5) -> str:
    """A tiny random model whose weights are redrawn with std ``std``: its greedy outputs differ by prompt.

    ``testing.tiny_causal_lm`` initialises with std 0.02, so every prompt decodes to the same repeated token and a
    greedy comparison could not tell a padding bug from a correct run.
    """
    import torch

    from curate.testing import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # embeddings and projections; norms keep their unit weights
                p.copy_(torch.randn(p.shape, generator=g) * std)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
