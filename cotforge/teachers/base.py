"""The one interface every teacher implements, and the typed records that cross it.

Generation, the ``judge`` check and anything else that asks a teacher talks to this seam only, so
a vLLM server, a paid API and an in-process transformers model are interchangeable. A teacher
never raises for one failed request: the failure comes back as a response with ``error`` set, so
a run records it and goes on (resampling is the caller's decision, retrying transient faults is
the teacher's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image a request shows the teacher, by content digest, with a way to load its pixels.

    ``load`` returns the image as the dataset means it (e.g. FGVC-Aircraft without its banner),
    so a teacher never needs to know the dataset. ``digest`` identifies the content: teachers
    cache their prepared form (resized, encoded) under it, so an image used by many requests is
    prepared once per run, and request ids hash it rather than a path that differs per machine.
    """

    digest: str
    load: Callable[[], Image.Image]


@dataclass(frozen=True, slots=True)
class TeacherRequest:
    """One chat completion: an optional system prompt, then one user turn of images and text.

    ``request_id`` is chosen by the caller (a hash of model, rendered prompt, image digests,
    sampling parameters and attempt) and comes back on the response unchanged.
    """

    request_id: str
    prompt: str
    images: tuple[ImageInput, ...] = ()
    system: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None

    def params(self) -> dict[str, float | int | None]:
        """The sampling parameters, as stored with the request and hashed into its id."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class TeacherResponse:
    """What became of one request: its text, or why there is none, and what it cost.

    ``retry_log`` has one entry per failed try that was retried (e.g. ``"HTTP 429, Retry-After
    2s"``, ``"timeout after 60s"``), so retries stay visible in the store; ``error`` is set only
    when the request failed for good.
    """

    request_id: str
    text: str | None
    error: str | None
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    retry_log: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the teacher answered (an empty or refusing answer is still an answer)."""
        return self.error is None


@runtime_checkable
class Teacher(Protocol):
    """An MLLM that completes :class:`TeacherRequest` s concurrently.

    ``name`` identifies the model for request ids and the store (``"openai:MODEL"``,
    ``"local:PATH_OR_ID"``): the same model behind another URL is the same teacher, so spreading
    load over servers never invalidates finished requests.
    """

    name: str

    async def check(self) -> None:
        """Raise :class:`cotforge.errors.TeacherUnavailableError` when no request could succeed
        (server down, model missing), with what to start or set; called once before a run."""
        ...

    def complete(self, requests: Iterable[TeacherRequest]) -> AsyncIterator[TeacherResponse]:
        """Send ``requests`` (consumed lazily, so callers may stream millions) and yield one
        response for each, in completion order, as soon as it is done."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...
