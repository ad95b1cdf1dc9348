"""The ``local`` teacher: a transformers image-text-to-text model in this process.

It is the teacher that works with nothing else running (``--teacher local:PATH_OR_ID``): no
server, no API key. Requests are generated in batches on a worker thread, so the event loop
that writes finished responses to the store keeps running while the model computes. A server
(``vllm serve``) is much faster for real runs; this is for small runs, tests and machines where
starting a server is not an option.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from PIL import Image

from cotforge.errors import MissingExtraError, TeacherUnavailableError
from cotforge.teachers.base import TeacherRequest, TeacherResponse

DTYPES = ("auto", "float32", "bfloat16", "float16")
"""``auto`` keeps the dtype the checkpoint was saved in (bf16 for the Qwen releases)."""


class LocalTeacher:
    """Batched generation with ``AutoModelForImageTextToText`` + ``AutoProcessor``.

    The model loads on :meth:`check` or the first :meth:`complete`, not in ``__init__``, so
    building a teacher (e.g. to print a plan) costs nothing. Requests are pulled from the
    iterator ``batch_size`` at a time, left-padded and generated together; requests of a batch
    that ask for different sampling parameters are generated as separate sub-batches, since
    one ``generate()`` call has one set. Every response of a batch reports the batch's wall time
    as its latency: that is how long each request waited.

    Sampling is seeded per batch from the seeds of its requests, so the same requests batched
    the same way give the same text; a request's output depends on its batch mates, as with any
    batched sampler.

    >>> LocalTeacher("Qwen/Qwen2.5-VL-7B-Instruct", batch_size=8).name
    'local:Qwen/Qwen2.5-VL-7B-Instruct'
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 4,
        max_image_side: int = 768,
        dtype: str = "auto",
        device: str | None = None,
    ) -> None:
        if not model:
            msg = "the local teacher needs a model: --teacher local:PATH_OR_ID"
            raise ValueError(msg)
        if batch_size < 1:
            msg = f"batch_size must be at least 1; got {batch_size}"
            raise ValueError(msg)
        if max_image_side < 28:
            msg = f"max_image_side must be at least 28 (one vision patch); got {max_image_side}"
            raise ValueError(msg)
        if dtype not in DTYPES:
            msg = f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}"
            raise ValueError(msg)
        self.model_id = model
        self.name = f"local:{model}"
        self.batch_size = batch_size
        self.max_image_side = max_image_side
        self.dtype = dtype
        self.device = device
        self._model: Any = None
        self._processor: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        """Serialises loading and generation: the model and torch's global RNG are shared."""

    async def check(self) -> None:
        """Load the model now, so a missing extra or model fails before any request is sent."""
        await asyncio.to_thread(self._load)

    async def complete(self, requests: Iterable[TeacherRequest]) -> AsyncIterator[TeacherResponse]:
        """Generate ``batch_size`` requests at a time on a worker thread and yield each batch's
        responses as it finishes; a failed image or batch becomes error responses."""
        await self.check()
        pending = iter(requests)
        while batch := list(islice(pending, self.batch_size)):
            for response in await asyncio.to_thread(self._run_batch, batch):
                yield response

    async def aclose(self) -> None:
        """Drop the model and free its accelerator memory (after a batch still running)."""
        await asyncio.to_thread(self._unload)

    # --- worker thread ------------------------------------------------------------------------

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import AutoModelForImageTextToText, AutoProcessor
            except ImportError as err:
                msg = (
                    f"the local teacher needs torch and transformers ({err}); install them with "
                    f"pip install 'cotforge[local]', or use a server: --teacher openai:MODEL@URL"
                )
                raise MissingExtraError(msg) from err
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                processor = AutoProcessor.from_pretrained(self.model_id)
                model = AutoModelForImageTextToText.from_pretrained(
                    self.model_id,
                    dtype=self.dtype if self.dtype == "auto" else getattr(torch, self.dtype),
                )
            except (OSError, ValueError) as err:
                raise TeacherUnavailableError(self._load_failure(err)) from err
            processor.tokenizer.padding_side = "left"
            self._model = model.to(device).eval()
            self._processor = processor
            self._eos_ids = _eos_ids(model.generation_config, processor.tokenizer)

    def _unload(self) -> None:
        with self._lock:
            on_cuda = self._model is not None and self._model.device.type == "cuda"
            self._model = self._processor = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def _load_failure(self, err: Exception) -> str:
        """Say what to do: a path that is missing or not a model, or an id not downloaded."""
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        path = Path(self.model_id).expanduser()
        if path.exists():
            return (
                f"local teacher: {path} is not a transformers image-text-to-text model folder "
                f"({reason}); pass the folder that holds config.json, the weights and the "
                f"processor files"
            )
        if self.model_id.startswith(("/", ".", "~")):
            return (
                f"local teacher: model folder {path} does not exist; pass the folder that holds "
                f"config.json"
            )
        return (
            f"local teacher: cannot load {self.model_id!r} ({reason}); if it is a Hub model, "
            f"download it while online with `huggingface-cli download {self.model_id}` (or "
            f"`hf download {self.model_id}`), or pass a local folder: "
            f"--teacher local:/path/to/model"
        )

    def _run_batch(self, batch: list[TeacherRequest]) -> list[TeacherResponse]:
        started = time.perf_counter()
        responses: list[TeacherResponse] = []
        ready: dict[tuple[int, float, float], list[tuple[TeacherRequest, list[Image.Image]]]] = {}
        for request in batch:
            try:
                images = [self._prepare(image.load()) for image in request.images]
            except Exception as err:  # a teacher never raises for one request (see base.py)
                responses.append(
                    _failed(request, f"image could not be loaded: {_describe(err)}", started)
                )
                continue
            key = (request.max_tokens, request.temperature, request.top_p)
            ready.setdefault(key, []).append((request, images))
        for group in ready.values():
            try:
                responses += self._generate(group, started)
            except Exception as err:  # e.g. CUDA out of memory: fail this batch, keep the run
                self._recover()
                responses += [_failed(request, _describe(err), started) for request, _ in group]
        return responses

    def _prepare(self, image: Image.Image) -> Image.Image:
        """RGB, longest side at most ``max_image_side``: the image processor would resize anyway,
        but a smaller input bounds the vision tokens and the preprocessing time."""
        rgb = image.convert("RGB")
        rgb.thumbnail((self.max_image_side, self.max_image_side), Image.Resampling.BICUBIC)
        return rgb

    def _generate(
        self, group: list[tuple[TeacherRequest, list[Image.Image]]], started: float
    ) -> list[TeacherResponse]:
        import torch

        first = group[0][0]
        conversations = [_conversation(request, images) for request, images in group]
        with self._lock:
            if self._model is None:
                msg = "the local teacher was closed"
                raise RuntimeError(msg)
            inputs = self._processor.apply_chat_template(
                conversations,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            ).to(self._model.device)
            sampling: dict[str, Any] = {"do_sample": False}
            if first.temperature > 0:
                # top_k=0 switches off top-k filtering: a request means temperature and top_p as
                # the OpenAI API does, whatever the checkpoint's generation_config defaults to
                # (some ship top_k=1, which would make every resample the same greedy answer).
                sampling = {
                    "do_sample": True,
                    "temperature": first.temperature,
                    "top_p": first.top_p,
                    "top_k": 0,
                }
            seed = _batch_seed([request.seed for request, _ in group])
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                output = self._model.generate(**inputs, max_new_tokens=first.max_tokens, **sampling)
            prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
            generated = output[:, inputs["input_ids"].shape[1] :].tolist()
            tokenizer = self._processor.tokenizer
        latency = time.perf_counter() - started
        responses = []
        for (request, _), prompt_len, tokens in zip(group, prompt_tokens, generated, strict=True):
            end = next((i for i, token in enumerate(tokens) if token in self._eos_ids), None)
            kept = tokens if end is None else tokens[: end + 1]
            responses.append(
                TeacherResponse(
                    request_id=request.request_id,
                    text=tokenizer.decode(kept, skip_special_tokens=True),
                    error=None,
                    latency_s=latency,
                    prompt_tokens=int(prompt_len),
                    completion_tokens=len(kept),
                    finish_reason="length" if end is None else "stop",
                )
            )
        return responses

    def _recover(self) -> None:
        """Release what a failed generate left on the accelerator (after an out-of-memory)."""
        model = self._model
        if model is not None and model.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def _conversation(request: TeacherRequest, images: list[Image.Image]) -> list[dict[str, Any]]:
    """System prompt, then one user turn: the images first, then the text (Qwen-VL's order)."""
    content: list[dict[str, Any]] = [{"type": "image", "image": image} for image in images]
    content.append({"type": "text", "text": request.prompt})
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    messages.append({"role": "user", "content": content})
    return messages


def _eos_ids(generation_config: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a completion: the model's stop ids (Qwen stops at ``<|im_end|>`` and
    ``<|endoftext|>``) and the tokenizer's end-of-sequence id. ``generate()`` pads rows that
    stopped early after their stop id, so the first stop id ends each completion."""
    ids = generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return frozenset(found)


def _batch_seed(seeds: list[int | None]) -> int | None:
    """One torch seed for a batch, from all of its requests' seeds; None when none set one."""
    if all(seed is None for seed in seeds):
        return None
    digest = hashlib.sha256(repr(seeds).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _describe(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:500] if text else type(err).__name__


def _failed(request: TeacherRequest, error: str, started: float) -> TeacherResponse:
    return TeacherResponse(
        request_id=request.request_id,
        text=None,
        error=error,
        latency_s=time.perf_counter() - started,
    )
