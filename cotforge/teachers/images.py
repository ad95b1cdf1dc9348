"""Images in the form a chat API takes them: a JPEG data URL, prepared once per image per run.

A run shows the same image to the teacher many times (concept captions, the rationale, every
resample), so decoding, resizing and encoding it each time would cost more CPU than the HTTP
call. :class:`ImagePreparer` does that work once per :attr:`ImageInput.digest`, keeps the result
in memory (bounded by total bytes, least recently used out first) and makes concurrent requests
for the same image wait for the one preparation in progress. The work runs in worker threads,
where Pillow releases the GIL, so the event loop keeps sending requests meanwhile. Nothing is
written to disk. A JPEG file that needs no change (small enough, RGB, not rotated, not edited
by the dataset's loader) is sent as its own bytes: re-encoding would only lose quality.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import ExifTags, Image

from cotforge.teachers.base import ImageInput

_DATA_URL_PREFIX = b"data:image/jpeg;base64,"


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image ready for the wire.

    ``data_url`` is ASCII bytes (base64 has no character JSON escapes), so a request body can
    splice it in between its JSON pieces without serialising it again. ``width`` and ``height``
    are the sent size, from which rate limiting estimates the image's prompt tokens.
    """

    data_url: bytes
    width: int
    height: int


def prepare_image(image: Image.Image, *, max_side: int = 1024, quality: int = 90) -> PreparedImage:
    """Convert ``image`` to RGB, shrink it so its longer side is at most ``max_side`` (never
    enlarge: upscaling adds tokens, not detail) and encode it as a JPEG data URL.

    An RGB JPEG that is still as read from its file (not decoded, cropped or drawn on), already
    small enough and not rotated by EXIF is sent as its own bytes instead: re-encoding it would
    only lose quality and cost about 3 ms of CPU for a 512-px image.

    >>> from PIL import ExifTags, Image
    >>> prepared = prepare_image(Image.new("RGBA", (2048, 1024)), max_side=512)
    >>> (prepared.width, prepared.height), prepared.data_url[:23]
    ((512, 256), b'data:image/jpeg;base64,')
    """
    _check_options(max_side, quality)
    original = _untouched_jpeg(image, max_side)
    if original is not None:
        return PreparedImage(_DATA_URL_PREFIX + base64.b64encode(original), *image.size)
    if image.mode == "P":
        # A palette may carry transparency that Pillow only resolves through RGBA.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    longer = max(width, height)
    if longer > max_side:
        scale = max_side / longer
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return PreparedImage(
        _DATA_URL_PREFIX + base64.b64encode(buffer.getbuffer()), image.width, image.height
    )


def _untouched_jpeg(image: Image.Image, max_side: int) -> bytes | None:
    """The file bytes of ``image`` when they show exactly its pixels and need no change.

    Pillow decodes lazily: until then ``tile`` lists the undecoded data and ``fp`` is the
    file, whose start Pillow put at offset 0. Any crop, conversion or drawing either makes a
    new image (``format`` None) or decodes this one (``tile`` emptied), so those are re-encoded.
    """
    width, height = image.size
    fp = getattr(image, "fp", None)
    if (
        image.format != "JPEG"
        or image.mode != "RGB"
        or max(width, height) > max_side
        or not getattr(image, "tile", None)
        or fp is None
        or image.getexif().get(ExifTags.Base.Orientation, 1) != 1
    ):
        return None
    fp.seek(0)
    data = fp.read()
    # Megabytes of metadata (thumbnails, ICC, XMP) would cost bandwidth for nothing.
    return data if len(data) <= width * height else None


def _check_options(max_side: int, quality: int) -> None:
    if max_side < 1:
        msg = f"max_side must be at least 1, got {max_side}"
        raise ValueError(msg)
    if not 1 <= quality <= 100:
        msg = f"JPEG quality must be between 1 and 100, got {quality}"
        raise ValueError(msg)


class ImagePreparer:
    """Prepared images by digest: each one loaded, resized and encoded once while it stays in
    the cache, however many requests show it.

    Use from one event loop. ``cache_bytes`` bounds the data URLs kept (a 1024-px JPEG is about
    150-300 kB of base64); an image evicted and asked for again is prepared again, which costs
    time, not correctness. ``preparations`` counts the preparations done, so tests and
    benchmarks can check the once-per-image promise.
    """

    def __init__(
        self,
        *,
        max_side: int = 1024,
        quality: int = 90,
        cache_bytes: int = 512 * 1024 * 1024,
        threads: int = 2,
    ) -> None:
        _check_options(max_side, quality)
        if cache_bytes < 0:
            msg = f"cache_bytes must be 0 or more, got {cache_bytes}"
            raise ValueError(msg)
        if threads < 1:
            msg = f"threads must be at least 1, got {threads}"
            raise ValueError(msg)
        self.max_side = max_side
        self.quality = quality
        self.cache_bytes = cache_bytes
        self.preparations = 0
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[str, PreparedImage] = OrderedDict()
        self._cached_bytes = 0
        self._pending: dict[str, asyncio.Future[PreparedImage]] = {}

    async def prepare(self, image: ImageInput) -> PreparedImage:
        """The prepared form of ``image``: from the cache, from a preparation already running,
        or prepared now in a worker thread. A failure (e.g. a corrupt file) reaches every
        caller waiting for that image and is not cached, so a later request tries again."""
        cached = self._cache.get(image.digest)
        if cached is not None:
            self._cache.move_to_end(image.digest)
            return cached
        pending = self._pending.get(image.digest)
        if pending is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._threads, thread_name_prefix="cotforge-image"
                )
            self.preparations += 1
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._executor, self._prepare_sync, image)
            self._pending[image.digest] = pending
            pending.add_done_callback(functools.partial(self._finished, image.digest))
        # shield: a cancelled waiter must not cancel the preparation the others wait for.
        return await asyncio.shield(pending)

    def _prepare_sync(self, image: ImageInput) -> PreparedImage:
        # The loaded image is ours: closing it releases its file now, not at garbage collection.
        with image.load() as pixels:
            return prepare_image(pixels, max_side=self.max_side, quality=self.quality)

    def _finished(self, digest: str, future: asyncio.Future[PreparedImage]) -> None:
        del self._pending[digest]
        # exception() also marks a failure as seen when every waiter was cancelled.
        if not future.cancelled() and future.exception() is None:
            self._remember(digest, future.result())

    def _remember(self, digest: str, prepared: PreparedImage) -> None:
        size = len(prepared.data_url)
        if size > self.cache_bytes:
            return
        self._cache[digest] = prepared
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= len(evicted.data_url)

    def close(self) -> None:
        """Stop the worker threads and drop the cache."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._cache.clear()
        self._cached_bytes = 0
