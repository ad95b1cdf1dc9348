"""The in-process ``local`` teacher on the tiny random Qwen2.5-VL.

The model's text is gibberish, so these tests check the contract around it: one response per
request with its id, token counts, errors as responses (bad image, failed batch), lazy batched
consumption, seeded reproducibility, and an event loop that stays free while the model runs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotforge.errors import MissingExtraError, TeacherUnavailableError
from cotforge.teachers.base import ImageInput, Teacher, TeacherRequest, TeacherResponse
from cotforge.teachers.local import LocalTeacher


def _image(seed: int, size: tuple[int, int] = (320, 240)) -> ImageInput:
    def load() -> Image.Image:
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3))
        return Image.fromarray(pixels.astype(np.uint8))

    return ImageInput(digest=f"sha256:{seed}", load=load)


def _broken_image() -> ImageInput:
    def load() -> Image.Image:
        msg = "truncated JPEG"
        raise OSError(msg)

    return ImageInput(digest="sha256:broken", load=load)


def _request(request_id: str, *images: ImageInput, **params: object) -> TeacherRequest:
    options: dict = {"max_tokens": 6, "temperature": 0.0, **params}
    return TeacherRequest(
        request_id, "Which aircraft variant is this?", images, system="Be brief.", **options
    )


def _run(teacher: LocalTeacher, requests: list[TeacherRequest]) -> list[TeacherResponse]:
    async def collect() -> list[TeacherResponse]:
        try:
            return [response async for response in teacher.complete(requests)]
        finally:
            await teacher.aclose()

    return asyncio.run(collect())


# --- construction and loading failures (no model loaded) -------------------------------------


def test_is_a_teacher_named_after_its_model() -> None:
    teacher = LocalTeacher("/models/qwen", batch_size=2)
    assert isinstance(teacher, Teacher)
    assert teacher.name == "local:/models/qwen"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1; got 0"),
        ({"max_image_side": 10}, "max_image_side must be at least 28"),
        ({"dtype": "fp8"}, "dtype must be one of auto, float32, bfloat16, float16; got 'fp8'"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalTeacher("m", **options)


def test_missing_transformers_names_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("torch", "transformers"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"pip install 'cotforge\[local\]'"):
        asyncio.run(LocalTeacher("Qwen/Qwen2.5-VL-7B-Instruct").check())


def test_a_model_not_downloaded_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; whatever imported it first may have
    # done so before the autouse fixture set it, and then this lookup would wait on the network.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    teacher = LocalTeacher("cotforge-tests/not-downloaded")
    with pytest.raises(TeacherUnavailableError) as caught:
        asyncio.run(teacher.check())
    message = str(caught.value)
    assert "huggingface-cli download cotforge-tests/not-downloaded" in message
    assert "--teacher local:/path/to/model" in message


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    missing = tmp_path / "no-such-model"
    with pytest.raises(TeacherUnavailableError, match=f"model folder {missing} does not exist"):
        asyncio.run(LocalTeacher(str(missing)).check())


def test_a_folder_that_is_not_a_model_is_named(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    (tmp_path / "readme.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(TeacherUnavailableError, match="is not a transformers image-text-to-text"):
        asyncio.run(LocalTeacher(str(tmp_path)).check())


# --- generation on the tiny model ---------------------------------------------------------------


@pytest.mark.slow
def test_one_response_per_request_with_ids_tokens_and_image_errors(tiny_qwen: Path) -> None:
    requests = [
        _request("a", _image(1)),
        _request("b"),
        _request("c", _image(2), _image(3, (64, 900))),
        _request("d", _image(4), _broken_image()),
        _request("e", _image(5, (2000, 1500)), max_tokens=3),
    ]
    responses = {
        r.request_id: r for r in _run(LocalTeacher(str(tiny_qwen), batch_size=2), requests)
    }
    assert sorted(responses) == ["a", "b", "c", "d", "e"]

    broken = responses.pop("d")
    assert not broken.ok and broken.text is None
    assert "image could not be loaded" in broken.error and "truncated JPEG" in broken.error

    for response in responses.values():
        assert response.ok, response.error
        assert isinstance(response.text, str)
        assert response.prompt_tokens > 0 and response.latency_s > 0
        assert 1 <= response.completion_tokens <= 6
        assert response.finish_reason in {"stop", "length"}
    assert responses["e"].completion_tokens <= 3
    # Images cost prompt tokens: two images more than one, one more than none.
    assert responses["b"].prompt_tokens < responses["a"].prompt_tokens
    assert responses["a"].prompt_tokens < responses["c"].prompt_tokens


@pytest.mark.slow
def test_greedy_and_seeded_sampling_are_reproducible(tiny_qwen: Path) -> None:
    teacher = LocalTeacher(str(tiny_qwen), batch_size=1)
    greedy = _request("g", _image(1), max_tokens=12)
    seeded = _request("s", _image(1), max_tokens=12, temperature=1.0, top_p=1.0, seed=7)
    other = _request("o", _image(1), max_tokens=12, temperature=1.0, top_p=1.0, seed=8)
    first = _run(teacher, [greedy, seeded, other])
    second = _run(teacher, [greedy, seeded, other])
    assert [r.text for r in first] == [r.text for r in second]
    assert first[1].text != first[2].text  # 512-token vocab, 12 samples: equal only by a fluke


@pytest.mark.slow
def test_requests_are_pulled_one_batch_at_a_time(tiny_qwen: Path) -> None:
    pulled: list[str] = []

    def stream() -> Iterator[TeacherRequest]:
        for n in range(5):
            pulled.append(str(n))
            yield _request(str(n), max_tokens=2)

    async def first_batch() -> tuple[list[str], int]:
        teacher = LocalTeacher(str(tiny_qwen), batch_size=2)
        responses = teacher.complete(stream())
        first = [(await anext(responses)).request_id, (await anext(responses)).request_id]
        seen = len(pulled)
        rest = [r.request_id async for r in responses]
        await teacher.aclose()
        return first + rest, seen

    ids, pulled_for_first_batch = asyncio.run(first_batch())
    assert pulled_for_first_batch == 2
    assert ids == ["0", "1", "2", "3", "4"]


@pytest.mark.slow
def test_a_failed_batch_becomes_error_responses(
    tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = LocalTeacher(str(tiny_qwen), batch_size=2)
    asyncio.run(teacher.check())
    real_generate = teacher._model.generate
    calls = []

    def out_of_memory_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            msg = "CUDA out of memory. Tried to allocate 2.00 GiB"
            raise RuntimeError(msg)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(teacher._model, "generate", out_of_memory_once)
    responses = _run(teacher, [_request(str(n), _image(n), max_tokens=2) for n in range(4)])
    assert [r.request_id for r in responses] == ["0", "1", "2", "3"]
    assert [r.ok for r in responses] == [False, False, True, True]
    assert responses[0].error == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


@pytest.mark.slow
def test_the_event_loop_runs_while_the_model_generates(tiny_qwen: Path) -> None:
    async def ticks_during_generation() -> int:
        teacher = LocalTeacher(str(tiny_qwen), batch_size=4)
        await teacher.check()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        responses = teacher.complete([_request(str(n), _image(n), max_tokens=8) for n in range(4)])
        await anext(responses)
        during = ticks
        ticker.cancel()
        await responses.aclose()
        await teacher.aclose()
        return during

    assert asyncio.run(ticks_during_generation()) >= 3


@pytest.mark.slow
def test_sampling_ignores_a_top_k_default_in_the_checkpoint(tiny_qwen: Path) -> None:
    """A generation_config with top_k=1 would make every seed give the greedy answer."""
    teacher = LocalTeacher(str(tiny_qwen), batch_size=1)
    asyncio.run(teacher.check())
    teacher._model.generation_config.top_k = 1
    sampled = [
        _request(str(seed), _image(1), max_tokens=12, temperature=1.0, top_p=1.0, seed=seed)
        for seed in range(3)
    ]
    texts = {response.text for response in _run(teacher, sampled)}
    assert len(texts) > 1


@pytest.mark.slow
def test_batched_greedy_answers_equal_one_at_a_time(tiny_qwen: Path) -> None:
    """Left padding and the attention mask keep a request's answer independent of its batch
    mates' lengths (right padding would put pad tokens between prompt and answer)."""
    requests = [
        _request("short", max_tokens=8),
        _request("image", _image(1), max_tokens=8),
        _request("two", _image(2), _image(3, (90, 400)), max_tokens=8),
    ]
    batched = {
        r.request_id: r.text for r in _run(LocalTeacher(str(tiny_qwen), batch_size=3), requests)
    }
    alone = {
        r.request_id: r.text for r in _run(LocalTeacher(str(tiny_qwen), batch_size=1), requests)
    }
    assert batched == alone
