"""The scripted OpenAI-compatible server: its script, its rules, its records, its command line.

The teacher tests lean on this server as evidence, so its own bookkeeping is checked here with a
plain HTTP client, not with the teacher under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from cotforge.testing.openai_server import DEFAULT_ANSWER, Fault, ScriptedServer


def _post(url: str, body: dict, *, request_id: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    request = urllib.request.Request(
        f"{url}/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


BODY = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def test_script_comes_first_then_the_rule_then_normal_answers():
    def rule(received):
        return "server_error" if received.try_number == 1 else None

    with ScriptedServer(fault_for=rule) as server:
        server.script(Fault("rate_limit", retry_after="3"), None)
        statuses = [_post(server.url, BODY, request_id=rid)[0] for rid in ("a", "b", "c", "c")]
        assert statuses == [429, 200, 500, 200]
        records = server.chat_requests
        assert [(r.request_id, r.try_number, r.fault) for r in records] == [
            ("a", 1, "rate_limit"),
            ("b", 1, None),
            ("c", 1, "server_error"),
            ("c", 2, None),
        ]
        assert len({r.body_digest for r in records}) == 1
        assert records[0].body == BODY


def test_answers_come_from_the_responder_with_usage():
    with ScriptedServer(responder=lambda body: body["messages"][0]["content"].upper()) as server:
        status, answer = _post(server.url, BODY)
    assert status == 200
    assert answer["choices"][0]["message"]["content"] == "HI"
    assert answer["usage"]["completion_tokens"] == 1
    assert answer["object"] == "chat.completion"


def test_unknown_fault_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
        Fault("explode")  # type: ignore[arg-type]


def test_command_line_server_serves_until_stopped():
    process = subprocess.Popen(
        [sys.executable, "-m", "cotforge.testing.openai_server", "--port", "0", "--model", "m1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
            assert [m["id"] for m in json.loads(response.read())["data"]] == ["m1"]
        status, answer = _post(url, {**BODY, "model": "m1"})
        assert (status, answer["choices"][0]["message"]["content"]) == (200, DEFAULT_ANSWER)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_the_default_answer_is_a_well_formed_rationale():
    from cotforge.rationale import parse_tagged

    rationale = parse_tagged(DEFAULT_ANSWER)
    assert rationale.problems == ()
    assert rationale.candidates[0] == "Boeing 737-800"
    assert rationale.prediction.endswith("Boeing 737-800")
