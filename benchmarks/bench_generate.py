"""How fast cotforge's teacher client drives an OpenAI-compatible server, and what it costs.

The scripted server (:mod:`cotforge.testing.openai_server`) runs in its own process with a fixed
latency per request (200 ms by default) and no concurrency limit, so a perfect client reaches
``concurrency / latency`` requests per second (the ceiling). Each of the 2,000 requests carries
one realistic 512x384 JPEG of about 50 kB (smooth noise, shapes and grain, not a flat colour)
and a rationale prompt of about 1.5 kB; the images come from a pool of 250 distinct ones, so
each is shown about 8 times, as generation shows an image for its concepts, its rationale and
every resample.

Clients, each in its own process (so CPU time and peak memory are its own), one after the
other against the same server, for each concurrency:

- ``cotforge``: :class:`~cotforge.teachers.openai_compat.OpenAICompatTeacher`, the images
  handed over as opened files (as for CUB, Cars, Dogs, Pets, Flowers): being small RGB JPEGs,
  they are sent as their own bytes, read and base64-encoded once each;
- ``cotforge-reencode``: the same, but the loader crops a 20-px banner off each image as
  FGVC-Aircraft's does, so each distinct image is decoded and re-encoded once;
  for both, the CPU includes that preparation (``prep ms/req`` shows its share, measured
  separately on the same images) and the cache look-ups of every reuse;
- ``openai-sdk``: ``openai.AsyncOpenAI`` (default settings, no retries) under an
  ``asyncio.Semaphore``, messages as dicts with the data URL;
- ``bare-aiohttp``: one aiohttp session, each body built once with ``json.dumps``, no retries,
  no rate limits: about the least CPU a Python client can spend.

The baselines get the images as ready data URLs (their preparation is not counted). Client CPU
is the worker process's user + system time during the run (all threads); peak memory is the
resident-set peak during the run (Linux ``VmHWM`` after resetting it).

    .venv/bin/python benchmarks/bench_generate.py [--requests 2000] [--latency 0.2]
        [--concurrency 16 64 256] [--images 250]

The last line is ``RESULT ceiling_fraction_c64=<fraction> target>=0.90``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import io
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from measure import cpu_s, load_average, peak_rss_mib, print_table, reset_peak_rss
from openai import AsyncOpenAI
from PIL import Image, ImageDraw, ImageFilter

from cotforge.teachers.base import ImageInput, TeacherRequest
from cotforge.teachers.images import prepare_image
from cotforge.teachers.openai_compat import OpenAICompatOptions, OpenAICompatTeacher
from cotforge.testing.openai_server import start_process

CLIENTS = ("cotforge", "cotforge-reencode", "openai-sdk", "bare-aiohttp")
MODEL = "test-model"
IMAGE_SIZE = (512, 384)

PROMPT = """You are preparing a worked example that teaches a student model to recognise \
fine-grained kinds of aircraft from images.

The student is shown this image and asked: "What is the model of the aircraft in this image?"

The image shows an aircraft of the kind "{name}" (Boeing > Boeing 737).
Visual concepts noticed in this image that help tell it apart from similar kinds:
- two overwing exits on each side of the fuselage
- blended winglets rising at the wing tips
- flattened bottoms of the engine nacelles
Kinds of aircraft that are easily confused with it: 737-700, 737-900, A320, 757-200.

Write the reasoning a careful expert would follow from the image alone, in four parts, each \
inside its own tags and in this order: <analysis> the visual features that matter for the exact \
kind: overall shape, parts, colours and markings, proportions and context </analysis>, \
<options> two to four candidate kinds, one per line, "{name}" among them </options>, \
<comparison> the candidates one by one against the features seen </comparison>, <prediction> \
which candidate the image shows, ending with its name exactly as listed </prediction>.

Rules: write in English only. Reason only from what is visible; never say or suggest that the \
answer was given, provided, stated or known in advance. Request {index}."""

SYSTEM = "You are an expert in fine-grained visual recognition of aircraft."


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def make_jpeg(seed: int) -> bytes:
    """A 512x384 photo-like JPEG of about 50 kB: smooth colour fields, a dozen blurred shapes
    and sensor-like grain (a flat colour would compress to 2 kB and flatter every client)."""
    rng = np.random.default_rng(seed)
    shapes = random.Random(seed)
    width, height = IMAGE_SIZE
    field = (rng.random((12, 16, 3)) * 255).astype("uint8")
    image = Image.fromarray(field).resize(IMAGE_SIZE, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = shapes.randrange(width), shapes.randrange(height)
        colour = tuple(shapes.randrange(256) for _ in range(3))
        if shapes.random() < 0.5:
            w, h = shapes.randrange(20, 160), shapes.randrange(20, 120)
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        else:
            corners = shapes.randrange(3, 7)
            points = [(x + shapes.randrange(-80, 80), y + shapes.randrange(-80, 80))]
            points += [
                (x + shapes.randrange(-80, 80), y + shapes.randrange(-80, 80))
                for _ in range(corners - 1)
            ]
            draw.polygon(points, fill=colour)
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    grainy = blurred + rng.normal(0.0, 9.0, blurred.shape)
    buffer = io.BytesIO()
    Image.fromarray(grainy.clip(0, 255).astype("uint8")).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _prompt(index: int) -> str:
    return PROMPT.format(name=f"737-{800 + index % 7 * 100}", index=index)


# ----------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Clients (each runs in a worker process)
# ----------------------------------------------------------------------------------------------


def _loader(data: bytes, *, crop: bool) -> Callable[[], Image.Image]:
    """How a dataset hands over an image: the file as opened, or (``crop``) with a 20-px banner
    cut off the bottom as FGVC-Aircraft's loader does, which forces a re-encode."""

    def load() -> Image.Image:
        image = Image.open(io.BytesIO(data))
        return image.crop((0, 0, image.width, image.height - 20)) if crop else image

    return load


async def _run_cotforge(
    url: str, concurrency: int, count: int, jpegs: list[bytes], *, crop: bool = False
) -> tuple[int, dict[str, Any]]:
    images = [ImageInput(f"image-{i}", _loader(data, crop=crop)) for i, data in enumerate(jpegs)]
    requests = (
        TeacherRequest(
            f"request-{i}",
            _prompt(i),
            images=(images[i % len(images)],),
            system=SYSTEM,
            max_tokens=1024,
        )
        for i in range(count)
    )
    options = OpenAICompatOptions(concurrency=concurrency, max_retries=0, timeout_s=60)
    teacher = OpenAICompatTeacher(MODEL, url, options=options)
    errors = 0
    async for response in teacher.complete(requests):
        errors += not response.ok
    await teacher.aclose()
    return errors, {"image_preparations": teacher.image_preparations}


async def _run_openai_sdk(
    url: str, concurrency: int, count: int, jpegs: list[bytes]
) -> tuple[int, dict[str, Any]]:
    data_urls = [_data_url(data) for data in jpegs]
    client = AsyncOpenAI(base_url=url, api_key="benchmark", max_retries=0, timeout=60)
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> bool:
        async with slots:
            try:
                completion = await client.chat.completions.create(
                    model=MODEL,
                    messages=[
                        {"role": "system", "content": SYSTEM},
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "image_url",
                                    "image_url": {"url": data_urls[index % len(data_urls)]},
                                },
                                {"type": "text", "text": _prompt(index)},
                            ],
                        },
                    ],
                    max_tokens=1024,
                    temperature=0.7,
                    top_p=0.95,
                )
            except Exception:  # a benchmark counts failures, it does not stop on them
                return False
            return completion.choices[0].message.content is not None

    results = await asyncio.gather(*(one(i) for i in range(count)))
    await client.close()
    return results.count(False), {}


async def _run_bare_aiohttp(
    url: str, concurrency: int, count: int, jpegs: list[bytes]
) -> tuple[int, dict[str, Any]]:
    data_urls = [_data_url(data) for data in jpegs]
    slots = asyncio.Semaphore(concurrency)
    endpoint = f"{url}/chat/completions"
    headers = {"Content-Type": "application/json"}

    async def one(session: aiohttp.ClientSession, index: int) -> bool:
        async with slots:
            body = json.dumps(
                {
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "image_url",
                                    "image_url": {"url": data_urls[index % len(data_urls)]},
                                },
                                {"type": "text", "text": _prompt(index)},
                            ],
                        },
                    ],
                    "max_tokens": 1024,
                    "temperature": 0.7,
                    "top_p": 0.95,
                }
            ).encode()
            try:
                async with session.post(endpoint, data=body, headers=headers) as response:
                    payload = json.loads(await response.read())
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return False
        return response.status == 200 and bool(payload["choices"][0]["message"]["content"])

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(*(one(session, i) for i in range(count)))
    return results.count(False), {}


def _data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


_RUNNERS = {
    "cotforge": _run_cotforge,
    "cotforge-reencode": functools.partial(_run_cotforge, crop=True),
    "openai-sdk": _run_openai_sdk,
    "bare-aiohttp": _run_bare_aiohttp,
}


def _preparation_cpu_s(jpegs: list[bytes], *, crop: bool) -> float:
    """CPU seconds to prepare each image once, as cotforge's client does (measured apart)."""
    start = cpu_s()
    for data in jpegs:
        with _loader(data, crop=crop)() as image:
            prepare_image(image)
    return cpu_s() - start


def worker(client: str, url: str, concurrency: int, count: int, images: int) -> dict[str, Any]:
    """Run one client once and measure it (called in a fresh process)."""
    jpegs = [make_jpeg(seed) for seed in range(images)]
    extra: dict[str, Any] = {}
    if client.startswith("cotforge"):
        extra["prep_cpu_s"] = _preparation_cpu_s(jpegs, crop=client == "cotforge-reencode")
    reset_peak_rss()
    cpu_start, wall_start = cpu_s(), time.perf_counter()
    errors, details = asyncio.run(_RUNNERS[client](url, concurrency, count, jpegs))
    wall, cpu = time.perf_counter() - wall_start, cpu_s() - cpu_start
    return {
        "client": client,
        "concurrency": concurrency,
        "requests": count,
        "errors": errors,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": peak_rss_mib(),
        "mean_jpeg_bytes": sum(map(len, jpegs)) / len(jpegs),
        **extra,
        **details,
    }


# ----------------------------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------------------------


def _run_worker(client: str, url: str, concurrency: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        client,
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(args.requests),
        "--images",
        str(args.images),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"{client} at concurrency {concurrency} failed:\n{done.stderr}"
        raise RuntimeError(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--images", type=int, default=250, help="distinct images in the pool")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(args.worker, args.url, args.concurrency[0], args.requests, args.images)
        print(json.dumps(result))
        return

    print(
        f"{args.requests} requests, server latency {args.latency * 1000:.0f} ms, "
        f"{args.images} distinct images; load before: {load_average()}"
    )
    server, url = start_process(latency_s=args.latency, model=MODEL)
    results: list[dict[str, Any]] = []
    try:
        for concurrency in args.concurrency:
            for client in args.clients:
                results.append(_run_worker(client, url, concurrency, args))
    finally:
        server.terminate()
        server.wait(timeout=10)

    bare = {r["concurrency"]: r for r in results if r["client"] == "bare-aiohttp"}
    rows = []
    for r in results:
        rate = (r["requests"] - r["errors"]) / r["wall_s"]
        ceiling = r["concurrency"] / args.latency
        r["rate"], r["fraction"] = rate, rate / ceiling
        base = bare.get(r["concurrency"])
        of_bare = f"{rate / (base['requests'] / base['wall_s']):.2f}" if base else "-"
        prep = r.get("prep_cpu_s")
        rows.append(
            [
                r["client"],
                str(r["concurrency"]),
                f"{rate:.0f}",
                f"{ceiling:.0f}",
                f"{r['fraction']:.2f}",
                of_bare,
                f"{r['cpu_s'] * 1000 / r['requests']:.2f}",
                f"{prep * 1000 / r['requests']:.2f}" if prep is not None else "-",
                f"{r['peak_rss_mib']:.0f}",
                str(r["errors"]),
                str(r.get("image_preparations", "-")),
            ]
        )
    mean_jpeg_kb = results[0]["mean_jpeg_bytes"] / 1000
    print(f"mean JPEG size {mean_jpeg_kb:.0f} kB; load after: {load_average()}")
    print_table(
        [
            "client",
            "C",
            "req/s",
            "ceiling",
            "of ceiling",
            "of bare",
            "CPU ms/req",
            "prep ms/req",
            "peak MiB",
            "errors",
            "image preps",
        ],
        rows,
    )

    ours = {r["concurrency"]: r for r in results if r["client"] == "cotforge"}
    print("\ntargets")
    targets = []
    for r in results:
        if not r["client"].startswith("cotforge"):
            continue
        who, concurrency = r["client"], r["concurrency"]
        if concurrency == 64:
            targets.append([f"{who} C=64 fraction of ceiling", ">=0.90", f"{r['fraction']:.2f}"])
            cpu = r["cpu_s"] * 1000 / r["requests"]
            targets.append([f"{who} C=64 client CPU ms/request", "<=1.5", f"{cpu:.2f}"])
        if concurrency == 256 and 256 in bare:
            base = bare[256]
            ratio = r["rate"] / (base["requests"] / base["wall_s"])
            targets.append([f"{who} C=256 fraction of bare aiohttp", ">=0.85", f"{ratio:.2f}"])
        wanted = min(args.images, args.requests)
        targets.append(
            [
                f"{who} C={concurrency} image preparations",
                f"={wanted}",
                str(r["image_preparations"]),
            ]
        )
    print_table(["target", "wanted", "measured"], targets)
    fraction = ours[64]["fraction"] if 64 in ours else float("nan")
    print(f"RESULT ceiling_fraction_c64={fraction:.2f} target>=0.90")


if __name__ == "__main__":
    main()
