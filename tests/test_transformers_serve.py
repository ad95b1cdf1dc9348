"""The real ``transformers serve`` answers OpenAI-style chat completions with an image for the
tiny model: the server the ``openai_compat`` teacher and the end-to-end test talk to."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.models import ServedModel

pytestmark = pytest.mark.slow


def _data_url() -> str:
    pixels = np.random.default_rng(0).integers(0, 256, (240, 320, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _chat(served: ServedModel, content: list[dict], **extra: object) -> httpx.Response:
    body = {
        "model": served.model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": content},
        ],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }
    return httpx.post(f"{served.base_url}/chat/completions", json=body, timeout=120)


def test_chat_completion_with_an_image_returns_text_and_usage(
    transformers_server: ServedModel,
) -> None:
    question = {"type": "text", "text": "What is the specific type of airplane shown?"}
    with_image = _chat(
        transformers_server, [{"type": "image_url", "image_url": {"url": _data_url()}}, question]
    )
    assert with_image.status_code == 200, with_image.text
    answer = with_image.json()
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert answer["choices"][0]["finish_reason"] in {"stop", "length"}
    usage = answer["usage"]
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    # The image reached the model: the same question without it is shorter by its image tokens.
    text_only = _chat(transformers_server, [question])
    assert text_only.status_code == 200, text_only.text
    assert text_only.json()["usage"]["prompt_tokens"] < usage["prompt_tokens"]


def test_a_pinned_server_refuses_any_other_model_name(transformers_server: ServedModel) -> None:
    """What a teacher pointed at the wrong name sees: a 400 that names the served model."""
    response = _chat(
        transformers_server, [{"type": "text", "text": "hi"}], model="Qwen/Qwen2.5-VL-7B-Instruct"
    )
    assert response.status_code == 400
    assert transformers_server.model in response.text
