"""Which model answers an evaluation, from ``--model``.

- ``openai:NAME@URL[@URL...]``: any OpenAI-compatible server (``vllm serve`` of a trained
  checkpoint, SGLang, ``transformers serve``), through the teacher client: bounded
  concurrency, retries with backoff, load spread over the URLs;
- ``local:PATH_OR_ID`` (or a bare folder path): a transformers image-text-to-text model in
  this process, batched greedy generation, bf16 on a GPU;
- ``clip:PATH_OR_ID``: a CLIP or SigLIP model choosing among the closed-world options by
  image-text similarity (the contrastive baseline of the paper's tables).

Generative backends are :class:`~cotforge.teachers.base.Teacher` s, so evaluation sends
requests exactly as generation does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cotforge.errors import ConfigError, TeacherUnavailableError

if TYPE_CHECKING:
    from cotforge.config import EvalOptions
    from cotforge.teachers.base import Teacher


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model``; ``target`` is the served name or the model path/id."""

    kind: Literal["openai", "local", "clip"]
    target: str
    urls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """How the store names the model (``openai:NAME``, ``local:PATH``, ``clip:PATH``): the
        same model behind another URL is the same model, so its answers are reused."""
        return f"{self.kind}:{self.target}"


def parse_model(spec: str, *, api_key: str | None = None) -> ModelSpec:
    """Read ``--model``; ``openai:@URL`` asks the server (with ``api_key``) for its one model.

    >>> parse_model("openai:fine-r1@http://gpu:8000")
    ModelSpec(kind='openai', target='fine-r1', urls=('http://gpu:8000',))
    >>> parse_model("clip:openai/clip-vit-large-patch14").name
    'clip:openai/clip-vit-large-patch14'
    """
    from cotforge.teachers.select import parse_teacher_spec

    text = spec.strip()
    kind, sep, rest = text.partition(":")
    if sep and kind == "clip" and rest:
        return ModelSpec("clip", rest)
    if sep and kind in ("openai", "local"):
        try:
            parsed = parse_teacher_spec(text)
        except ConfigError as err:
            raise ConfigError(str(err).replace("--teacher", "--model")) from None
        if parsed.kind == "local":
            assert parsed.model is not None
            return ModelSpec("local", parsed.model)
        if parsed.model is None:
            from cotforge.teachers.select import served_model

            return ModelSpec("openai", served_model(parsed.urls[0], api_key=api_key), parsed.urls)
        return ModelSpec("openai", parsed.model, parsed.urls)
    if text and Path(text).expanduser().is_dir():
        return ModelSpec("local", text)
    msg = (
        f"--model {spec!r} is not a model; use openai:NAME@URL (an OpenAI-compatible server, "
        "e.g. vllm serve), local:PATH (a transformers model in this process) or clip:PATH (a "
        "CLIP/SigLIP zero-shot baseline)"
    )
    raise ConfigError(msg)


def build_generator(spec: ModelSpec, options: EvalOptions) -> Teacher:
    """The teacher that answers for a generative ``spec`` (nothing is loaded or sent yet)."""
    if spec.kind == "local":
        from cotforge.teachers.local import LocalTeacher

        return LocalTeacher(
            spec.target,
            batch_size=options.batch_size,
            max_image_side=options.max_image_side,
            dtype="bfloat16" if _has_cuda() else "auto",
        )
    if spec.kind != "openai":
        msg = f"{spec.name} is not a generative model"
        raise ValueError(msg)
    from cotforge.teachers.openai_compat import OpenAICompatOptions, OpenAICompatTeacher

    client = OpenAICompatOptions(
        api_key_env=options.api_key_env,
        concurrency=options.concurrency,
        timeout_s=options.timeout_s,
        max_retries=options.max_retries,
        max_image_side=options.max_image_side,
    )
    return OpenAICompatTeacher(spec.target, spec.urls, options=client)


async def check_generator(teacher: Teacher, spec: ModelSpec) -> None:
    """``teacher.check()``, its advice worded for ``--model``: the server is down or does not
    serve the model, or the local model cannot be loaded."""
    try:
        await teacher.check()
    except TeacherUnavailableError as err:
        message = _TEACHER_ADVICE.sub("", str(err)).replace("--teacher", "--model")
        message = message.removeprefix("local teacher: ")
        raise TeacherUnavailableError(f"eval model {spec.name}: {message}") from None


_TEACHER_ADVICE = re.compile(r" \(recommended: `[^`]*`\)$")
"""The teacher client's closing advice names the recommended teacher model, which is not the
model being evaluated."""


def _has_cuda() -> bool:
    """Whether a CUDA GPU is there (False without torch: the teacher then says what to
    install when it loads)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
