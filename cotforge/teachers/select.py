"""Which teacher a run uses: ``--teacher`` specs, the environment, and the default.

One place turns ``openai:MODEL@URL[@URL...]``, ``local:PATH_OR_ID``, ``COTFORGE_TEACHER_URL``
(and ``COTFORGE_TEACHER_MODEL``) into a :class:`~cotforge.teachers.base.Teacher`, so generation
and the judge pick teachers the same way. Backends are imported only when chosen: the local one
needs torch, which a user of a vLLM server may not have installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from cotforge.config import DEFAULT_LOCAL_TEACHER, TeacherOptions
from cotforge.errors import ConfigError, TeacherUnavailableError
from cotforge.teachers.base import Teacher

PRODUCTION_HINT = (
    "start one, e.g. `vllm serve Qwen/Qwen2.5-VL-32B-Instruct --port 8000 --generation-config "
    "vllm` (the Fine-R1 "
    "teacher), then pass --teacher openai:Qwen/Qwen2.5-VL-32B-Instruct@http://localhost:8000 "
    "or set COTFORGE_TEACHER_URL"
)
"""What to do when no server answers; the paper's teacher is the recommended production set-up."""


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed teacher choice. ``model`` is None for "the one model the server serves"."""

    kind: Literal["openai", "local"]
    model: str | None
    urls: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "local":
            return f"local:{self.model}"
        return f"openai:{self.model or '(served model)'}@" + "@".join(self.urls)


def parse_teacher_spec(
    spec: str | None,
    *,
    extra_urls: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> TeacherSpec:
    """Read a teacher choice; with none, the server at ``COTFORGE_TEACHER_URL`` or the default.

    >>> parse_teacher_spec("openai:Qwen/Qwen2.5-VL-32B-Instruct@http://a:8000@http://b:8000",
    ...                    environ={})
    TeacherSpec(kind='openai', model='Qwen/Qwen2.5-VL-32B-Instruct', urls=('http://a:8000', 'http://b:8000'))
    >>> parse_teacher_spec(None, environ={"COTFORGE_TEACHER_URL": "http://gpu:8000/v1"})
    TeacherSpec(kind='openai', model=None, urls=('http://gpu:8000/v1',))
    >>> str(parse_teacher_spec(None, environ={}))
    'local:Qwen/Qwen2.5-VL-7B-Instruct'
    """
    env = os.environ if environ is None else environ
    env_urls = [u.strip() for u in env.get("COTFORGE_TEACHER_URL", "").split(",") if u.strip()]
    if spec is None or not spec.strip():
        if env_urls:
            model = env.get("COTFORGE_TEACHER_MODEL") or None
            return TeacherSpec("openai", model, _checked_urls([*env_urls, *extra_urls]))
        spec = DEFAULT_LOCAL_TEACHER
    kind, sep, rest = spec.strip().partition(":")
    if not sep or kind not in ("openai", "local") or not rest:
        msg = (
            f"--teacher {spec!r} is not a teacher; use openai:MODEL@URL (an OpenAI-compatible "
            "server such as vLLM) or local:PATH_OR_ID (an in-process transformers model)"
        )
        raise ConfigError(msg)
    if kind == "local":
        return TeacherSpec("local", rest)
    model, *urls = rest.split("@")
    urls = [*urls, *extra_urls] or env_urls
    if not urls:
        msg = (
            f"--teacher {spec!r} names no server; add one (openai:{model}@http://localhost:8000)"
            ", list them in teacher_urls, or set COTFORGE_TEACHER_URL"
        )
        raise ConfigError(msg)
    return TeacherSpec("openai", model or None, _checked_urls(urls))


def _checked_urls(urls: Sequence[str]) -> tuple[str, ...]:
    for url in urls:
        if not url.startswith(("http://", "https://")):
            msg = f"teacher URL {url!r} must start with http:// or https://"
            raise ConfigError(msg)
    return tuple(dict.fromkeys(url.rstrip("/") for url in urls))


def build_teacher(spec: TeacherSpec, options: TeacherOptions) -> Teacher:
    """The teacher ``spec`` names, configured by ``options`` (nothing is loaded or sent yet,
    except asking a server which model it serves when the spec leaves that open)."""
    if spec.kind == "local":
        from cotforge.teachers.local import LocalTeacher

        assert spec.model is not None
        return LocalTeacher(
            spec.model, batch_size=options.batch_size, max_image_side=options.max_image_side
        )
    from cotforge.teachers.openai_compat import OpenAICompatOptions, OpenAICompatTeacher

    client_options = OpenAICompatOptions(
        api_key_env=options.api_key_env,
        concurrency=options.concurrency,
        timeout_s=options.timeout_s,
        max_retries=options.max_retries,
        requests_per_minute=options.requests_per_minute,
        tokens_per_minute=options.tokens_per_minute,
        max_image_side=options.max_image_side,
    )
    model = spec.model or served_model(spec.urls[0], api_key=os.environ.get(options.api_key_env))
    return OpenAICompatTeacher(model, spec.urls, options=client_options)


def served_model(url: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> str:
    """The one model the server at ``url`` serves (``GET /v1/models``)."""
    from cotforge.teachers.openai_compat import base_url

    base = base_url(url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base}/models", headers=headers, timeout=timeout_s)
        response.raise_for_status()
        models = [entry["id"] for entry in response.json().get("data", [])]
    except httpx.HTTPStatusError as err:
        msg = (
            f"the teacher server at {url} answered /v1/models with HTTP {err.response.status_code}"
        )
        raise TeacherUnavailableError(f"{msg}; check the URL and the API key variable") from None
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as err:
        msg = f"no teacher answers at {url} ({type(err).__name__}); {PRODUCTION_HINT}"
        raise TeacherUnavailableError(msg) from None
    if len(models) != 1:
        served = ", ".join(models) or "none"
        msg = (
            f"the server at {url} serves {len(models)} models ({served}); name one with "
            f"--teacher openai:MODEL@{url} or COTFORGE_TEACHER_MODEL"
        )
        raise ConfigError(msg)
    return models[0]
