"""A scripted OpenAI-compatible chat server that misbehaves on demand, for tests and benchmarks.

Teacher clients must survive what real servers do under load: rate limits with ``Retry-After``,
5xx, requests that hang, connections dropped mid-answer, truncated JSON, empty answers,
refusals, more answers than asked for. Provoking those against vLLM or a paid API is slow and
unreliable, so this server does them when told: faults come from a script (the next chat
requests, in arrival order) or from a rule called on each request. It answers
``POST /v1/chat/completions`` (non-streaming) and ``GET /v1/models`` in the OpenAI wire format,
takes its answer text from a pluggable responder, and records every request it receives (body
digest, request-id header, arrival time, the fault it got) so a test can assert that retries
happened and nothing was sent twice.

In a test, run it in a background thread::

    with ScriptedServer(latency_s=0.05) as server:
        server.script("rate_limit", None, Fault("drop"))
        ...  # point a client at server.url

For a benchmark, run it in its own process, so it does not share the client's GIL::

    python -m cotforge.testing.openai_server --port 8000 --latency 0.2

(:func:`start_process` does that and returns the URL once it listens).

It serves any number of requests at once (the fixed latency is a sleep, not a queue).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aiohttp import web

from cotforge.testing._threaded import ThreadedServer

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "bad_request",
    "hang",
    "drop",
    "malformed_json",
    "empty",
    "refusal",
    "three_choices",
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__

DEFAULT_MODEL = "test-model"

DEFAULT_ANSWER = """<analysis>
The aircraft is a narrow-body twin-engine airliner seen from the side on a taxiway. It has a
single aisle fuselage of medium length, two turbofan engines mounted under low swept wings, a
conventional tail with a swept fin and low-set horizontal stabilisers, and blended winglets that
rise sharply at the wing tips. The nose is pointed with a slightly drooping profile, the cockpit
windows have the characteristic eyebrow-free outline, and there are two main doors ahead of the
wing and two behind it. The engine nacelles are flattened at the bottom, giving them a hamster
pouch look, and the main landing gear retracts into the belly without fairings.
</analysis>
<options>
Boeing 737-800
Boeing 737-700
Airbus A320
Boeing 757-200
</options>
<comparison>
Boeing 737-800: the flattened engine nacelles, the pointed nose and the blended winglets are all
typical of the 737 Next Generation family, and the fuselage is long enough for two overwing exits,
which the -800 has. Boeing 737-700: the same family shares the nacelles and nose, but the -700 is
noticeably shorter, with a single overwing exit and a stubbier look than the aircraft shown.
Airbus A320: it has round engine nacelles with more ground clearance, a blunter nose and a
rounded cockpit window line, none of which match. Boeing 757-200: it is much longer and taller
on its landing gear, with a narrow nose and large round engines, which rules it out.
</comparison>
<prediction>
The features match the longer 737 Next Generation with two overwing exits: Boeing 737-800
</prediction>"""

REFUSAL = "I'm sorry, but I can't help with identifying this."


def default_responder(body: dict[str, Any]) -> str:
    """The answer for every request: a fixed, well-formed four-part rationale."""
    return DEFAULT_ANSWER


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour: ``kind`` is one of :data:`FAULT_KINDS`.

    ``retry_after`` is sent as the ``Retry-After`` header of a ``rate_limit`` (seconds or an HTTP
    date, as written); ``status`` replaces the code of a ``server_error`` (e.g. 503, 408) or a
    ``bad_request`` (e.g. 422); ``hang_s`` is how long a ``hang`` waits before answering.
    """

    kind: FaultKind
    retry_after: str | None = "1"
    status: int | None = None
    hang_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            msg = f"unknown fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the server saw it.

    ``try_number`` counts arrivals with the same ``X-Request-Id`` (or, without one, the same
    body), 1 for the first, so retries of a request show up as 2, 3, ...; ``fault`` is the
    fault kind it got, or None for a normal answer. ``body`` is the parsed JSON (None for a
    body that was not JSON).
    """

    method: str
    path: str
    request_id: str | None
    authorization: str | None
    body_digest: str | None
    body: dict[str, Any] | None
    try_number: int
    arrived_s: float
    fault: str | None = None


FaultRule = Callable[[ReceivedRequest], "Fault | FaultKind | None"]


@dataclass
class _State:
    """What the handlers share; guarded by a lock because tests read it from another thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    script: collections.deque[Fault | None] = field(default_factory=collections.deque)
    received: list[ReceivedRequest] = field(default_factory=list)
    tries: collections.Counter[str] = field(default_factory=collections.Counter)
    in_flight: int = 0
    max_in_flight: int = 0


class ScriptedServer(ThreadedServer):
    """The scripted server; see the module docstring.

    ``responder`` maps a request body to the answer text; ``latency_s`` delays every answer;
    ``models`` are the served model names (a request for another gets 404, as from vLLM);
    ``api_key``, when set, is required as ``Authorization: Bearer KEY`` and a wrong key gets a
    401 whose message repeats the key it was given (as some providers do), so tests can check a
    client never passes that on; ``fault_for`` is called on each chat request once the script is
    spent; ``record=False`` keeps no request records (for long benchmark runs).
    """

    thread_name = "scripted-openai-server"

    def __init__(
        self,
        *,
        responder: Callable[[dict[str, Any]], str] = default_responder,
        latency_s: float = 0.0,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        api_key: str | None = None,
        fault_for: FaultRule | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if latency_s < 0:
            msg = f"latency_s must be 0 or more, got {latency_s}"
            raise ValueError(msg)
        if not models:
            msg = "models must name at least one model"
            raise ValueError(msg)
        self.responder = responder
        self.latency_s = latency_s
        self.models = models
        self.api_key = api_key
        self.fault_for = fault_for
        self.record = record
        self.host = host
        self._port = port
        self._state = _State()
        self._runner: web.AppRunner | None = None

    # -- scripting and inspection (any thread) -------------------------------------------------

    def script(self, *faults: Fault | FaultKind | None) -> None:
        """Queue what the next chat requests get, in arrival order: a fault, or None for a
        normal answer."""
        queued = [Fault(f) if isinstance(f, str) else f for f in faults]
        with self._state.lock:
            self._state.script.extend(queued)

    @property
    def received(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._state.lock:
            return list(self._state.received)

    @property
    def chat_requests(self) -> list[ReceivedRequest]:
        """The chat-completion requests received so far."""
        return [r for r in self.received if r.path.endswith("/chat/completions")]

    @property
    def max_in_flight(self) -> int:
        """The most chat requests the server was handling at one time."""
        with self._state.lock:
            return self._state.max_in_flight

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The base URL clients use (``http://HOST:PORT/v1``)."""
        return f"http://{self.host}:{self._port}/v1"

    # -- running ---------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def start_async(self) -> None:
        """Listen on ``host:port`` (a free port when 0) in the running loop."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        # handler_cancellation: a handler whose client went away (e.g. timed out on a hang)
        # stops instead of living on until the server shuts down.
        # A short shutdown timeout: stopping must not wait for a scripted hang to end.
        self._runner = web.AppRunner(
            self._app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.1,
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers --------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        self._record(self._receive(request, None, None))
        denied = self._check_key(request)
        if denied is not None:
            return denied
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "cotforge"}
            for name in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        state = self._state
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            received = self._receive(request, raw, body if isinstance(body, dict) else None)
            refused = self._check_key(request) or self._check_body(body)
            if refused is not None:
                self._record(received)
                return refused
            fault = self._fault(received)
            self._record(replace(received, fault=fault.kind) if fault is not None else received)
            if fault is not None and fault.kind == "hang":
                await asyncio.sleep(fault.hang_s)
            elif self.latency_s:
                await asyncio.sleep(self.latency_s)
            return self._answer(request, body, fault)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _receive(
        self, request: web.Request, raw: bytes | None, body: dict[str, Any] | None
    ) -> ReceivedRequest:
        request_id = request.headers.get("X-Request-Id")
        # Hashing a 300 kB body costs; only a recording server (or one without ids) needs it.
        needed = raw is not None and (self.record or request_id is None)
        digest = hashlib.sha256(raw).hexdigest() if needed else None
        # Tries are counted per request id; without one, per body (identical bodies are then
        # indistinguishable, which is why clients should send an id).
        key = request_id or digest
        with self._state.lock:
            if key is not None:
                self._state.tries[key] += 1
            try_number = self._state.tries[key] if key is not None else 1
        return ReceivedRequest(
            method=request.method,
            path=request.path,
            request_id=request_id,
            authorization=request.headers.get("Authorization"),
            body_digest=digest,
            body=body,
            try_number=try_number,
            arrived_s=time.monotonic(),
        )

    def _record(self, received: ReceivedRequest) -> None:
        if self.record:
            with self._state.lock:
                self._state.received.append(received)

    def _fault(self, received: ReceivedRequest) -> Fault | None:
        with self._state.lock:
            if self._state.script:
                return self._state.script.popleft()
        if self.fault_for is None:
            return None
        ruled = self.fault_for(received)
        return Fault(ruled) if isinstance(ruled, str) else ruled

    def _check_body(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "the body must be a JSON object with a 'messages' list")
        if body.get("model") not in self.models:
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        return None

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        given = request.headers.get("Authorization", "")
        if given == f"Bearer {self.api_key}":
            return None
        shown = given.removeprefix("Bearer ") or "(none)"
        return _error(401, f"Incorrect API key provided: {shown}.", kind="invalid_request_error")

    def _answer(
        self, request: web.Request, body: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        if kind == "rate_limit":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return _error(
                429, "Rate limit reached, retry later", kind="rate_limit_exceeded", headers=headers
            )
        if kind == "server_error":
            return _error(fault.status or 500, "The server had an error processing the request")
        if kind == "bad_request":
            return _error(fault.status or 400, "Invalid request: 'max_tokens' is too large")
        if kind == "drop":
            # Close the socket with no answer: the client sees the server disconnect.
            assert request.transport is not None
            request.transport.abort()
            raise web.HTTPInternalServerError  # never sent: the connection is gone
        text = self.responder(body)
        if kind == "malformed_json":
            completion = _completion(body, [text])
            cut = json.dumps(completion).encode()
            return web.Response(body=cut[: len(cut) // 2], content_type="application/json")
        if kind == "empty":
            return web.json_response(_completion(body, [""]))
        if kind == "refusal":
            return web.json_response(_completion(body, [None], refusal=REFUSAL))
        if kind == "three_choices":
            return web.json_response(_completion(body, [text, f"{text}\n", f"{text}\n\n"]))
        return web.json_response(_completion(body, [text]))


def _error(
    status: int, message: str, *, kind: str = "server_error", headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the OpenAI shape (``{"error": {"message": ...}}``)."""
    payload = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(payload, status=status, headers=headers)


def _completion(
    body: dict[str, Any], texts: list[str | None], *, refusal: str | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice per text, and plausible token usage."""
    prompt_chars, images = 0, 0
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            prompt_chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    prompt_chars += len(str(part.get("text", "")))
                elif isinstance(part, dict) and part.get("type") == "image_url":
                    images += 1
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": text, "refusal": refusal},
            "logprobs": None,
            "finish_reason": "stop",
        }
        for index, text in enumerate(texts)
    ]
    completion_tokens = sum(len(text or refusal or "") // 4 + 1 for text in texts)
    prompt_tokens = prompt_chars // 4 + 256 * images + 1
    return {
        "id": f"chatcmpl-{time.monotonic_ns():x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; prints ``listening on URL`` once ready (port 0 picks one)."""
    parser = argparse.ArgumentParser(
        prog="python -m cotforge.testing.openai_server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument(
        "--model", action="append", help=f"served model name (repeatable; default {DEFAULT_MODEL})"
    )
    args = parser.parse_args(argv)
    server = ScriptedServer(
        latency_s=args.latency,
        models=tuple(args.model or (DEFAULT_MODEL,)),
        record=False,
        host=args.host,
        port=args.port,
    )

    async def serve() -> None:
        await server.start_async()
        print(f"listening on {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop_async()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def start_process(
    *, latency_s: float = 0.0, model: str = DEFAULT_MODEL
) -> tuple[subprocess.Popen[str], str]:
    """Run :func:`main` in a child process, as a benchmark does so that the server does not
    share its client's GIL; returns the process and the URL it listens on (port 0 picks one).
    The caller terminates the process."""
    command = [sys.executable, "-m", "cotforge.testing.openai_server", "--port", "0"]
    command += ["--latency", str(latency_s), "--model", model]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if not line.startswith("listening on "):
        server.kill()
        msg = f"the scripted server did not start (said {line!r})"
        raise RuntimeError(msg)
    return server, line.removeprefix("listening on ")


if __name__ == "__main__":
    main()
