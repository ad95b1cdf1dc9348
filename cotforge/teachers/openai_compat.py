"""A teacher behind any OpenAI-compatible ``/v1/chat/completions``: vLLM, SGLang, OpenAI,
``transformers serve``.

Generation sends thousands of image requests, so the client's own CPU decides throughput on a
small machine: the ``openai`` SDK spends about 3.5 ms of CPU per request (it re-walks every
message, then its HTTP layer), which caps a 2-core box well below what a 200 ms server allows.
This client speaks the same wire protocol through aiohttp directly and does each piece of work
once: an image is resized and encoded once per run (:mod:`cotforge.teachers.images`), a request
body is built once from pre-encoded pieces and resent unchanged on every try, and the response
is parsed once.

Around that: bounded concurrency; load spread over several servers (fewest requests in flight,
skipping one that just refused connections); retries with exponential backoff and full jitter on
429, 408, 5xx, timeouts, connection errors and malformed answers, honouring ``Retry-After``;
other 4xx fail at once with the server's message; optional requests- and tokens-per-minute
limits. Every retried failure is written to :attr:`TeacherResponse.retry_log`; a request that
fails for good comes back with ``error`` set, never as an exception.

The API key is read from the environment (``OPENAI_API_KEY`` by default; local servers need
none), sent only in the ``Authorization`` header, and scrubbed from every message this module
writes, including server errors that quote it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr, model_validator
from yarl import URL

from cotforge.config import Options
from cotforge.errors import ConfigError, TeacherUnavailableError
from cotforge.teachers.base import TeacherRequest, TeacherResponse
from cotforge.teachers.images import ImagePreparer, PreparedImage
from cotforge.teachers.pacing import TokenBucket, backoff_seconds, retry_after_seconds

RECOMMENDED_SERVER = "vllm serve Qwen/Qwen2.5-VL-32B-Instruct --port 8000"
"""The production set-up the docs recommend: the Fine-R1 paper's teacher, served by vLLM."""

_RETRYABLE_STATUS = frozenset({408, 429})
_IMAGE_TOKEN_PIXELS = 28 * 28
"""Pixels per image token in Qwen2.5-VL (14-px patches merged 2x2), for token estimates."""
_MAX_SERVER_MESSAGE = 300


class OpenAICompatOptions(Options):
    """How :class:`OpenAICompatTeacher` talks to its servers."""

    api_key_env: str = Field(
        "OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the API key (unset is fine for local servers)",
    )
    concurrency: int = Field(64, ge=1, le=4096, description="requests in flight at most")
    timeout_s: float = Field(300.0, gt=0, description="limit for one try of one request")
    connect_timeout_s: float = Field(10.0, gt=0, description="limit for opening a connection")
    max_retries: int = Field(6, ge=0, le=100, description="tries after the first, at most")
    backoff_base_s: float = Field(1.0, gt=0, description="first backoff window")
    backoff_max_s: float = Field(60.0, gt=0, description="largest backoff window")
    retry_after_max_s: float = Field(
        120.0, ge=0, description="longest Retry-After honoured; longer asks wait this long"
    )
    requests_per_minute: float | None = Field(None, gt=0, description="request rate limit")
    tokens_per_minute: float | None = Field(
        None, gt=0, description="token rate limit (prompt + completion, estimated then corrected)"
    )
    max_image_side: int = Field(1024, ge=28, le=16384, description="longer image side, at most")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of sent images")
    image_cache_mib: float = Field(512.0, ge=0, description="memory for prepared images")
    image_threads: int = Field(2, ge=1, le=64, description="threads preparing images")

    @model_validator(mode="after")
    def _backoff_window(self) -> OpenAICompatOptions:
        if self.backoff_max_s < self.backoff_base_s:
            msg = (
                f"backoff_max_s ({self.backoff_max_s}) must be at least backoff_base_s "
                f"({self.backoff_base_s})"
            )
            raise ValueError(msg)
        return self


@dataclass
class _Endpoint:
    """One server: its URLs, how busy it is, and whether it recently refused connections."""

    base: str
    chat: URL
    models: URL
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0

    def refused(self) -> None:
        """A connection could not be opened: avoid this server for a while (doubling, <= 30 s)."""
        self.down_until = time.monotonic() + min(30.0, 0.5 * 2.0 ** min(self.failures, 10))
        self.failures += 1

    def answered(self) -> None:
        self.failures = 0
        self.down_until = 0.0


@dataclass(frozen=True, slots=True)
class _Failure:
    """A try that did not produce an answer: what happened and whether to try again."""

    message: str
    retryable: bool
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    """A try that produced an answer."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass
class _Live:
    """What belongs to one event loop: the HTTP session, the concurrency bound, rate limits."""

    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    slots: asyncio.Semaphore
    requests: TokenBucket | None
    tokens: TokenBucket | None


class OpenAICompatTeacher:
    """The :class:`~cotforge.teachers.base.Teacher` for OpenAI-compatible servers.

    ``model`` is the served model name; ``urls`` one or more base URLs (``http://host:8000`` or
    ``http://host:8000/v1``; a URL with no path gets ``/v1``). Requests are spread over the
    URLs; the teacher's :attr:`name` (``openai:MODEL``) does not depend on them, so moving a run
    to other servers keeps its finished requests. Use from one event loop and ``aclose()`` it
    (or ``async with``) when done.
    """

    def __init__(
        self,
        model: str,
        urls: str | Sequence[str],
        *,
        options: OpenAICompatOptions | None = None,
    ) -> None:
        if not model or model != model.strip():
            msg = f"model name {model!r} is empty or has surrounding spaces; give the served name"
            raise ConfigError(msg)
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            msg = f"no server URL for openai:{model}; give at least one, e.g. http://localhost:8000"
            raise ConfigError(msg)
        bases = list(dict.fromkeys(base_url(url) for url in listed))
        self.model = model
        self.name = f"openai:{model}"
        self.urls = tuple(bases)
        self.options = options or OpenAICompatOptions()
        key = os.environ.get(self.options.api_key_env, "")
        self._api_key = SecretStr(key) if key else None
        self._endpoints = [
            _Endpoint(base, URL(f"{base}/chat/completions"), URL(f"{base}/models"))
            for base in bases
        ]
        self._turn = itertools.count()
        self._images = ImagePreparer(
            max_side=self.options.max_image_side,
            quality=self.options.jpeg_quality,
            cache_bytes=int(self.options.image_cache_mib * 1024 * 1024),
            threads=self.options.image_threads,
        )
        self._timeout = aiohttp.ClientTimeout(
            total=self.options.timeout_s, sock_connect=self.options.connect_timeout_s
        )
        self._params = _params_prefix(model)
        self._live: _Live | None = None

    def __repr__(self) -> str:
        return f"OpenAICompatTeacher(model={self.model!r}, urls={list(self.urls)!r})"

    @property
    def image_preparations(self) -> int:
        """Images resized and encoded so far (once per distinct image while cached)."""
        return self._images.preparations

    # -- lifecycle -------------------------------------------------------------------------------

    def _open(self) -> _Live:
        loop = asyncio.get_running_loop()
        live = self._live
        if live is not None and live.loop is loop:
            return live
        if live is not None and not live.loop.is_closed():
            msg = f"{self!r} is in use in another event loop; aclose() it there first"
            raise RuntimeError(msg)
        # A first use, or the loop of an earlier asyncio.run() has ended (its connections with
        # it): start afresh in this loop.
        options = self.options
        self._live = _Live(
            loop=loop,
            session=self._new_session(),
            slots=asyncio.Semaphore(options.concurrency),
            requests=TokenBucket(options.requests_per_minute)
            if options.requests_per_minute
            else None,
            tokens=TokenBucket(options.tokens_per_minute) if options.tokens_per_minute else None,
        )
        return self._live

    def _new_session(self) -> aiohttp.ClientSession:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        # No connector limit: the semaphore bounds requests in flight.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        return aiohttp.ClientSession(connector=connector, headers=headers)

    async def aclose(self) -> None:
        """Close connections and image threads; the teacher may be used again afterwards."""
        live, self._live = self._live, None
        if live is not None:
            await live.session.close()
        self._images.close()

    async def __aenter__(self) -> OpenAICompatTeacher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- check -----------------------------------------------------------------------------------

    async def check(self) -> None:
        """Ask every server for ``/v1/models``; raise :class:`TeacherUnavailableError` naming
        what to start or set when one does not answer, refuses the key, or lacks the model."""
        # A session of its own: a CLI may check in one asyncio.run() and generate in another.
        async with self._new_session() as session:
            await asyncio.gather(*(self._check_one(session, e) for e in self._endpoints))

    async def _check_one(self, session: aiohttp.ClientSession, endpoint: _Endpoint) -> None:
        # Listing models is instant on a live server; a hung one must not stall the start.
        timeout = aiohttp.ClientTimeout(total=self.options.connect_timeout_s * 3)
        try:
            async with session.get(endpoint.models, timeout=timeout) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise TeacherUnavailableError(self._unreachable(endpoint.base, err)) from None
        if status in (401, 403):
            if self._api_key is None:
                todo = f"set {self.options.api_key_env} to your API key"
            else:
                todo = f"check the API key in {self.options.api_key_env}"
            msg = f"{endpoint.base} refused access (HTTP {status}: {self._message(raw)}); {todo}"
            raise TeacherUnavailableError(msg)
        served = _served_models(raw) if status == 200 else None
        if served is None:
            msg = (
                f"{endpoint.base}/models answered HTTP {status} ({self._message(raw)}), not an "
                "OpenAI-compatible model list; check the URL (it should end in /v1)"
            )
            raise TeacherUnavailableError(msg)
        if self.model not in served:
            shown = ", ".join(served[:10]) + (", ..." if len(served) > 10 else "")
            suggestion = f"--teacher openai:{served[0]}@{endpoint.base}" if served else "another"
            msg = (
                f"{endpoint.base} does not serve {self.model!r} (it serves: {shown or 'nothing'}); "
                f"use {suggestion}, or start `vllm serve {self.model}`"
            )
            raise TeacherUnavailableError(msg)

    def _unreachable(self, base: str, err: BaseException) -> str:
        reason = self._scrub(_describe(err, self.options.connect_timeout_s * 3))
        parts = urlsplit(base)
        if _is_local(parts.hostname or ""):
            port = parts.port or 8000
            start = f"start one, e.g. `vllm serve {self.model} --port {port}`"
        else:
            start = "check the URL and that the server is up"
        message = (
            f"no OpenAI-compatible server answers at {base} ({reason}); {start}, or point "
            "cotforge at a running one with --teacher openai:MODEL@URL or COTFORGE_TEACHER_URL"
        )
        if RECOMMENDED_SERVER not in message:
            message += f" (recommended: `{RECOMMENDED_SERVER}`)"
        return message

    # -- complete --------------------------------------------------------------------------------

    async def complete(self, requests: Iterable[TeacherRequest]) -> AsyncIterator[TeacherResponse]:
        """Send ``requests`` with at most ``concurrency`` in flight and yield each response as it
        completes. ``requests`` is consumed only as slots free up, so it may be a long lazy
        stream; closing the iterator early (``aclose()``, or ``contextlib.aclosing``) cancels
        what is still in flight."""
        live = self._open()
        pending = iter(requests)
        running: set[asyncio.Task[TeacherResponse]] = set()
        finished: asyncio.Queue[asyncio.Task[TeacherResponse]] = asyncio.Queue()
        limit = self.options.concurrency
        exhausted = False

        def done(task: asyncio.Task[TeacherResponse]) -> None:
            running.discard(task)
            finished.put_nowait(task)

        try:
            while True:
                while not exhausted and len(running) < limit:
                    request = next(pending, None)
                    if request is None:
                        exhausted = True
                        break
                    task = asyncio.create_task(self._complete_one(live, request))
                    running.add(task)
                    task.add_done_callback(done)
                if exhausted and not running and finished.empty():
                    return
                task = await finished.get()
                yield task.result()
        finally:
            for task in running:
                task.cancel()

    async def _complete_one(self, live: _Live, request: TeacherRequest) -> TeacherResponse:
        started = time.monotonic()
        try:
            images = [await self._images.prepare(image) for image in request.images]
        except Exception as err:  # any loader failure (missing file, corrupt image) is data
            reason = self._scrub(_one_line(f"{type(err).__name__}: {err}"))
            error = f"image could not be prepared: {reason}"
            return TeacherResponse(request.request_id, None, error, time.monotonic() - started)
        body = self._body(request, images)
        estimate = _estimate_tokens(request, images)
        headers = {"X-Request-Id": request.request_id}
        retry_log: list[str] = []
        attempt = 0
        while True:
            if live.requests is not None:
                await live.requests.take(1)
            if live.tokens is not None:
                await live.tokens.take(estimate)
            outcome = await self._try(live, body, headers)
            if isinstance(outcome, _Failure):
                if not outcome.retryable or attempt == self.options.max_retries:
                    error = outcome.message
                    if outcome.retryable:
                        error += f"; gave up after {attempt + 1} tries"
                    return TeacherResponse(
                        request.request_id,
                        None,
                        error,
                        time.monotonic() - started,
                        retry_log=tuple(retry_log),
                    )
                wait = backoff_seconds(
                    attempt,
                    base_s=self.options.backoff_base_s,
                    max_s=self.options.backoff_max_s,
                    retry_after_s=outcome.retry_after_s,
                    retry_after_max_s=self.options.retry_after_max_s,
                )
                retry_log.append(f"{outcome.message}; retried after {wait:.2f}s")
                await asyncio.sleep(wait)
                attempt += 1
                continue
            if live.tokens is not None and outcome.prompt_tokens is not None:
                used = outcome.prompt_tokens + (outcome.completion_tokens or 0)
                live.tokens.give_back(estimate - used)
            return TeacherResponse(
                request.request_id,
                outcome.text,
                None,
                time.monotonic() - started,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                finish_reason=outcome.finish_reason,
                retry_log=tuple(retry_log),
            )

    async def _try(self, live: _Live, body: bytes, headers: dict[str, str]) -> _Failure | _Answer:
        """One POST: the answer (text, finish reason, usage) or what went wrong."""
        async with live.slots:
            endpoint = self._pick()
            endpoint.in_flight += 1
            try:
                async with live.session.post(
                    endpoint.chat, data=body, headers=headers, timeout=self._timeout
                ) as response:
                    status = response.status
                    raw = await response.read()
                    response_headers = response.headers
            except aiohttp.ClientConnectorError as err:
                endpoint.refused()
                return _Failure(self._scrub(f"{endpoint.base}: {_describe(err, 0)}"), True)
            except (aiohttp.ClientError, TimeoutError) as err:
                message = _describe(err, self.options.timeout_s)
                return _Failure(self._scrub(f"{endpoint.base}: {message}"), True)
            finally:
                endpoint.in_flight -= 1
        endpoint.answered()
        if status == 200:
            return self._parse(raw, endpoint.base)
        message = f"{endpoint.base}: HTTP {status}: {self._message(raw)}"
        if status in _RETRYABLE_STATUS or status >= 500:
            retry_after = retry_after_seconds(response_headers)
            if retry_after is not None:
                message += f" (Retry-After {retry_after:g}s)"
            return _Failure(message, True, retry_after)
        return _Failure(message, False)

    def _parse(self, raw: bytes, base: str) -> _Failure | _Answer:
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            message = choice["message"]
            # A refusal (OpenAI puts it beside a null content) is still the model's answer.
            text = message.get("content")
            if text is None:
                text = message.get("refusal") or ""
            if not isinstance(text, str):
                msg = f"content is {type(text).__name__}"
                raise TypeError(msg)
            usage = payload.get("usage") or {}
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
        except (ValueError, LookupError, TypeError, AttributeError) as err:
            detail = self._scrub(_one_line(f"{type(err).__name__}: {err}"))
            return _Failure(f"{base}: malformed answer ({detail})", True)
        return _Answer(
            text,
            choice.get("finish_reason"),
            prompt_tokens if isinstance(prompt_tokens, int) else None,
            completion_tokens if isinstance(completion_tokens, int) else None,
        )

    def _pick(self) -> _Endpoint:
        """The server with the fewest requests in flight (ties in turn), skipping servers that
        just refused connections unless all of them did."""
        endpoints = self._endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        now = time.monotonic()
        start = next(self._turn) % len(endpoints)
        rotated = endpoints[start:] + endpoints[:start]
        up = [e for e in rotated if e.down_until <= now]
        if not up:
            return min(rotated, key=lambda e: e.down_until)
        return min(up, key=lambda e: e.in_flight)

    def _body(self, request: TeacherRequest, images: list[PreparedImage]) -> bytes:
        """The JSON body, assembled from pieces: data URLs are spliced in as they are (base64
        needs no JSON escaping), so a 300 kB image is copied, not serialised."""
        parts = [b'{"type":"image_url","image_url":{"url":"' + i.data_url + b'"}}' for i in images]
        parts.append(b'{"type":"text","text":' + _json(request.prompt) + b"}")
        messages = []
        if request.system is not None:
            messages.append(b'{"role":"system","content":' + _json(request.system) + b"}")
        messages.append(b'{"role":"user","content":[' + b",".join(parts) + b"]}")
        sampling: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            sampling["seed"] = request.seed
        return b"".join(
            (
                self._params,
                _json(sampling)[1:-1],
                b',"messages":[',
                b",".join(messages),
                b"]}",
            )
        )

    def _message(self, raw: bytes) -> str:
        """The server's error message from an OpenAI-, FastAPI- or plain-text error body."""
        try:
            payload = json.loads(raw)
        except ValueError:
            text = raw.decode("utf-8", errors="replace")
        else:
            error = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(error, dict) and "message" in error:
                text = str(error["message"])
            elif isinstance(error, str):
                text = error
            elif isinstance(payload, dict) and ("message" in payload or "detail" in payload):
                text = str(payload.get("message") or payload.get("detail"))
            else:
                text = raw.decode("utf-8", errors="replace")
        return self._scrub(_one_line(text) or "no message")

    def _scrub(self, text: str) -> str:
        """``text`` with the API key replaced, whatever quoted it."""
        if self._api_key is None:
            return text
        return text.replace(self._api_key.get_secret_value(), "[API key]")


def base_url(url: str) -> str:
    """``url`` without a trailing slash, with ``/v1`` added when it has no path."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"teacher URL {url!r} is not an http(s) URL; give e.g. http://localhost:8000/v1"
        raise ConfigError(msg)
    base = url.strip().rstrip("/")
    return base if parts.path.strip("/") else f"{base}/v1"


def _is_local(hostname: str) -> bool:
    """Whether ``hostname`` is this machine, where starting a server is the user's fix."""
    if hostname == "localhost":
        return True
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _params_prefix(model: str) -> bytes:
    """The start of every body: ``{"model":"...",`` (the model never changes)."""
    return b'{"model":' + _json(model) + b","


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def _served_models(raw: bytes) -> list[str] | None:
    """The model ids of a ``/v1/models`` answer, or None when it is not one."""
    try:
        data = json.loads(raw)["data"]
        return [str(entry["id"]) for entry in data]
    except (ValueError, LookupError, TypeError):
        return None


def _estimate_tokens(request: TeacherRequest, images: list[PreparedImage]) -> int:
    """Prompt tokens (4 characters a token, Qwen2.5-VL's 28-px image tokens) plus the most
    the answer may take; the real count from the response corrects it."""
    text = len(request.prompt) + len(request.system or "")
    pixels = sum(image.width * image.height for image in images)
    return text // 4 + pixels // _IMAGE_TOKEN_PIXELS + request.max_tokens


def _describe(err: BaseException, timeout_s: float) -> str:
    """A one-line reason for a network failure (never a repr: those can carry headers)."""
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return "could not connect in time"
    if isinstance(err, TimeoutError):
        return f"timeout after {timeout_s:g}s"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect: {err.os_error.strerror or err.os_error}"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "server closed the connection without answering"
    if isinstance(err, aiohttp.ClientPayloadError):
        return "answer cut off mid-body"
    return _one_line(f"{type(err).__name__}: {err}")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SERVER_MESSAGE else text[: _MAX_SERVER_MESSAGE - 3] + "..."
