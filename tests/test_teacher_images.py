"""Images prepared for the wire: resized, re-encoded (or passed through), cached, once each."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import numpy as np
import pytest
from PIL import Image

from cotforge.teachers.base import ImageInput
from cotforge.teachers.images import ImagePreparer, PreparedImage, prepare_image


def _photo(size: tuple[int, int], *, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A noisy image (a flat one would hide resampling and encoding mistakes)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
    return Image.fromarray(pixels).convert(mode)


def _jpeg_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def _decode(prepared: PreparedImage) -> tuple[bytes, Image.Image]:
    prefix = b"data:image/jpeg;base64,"
    assert prepared.data_url.startswith(prefix)
    raw = base64.b64decode(prepared.data_url[len(prefix) :], validate=True)
    return raw, Image.open(io.BytesIO(raw))


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((2000, 1000), 1024, (1024, 512)),
        ((600, 1800), 900, (300, 900)),
        ((300, 200), 1024, (300, 200)),  # never enlarged
        ((1024, 1024), 1024, (1024, 1024)),
    ],
)
def test_longer_side_is_capped_and_aspect_kept(size, max_side, expected):
    prepared = prepare_image(_photo(size), max_side=max_side)
    _, decoded = _decode(prepared)
    assert decoded.format == "JPEG"
    assert decoded.size == expected == (prepared.width, prepared.height)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "I;16"])
def test_any_mode_becomes_an_rgb_jpeg(mode):
    _, decoded = _decode(prepare_image(_photo((64, 48), mode=mode)))
    assert decoded.mode == "RGB"
    assert decoded.size == (64, 48)


def test_quality_changes_the_encoding():
    image = _photo((256, 256))
    low = prepare_image(image, quality=20)
    high = prepare_image(image, quality=95)
    assert len(low.data_url) < len(high.data_url) / 2


def test_an_untouched_small_jpeg_is_sent_as_its_own_bytes():
    original = _jpeg_bytes(_photo((512, 384)), quality=75)
    prepared = prepare_image(Image.open(io.BytesIO(original)), quality=95)
    raw, _ = _decode(prepared)
    assert raw == original
    assert (prepared.width, prepared.height) == (512, 384)


@pytest.mark.parametrize(
    "change",
    [
        "decoded",  # loaded, then maybe drawn on: the file no longer says what the pixels are
        "cropped",
        "too_large",
        "rotated_by_exif",
        "grey",
        "png",
    ],
)
def test_a_jpeg_that_needs_work_is_re_encoded(change):
    image = _photo((1200, 800) if change == "too_large" else (320, 240))
    exif = Image.Exif()
    if change == "rotated_by_exif":
        exif[0x0112] = 6
    if change == "grey":
        image = image.convert("L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if change == "png" else "JPEG", quality=75, exif=exif)
    original = buffer.getvalue()
    opened = Image.open(io.BytesIO(original))
    if change == "decoded":
        opened.load()
        opened.putpixel((0, 0), (255, 0, 0))
    if change == "cropped":
        opened = opened.crop((0, 0, 300, 200))
    raw, decoded = _decode(prepare_image(opened, max_side=1024, quality=90))
    assert raw != original
    assert decoded.mode == "RGB"


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="max_side"):
        prepare_image(_photo((8, 8)), max_side=0)
    with pytest.raises(ValueError, match="quality"):
        ImagePreparer(quality=101)
    with pytest.raises(ValueError, match="cache_bytes"):
        ImagePreparer(cache_bytes=-1)


class _CountingImage:
    """An :class:`ImageInput` source that counts loads and where they ran."""

    def __init__(self, digest: str, *, seed: int = 0, fail_times: int = 0) -> None:
        self.loads = 0
        self.threads: set[int] = set()
        self.fail_times = fail_times
        self._seed = seed
        self.input = ImageInput(digest, self._load)

    def _load(self) -> Image.Image:
        self.loads += 1
        self.threads.add(threading.get_ident())
        if self.loads <= self.fail_times:
            msg = "image vanished"
            raise FileNotFoundError(msg)
        return _photo((400, 300), seed=self._seed)


def test_concurrent_requests_for_one_image_share_one_preparation():
    source = _CountingImage("a")
    preparer = ImagePreparer()

    async def main() -> list[PreparedImage]:
        return await asyncio.gather(*(preparer.prepare(source.input) for _ in range(50)))

    results = asyncio.run(main())
    preparer.close()
    assert source.loads == 1
    assert preparer.preparations == 1
    assert all(result is results[0] for result in results)
    assert threading.get_ident() not in source.threads  # the event loop never decoded it


def test_cache_evicts_least_recently_used_by_bytes():
    a, b, c = (_CountingImage(name, seed=seed) for seed, name in enumerate("abc"))
    one_image = len(prepare_image(_photo((400, 300))).data_url)

    async def show(preparer: ImagePreparer, *sources: _CountingImage) -> None:
        for source in sources:
            await preparer.prepare(source.input)

    roomy = ImagePreparer(cache_bytes=10 * one_image)
    asyncio.run(show(roomy, a, b, a, c, b, a))
    assert (a.loads, b.loads, c.loads, roomy.preparations) == (1, 1, 1, 3)
    roomy.close()

    # Room for two: showing c evicts b, the least recently shown, not a.
    tight = ImagePreparer(cache_bytes=int(one_image * 2.5))
    asyncio.run(show(tight, a, b, a, c, a))
    assert (a.loads, b.loads, c.loads) == (2, 2, 2)
    asyncio.run(show(tight, b))
    assert b.loads == 3
    tight.close()


def test_a_failed_preparation_reaches_every_waiter_and_is_not_cached():
    source = _CountingImage("broken", fail_times=1)
    preparer = ImagePreparer()

    async def main() -> tuple[list[object], PreparedImage]:
        first = await asyncio.gather(
            *(preparer.prepare(source.input) for _ in range(5)), return_exceptions=True
        )
        return first, await preparer.prepare(source.input)

    first, second = asyncio.run(main())
    preparer.close()
    assert all(isinstance(result, FileNotFoundError) for result in first)
    assert isinstance(second, PreparedImage)
    assert source.loads == 2
