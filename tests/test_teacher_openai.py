"""The OpenAI-compatible teacher against the scripted server, over real sockets.

Every fault the server can inject is checked for its outcome (retried then answered, or an error
with its reason), and the server's own records are the evidence: how many tries arrived, when,
with which body, and how many were in flight at once.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from email.utils import formatdate

import pytest
from PIL import Image
from pydantic import ValidationError

from cotforge.errors import ConfigError, TeacherUnavailableError
from cotforge.teachers.base import ImageInput, Teacher, TeacherRequest, TeacherResponse
from cotforge.teachers.openai_compat import OpenAICompatOptions, OpenAICompatTeacher
from cotforge.testing.openai_server import (
    DEFAULT_ANSWER,
    DEFAULT_MODEL,
    REFUSAL,
    Fault,
    ReceivedRequest,
    ScriptedServer,
)

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, "connect_timeout_s": 1}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


def _teacher(urls: str | list[str], **options: object) -> OpenAICompatTeacher:
    return OpenAICompatTeacher(DEFAULT_MODEL, urls, options=OpenAICompatOptions(**FAST | options))


def _requests(count: int, **fields: object) -> list[TeacherRequest]:
    return [
        TeacherRequest(f"req-{i}", f"Which aircraft is this? ({i})", **fields) for i in range(count)
    ]


def _run(
    teacher: OpenAICompatTeacher, requests: Iterable[TeacherRequest]
) -> dict[str, TeacherResponse]:
    async def main() -> dict[str, TeacherResponse]:
        try:
            return {r.request_id: r async for r in teacher.complete(requests)}
        finally:
            await teacher.aclose()

    return asyncio.run(main())


def _tries(server: ScriptedServer, request_id: str) -> list[ReceivedRequest]:
    return [r for r in server.chat_requests if r.request_id == request_id]


def _image(digest: str, counter: Counter[str] | None = None, size=(640, 480)) -> ImageInput:
    def load() -> Image.Image:
        if counter is not None:
            counter[digest] += 1
        return Image.radial_gradient("L").resize(size).convert("RGB")

    return ImageInput(digest, load)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the wire format --------------------------------------------------------------------------


def test_body_is_an_openai_chat_request_and_the_answer_is_recorded(server):
    request = TeacherRequest(
        "req-body",
        "Which aircraft is this? Answer in «tags».",
        images=(_image("wide", size=(2048, 1024)), _image("small", size=(200, 100))),
        system="You are an expert.",
        max_tokens=333,
        temperature=0.5,
        top_p=0.9,
        seed=7,
    )
    teacher = _teacher(server.url, max_image_side=512)
    assert isinstance(teacher, Teacher)
    response = _run(teacher, [request])["req-body"]

    (received,) = server.chat_requests
    assert received.request_id == "req-body"
    body = received.body
    assert body["model"] == DEFAULT_MODEL
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
        333,
        0.5,
        0.9,
        7,
    )
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are an expert."}
    assert user["role"] == "user"
    *images, text = user["content"]
    assert text == {"type": "text", "text": "Which aircraft is this? Answer in «tags»."}
    sizes = []
    for part in images:
        assert part["type"] == "image_url"
        url = part["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        sizes.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size)
    assert sizes == [(512, 256), (200, 100)]

    assert response.ok
    assert response.text == DEFAULT_ANSWER
    assert response.finish_reason == "stop"
    assert response.prompt_tokens is not None and response.prompt_tokens > 0
    assert response.completion_tokens == len(DEFAULT_ANSWER) // 4 + 1
    assert response.retry_log == ()
    assert response.latency_s > 0


def test_seed_is_left_out_when_not_set(server):
    _run(_teacher(server.url), _requests(1))
    assert "seed" not in server.chat_requests[0].body


def test_server_answers_parse_as_openai_sdk_types(server):
    """The scripted server is only a fair stand-in if the real SDK accepts its answers."""
    from openai import AsyncOpenAI

    async def main() -> str | None:
        async with AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0) as client:
            completion = await client.chat.completions.create(
                model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}]
            )
            return completion.choices[0].message.content

    assert asyncio.run(main()) == DEFAULT_ANSWER


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "logged"),
    [
        (Fault("rate_limit", retry_after="0"), "HTTP 429"),
        (Fault("server_error"), "HTTP 500"),
        (Fault("server_error", status=503), "HTTP 503"),
        (Fault("server_error", status=408), "HTTP 408"),
        (Fault("hang"), "timeout after 0.3s"),
        (Fault("drop"), "closed the connection"),
        (Fault("malformed_json"), "malformed answer"),
    ],
    ids=lambda value: value.kind if isinstance(value, Fault) else None,
)
def test_transient_faults_are_retried_with_the_same_body(server, fault, logged):
    server.script(fault)
    response = _run(_teacher(server.url, timeout_s=0.3), _requests(1))["req-0"]
    assert response.ok, response.error
    assert response.text == DEFAULT_ANSWER
    assert len(response.retry_log) == 1
    assert logged in response.retry_log[0]
    first, second = _tries(server, "req-0")
    assert (first.fault, second.fault) == (fault.kind, None)
    assert (first.try_number, second.try_number) == (1, 2)
    assert first.body_digest == second.body_digest


@pytest.mark.parametrize(
    ("kind", "text"),
    [("empty", ""), ("refusal", REFUSAL), ("three_choices", DEFAULT_ANSWER)],
)
def test_odd_answers_are_answers_not_retries(server, kind, text):
    server.script(kind)
    response = _run(_teacher(server.url), _requests(1))["req-0"]
    assert response.ok
    assert response.text == text
    assert response.retry_log == ()
    assert len(_tries(server, "req-0")) == 1


def test_retry_after_seconds_is_waited(server):
    server.script(Fault("rate_limit", retry_after="1"))
    response = _run(_teacher(server.url), _requests(1))["req-0"]
    first, second = _tries(server, "req-0")
    assert 1.0 <= second.arrived_s - first.arrived_s < 2.0
    assert "Retry-After 1s" in response.retry_log[0]


def test_retry_after_http_date_is_waited(server):
    server.script(Fault("rate_limit", retry_after=formatdate(time.time() + 2, usegmt=True)))
    _run(_teacher(server.url), _requests(1))
    first, second = _tries(server, "req-0")
    # The date has whole seconds, so "in 2 s" means somewhere in (1, 2].
    assert 1.0 <= second.arrived_s - first.arrived_s < 2.5


def test_a_long_retry_after_is_capped(server):
    server.script(Fault("rate_limit", retry_after="3600"))
    started = time.monotonic()
    response = _run(_teacher(server.url, retry_after_max_s=0.2), _requests(1))["req-0"]
    assert response.ok
    assert time.monotonic() - started < 3
    assert "Retry-After 3600s" in response.retry_log[0]


def test_gives_up_after_max_retries_with_every_try_logged():
    with ScriptedServer(fault_for=lambda received: "server_error") as server:
        response = _run(_teacher(server.url, max_retries=2), _requests(1))["req-0"]
        assert not response.ok
        assert "HTTP 500" in response.error
        assert "gave up after 3 tries" in response.error
        assert len(response.retry_log) == 2
        assert [r.try_number for r in _tries(server, "req-0")] == [1, 2, 3]


def test_a_timeout_with_no_retries_left_is_an_error(server):
    server.script("hang")
    response = _run(_teacher(server.url, timeout_s=0.3, max_retries=0), _requests(1))["req-0"]
    assert response.error == f"{server.url}: timeout after 0.3s; gave up after 1 tries"
    assert 0.3 <= response.latency_s < 1.5


@pytest.mark.parametrize(
    ("model", "fault", "message"),
    [
        (DEFAULT_MODEL, Fault("bad_request"), "HTTP 400: Invalid request: 'max_tokens' is too"),
        (DEFAULT_MODEL, Fault("bad_request", status=422), "HTTP 422: Invalid request"),
        ("other-model", None, "HTTP 404: The model `other-model` does not exist."),
    ],
)
def test_client_errors_fail_at_once_with_the_servers_message(server, model, fault, message):
    if fault is not None:
        server.script(fault)
    teacher = OpenAICompatTeacher(model, server.url, options=OpenAICompatOptions(**FAST))
    response = _run(teacher, _requests(1))["req-0"]
    assert response.error.startswith(f"{server.url}: {message}")
    assert response.retry_log == ()
    assert len(_tries(server, "req-0")) == 1


def test_one_bad_request_does_not_stop_the_others(server):
    server.script(None, "bad_request", None)
    responses = _run(_teacher(server.url, concurrency=1), _requests(3))
    assert [responses[f"req-{i}"].ok for i in range(3)] == [True, False, True]


# -- concurrency, laziness, rate limits, load spreading ----------------------------------------


def test_concurrency_bound_holds_across_calls():
    with ScriptedServer(latency_s=0.05) as server:
        teacher = _teacher(server.url, concurrency=3)

        async def main() -> int:
            async def drain(prefix: str) -> int:
                requests = [TeacherRequest(f"{prefix}-{i}", "q") for i in range(9)]
                return len([r async for r in teacher.complete(requests)])

            try:
                return sum(await asyncio.gather(drain("a"), drain("b")))
            finally:
                await teacher.aclose()

        assert asyncio.run(main()) == 18
        assert server.max_in_flight == 3


def test_requests_are_pulled_as_slots_free_and_an_early_stop_sends_no_more():
    with ScriptedServer(latency_s=0.02) as server:
        pulled = 0

        def stream() -> Iterator[TeacherRequest]:
            nonlocal pulled
            for i in range(1000):
                pulled += 1
                yield TeacherRequest(f"req-{i}", "q")

        teacher = _teacher(server.url, concurrency=4)

        async def main() -> int:
            responses: AsyncIterator[TeacherResponse] = teacher.complete(stream())
            seen = 0
            async for _ in responses:
                seen += 1
                if seen == 10:
                    break
            await responses.aclose()  # type: ignore[attr-defined]
            await teacher.aclose()
            return pulled

        pulled_at_stop = asyncio.run(main())
        # At most 4 in flight plus 4 finished but not yet taken, beyond the 10 taken.
        assert pulled_at_stop <= 10 + 2 * 4
        time.sleep(0.1)
        assert len(server.chat_requests) <= pulled_at_stop


def test_requests_per_minute_paces_the_sends(server):
    # 1200/min is 20/s with a burst of 20: the 30th request cannot leave before 0.5 s.
    started = time.monotonic()
    _run(_teacher(server.url, requests_per_minute=1200), _requests(30))
    arrivals = sorted(r.arrived_s - started for r in server.chat_requests)
    assert len(arrivals) == 30
    assert arrivals[-1] >= 0.49
    assert sum(1 for t in arrivals if t < 0.2) <= 24


def test_tokens_per_minute_charges_the_reported_tokens(server):
    # Each request is estimated at ~100 tokens but reported (by the server) at ~400. At
    # 60,000/min (1,000/s, burst 1,000) the estimates alone would let 6 requests go at once;
    # charging what the server reports holds the sixth back until about 1.1 s.
    requests = _requests(6, max_tokens=90)
    started = time.monotonic()
    responses = _run(_teacher(server.url, tokens_per_minute=60_000, concurrency=1), requests)
    assert time.monotonic() - started >= 1.0
    used = sum(r.prompt_tokens + r.completion_tokens for r in responses.values())
    assert used > 2300
    unlimited = time.monotonic()
    _run(_teacher(server.url, concurrency=1), requests)
    assert time.monotonic() - unlimited < 1.0


def test_load_is_spread_over_two_servers():
    with ScriptedServer(latency_s=0.05) as one, ScriptedServer(latency_s=0.05) as two:
        teacher = _teacher([one.url, two.url], concurrency=8)
        responses = _run(teacher, _requests(40))
        assert all(r.ok for r in responses.values())
        counts = (len(one.chat_requests), len(two.chat_requests))
        assert sum(counts) == 40
        assert min(counts) >= 15, counts


def test_a_slower_server_gets_fewer_requests():
    # Fewest in flight, not turns: the fast server frees its slots ten times as often.
    with ScriptedServer(latency_s=0.1) as slow, ScriptedServer(latency_s=0.01) as fast:
        _run(_teacher([slow.url, fast.url], concurrency=4), _requests(40))
        assert len(fast.chat_requests) >= 28, (len(slow.chat_requests), len(fast.chat_requests))


def test_a_server_that_refuses_connections_is_avoided(server):
    dead = f"http://127.0.0.1:{_closed_port()}/v1"
    responses = _run(_teacher([dead, server.url], concurrency=4), _requests(20))
    assert all(r.ok for r in responses.values())
    refused = [entry for r in responses.values() for entry in r.retry_log]
    assert refused, "the dead server should have been tried"
    assert all(entry.startswith(f"{dead}: cannot connect") for entry in refused)
    assert len(refused) <= 6
    assert len(server.chat_requests) == 20


# -- images -----------------------------------------------------------------------------------


def test_each_image_is_prepared_once_and_no_request_is_sent_twice(server):
    loads: Counter[str] = Counter()
    images = [_image(f"image-{i}", loads) for i in range(3)]
    requests = [TeacherRequest(f"req-{i}", "q", images=(images[i % 3],)) for i in range(60)]
    teacher = _teacher(server.url, concurrency=16)
    responses = _run(teacher, requests)
    assert all(r.ok for r in responses.values())
    assert loads == {"image-0": 1, "image-1": 1, "image-2": 1}
    assert teacher.image_preparations == 3
    assert Counter(r.request_id for r in server.chat_requests) == {f"req-{i}": 1 for i in range(60)}


def test_an_image_that_cannot_be_loaded_fails_its_request_only(server):
    def missing() -> Image.Image:
        raise FileNotFoundError("/data/gone.jpg")

    requests = [
        TeacherRequest("broken", "q", images=(ImageInput("gone", missing),)),
        TeacherRequest("fine", "q", images=(_image("here"),)),
    ]
    responses = _run(_teacher(server.url), requests)
    assert (
        responses["broken"].error
        == "image could not be prepared: FileNotFoundError: /data/gone.jpg"
    )
    assert responses["fine"].ok
    assert [r.request_id for r in server.chat_requests] == ["fine"]


# -- check() ----------------------------------------------------------------------------------


def _check(teacher: OpenAICompatTeacher) -> None:
    async def main() -> None:
        try:
            await teacher.check()
        finally:
            await teacher.aclose()

    asyncio.run(main())


def test_check_passes_when_every_server_serves_the_model(server):
    with ScriptedServer() as other:
        _check(_teacher([server.url, other.url]))
        assert [r.path for r in other.received] == ["/v1/models"]


@pytest.mark.filterwarnings("ignore:Unclosed:ResourceWarning")  # the abandoned session's
def test_one_teacher_across_event_loops(server):
    teacher = _teacher(server.url)

    async def drain() -> int:
        return len([r async for r in teacher.complete(_requests(2))])

    asyncio.run(teacher.check())  # a CLI may check in one asyncio.run() and generate in another
    assert asyncio.run(drain()) == 2  # not aclose()d before its loop ended ...
    assert asyncio.run(drain()) == 2  # ... so this run starts afresh

    async def in_use_elsewhere() -> None:
        await drain()
        with pytest.raises(RuntimeError, match="in use in another event loop"):
            await asyncio.to_thread(asyncio.run, drain())
        await teacher.aclose()

    asyncio.run(in_use_elsewhere())
    gc.collect()  # the abandoned session's warnings, here rather than in a later test


def test_check_says_what_to_start_when_nothing_listens():
    port = _closed_port()
    with pytest.raises(TeacherUnavailableError) as caught:
        _check(_teacher(f"http://localhost:{port}"))
    message = str(caught.value)
    assert f"no OpenAI-compatible server answers at http://localhost:{port}/v1" in message
    assert f"vllm serve {DEFAULT_MODEL} --port {port}" in message
    assert "--teacher openai:MODEL@URL" in message
    assert "COTFORGE_TEACHER_URL" in message
    assert "recommended: `vllm serve Qwen/Qwen2.5-VL-32B-Instruct --port 8000`" in message
    assert "\n" not in message


def test_an_unreachable_remote_server_is_not_told_to_start_vllm():
    teacher = _teacher("https://api.example.com/v1")
    message = teacher._unreachable("https://api.example.com/v1", TimeoutError())
    assert message.startswith("no OpenAI-compatible server answers at https://api.example.com/v1")
    assert "(timeout after 3s); check the URL and that the server is up" in message
    assert f"vllm serve {DEFAULT_MODEL}" not in message


def test_check_names_the_served_models_when_the_model_is_missing():
    with ScriptedServer(models=("Qwen/Qwen2.5-VL-7B-Instruct", "other")) as server:
        with pytest.raises(TeacherUnavailableError) as caught:
            _check(_teacher(server.url))
        message = str(caught.value)
        assert f"does not serve '{DEFAULT_MODEL}'" in message
        assert "it serves: Qwen/Qwen2.5-VL-7B-Instruct, other" in message
        assert f"--teacher openai:Qwen/Qwen2.5-VL-7B-Instruct@{server.url}" in message


def test_check_refuses_a_url_that_is_no_openai_server(server):
    with pytest.raises(TeacherUnavailableError, match="not an OpenAI-compatible model list"):
        _check(_teacher(f"http://127.0.0.1:{server.port}/elsewhere"))


# -- the API key ------------------------------------------------------------------------------

SECRET = "sk-test-4f1c9e2d8b7a6c5e"


def test_the_key_is_sent_but_never_written_anywhere(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("COTFORGE_TEST_KEY", SECRET)
    with ScriptedServer(api_key=SECRET) as good, ScriptedServer(api_key="sk-other") as wrong:
        teacher = _teacher(good.url, api_key_env="COTFORGE_TEST_KEY")
        assert _run(teacher, _requests(1))["req-0"].ok
        assert good.chat_requests[0].authorization == f"Bearer {SECRET}"
        texts = [repr(teacher), str(vars(teacher)), repr(teacher.options)]

        # The wrong server quotes the key it was given in its 401, as some providers do.
        teacher = _teacher(wrong.url, api_key_env="COTFORGE_TEST_KEY")
        response = _run(teacher, _requests(1))["req-0"]
        assert not response.ok
        assert "HTTP 401: Incorrect API key provided: [API key]." in response.error
        texts += [response.error, *response.retry_log, repr(response)]
        with pytest.raises(TeacherUnavailableError) as caught:
            _check(_teacher(wrong.url, api_key_env="COTFORGE_TEST_KEY"))
        assert "check the API key in COTFORGE_TEST_KEY" in str(caught.value)
        texts.append(str(caught.value))
    texts.append(caplog.text)
    assert not [text for text in texts if SECRET in text]


def test_check_says_which_variable_to_set_when_a_key_is_missing(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer(api_key="sk-needed") as server:
        with pytest.raises(TeacherUnavailableError, match="set OPENAI_API_KEY to your API key"):
            _check(_teacher(server.url))
        assert server.received[0].authorization is None


# -- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://localhost:8000", "http://localhost:8000/v1"),
        ("http://localhost:8000/", "http://localhost:8000/v1"),
        ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
        ("https://example.com/api/openai/v1", "https://example.com/api/openai/v1"),
    ],
)
def test_urls_are_normalised(given, base):
    teacher = OpenAICompatTeacher("m", [given, base])
    assert teacher.urls == (base,)
    assert teacher.name == "openai:m"


@pytest.mark.parametrize(
    ("model", "urls", "match"),
    [
        ("m", "localhost:8000", "not an http"),
        ("m", "ftp://host/v1", "not an http"),
        ("m", [], "no server URL"),
        ("", "http://localhost:8000", "model name"),
        (" m", "http://localhost:8000", "model name"),
    ],
)
def test_bad_model_or_urls_are_config_errors(model, urls, match):
    with pytest.raises(ConfigError, match=match):
        OpenAICompatTeacher(model, urls)


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"timeout_s": 0},
        {"max_retries": -1},
        {"jpeg_quality": 0},
        {"requests_per_minute": 0},
        {"backoff_base_s": 5, "backoff_max_s": 1},
        {"api_key_env": "not a name"},
        {"concurency": 4},
    ],
)
def test_bad_options_are_refused(options):
    with pytest.raises(ValidationError):
        OpenAICompatOptions(**options)
