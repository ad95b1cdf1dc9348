"""Images as an export embeds them: the bytes of the image the dataset means, found under the
dataset's root on this machine but named only by dataset-relative ids in the output.

A dataset that changes no pixel on loading (:attr:`Source.edits_pixels` false) is embedded with
its file's own bytes, which is exact and costs no decoding; one that does (FGVC-Aircraft crops its
copyright banner) is decoded as the dataset means it and re-encoded as JPEG quality 95, so the
student trains on the same pixels the teacher saw. Reading and encoding run in a few threads
(file reads and Pillow's codecs release the GIL) with a bounded look-ahead, so the rows keep
their order and memory stays flat however many there are.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from cotforge.data.base import ImageRecord, Source
from cotforge.errors import CorruptImageError, DatasetNotFoundError

IMPORT_SPLIT = "import"
"""``images.split`` of imported images (cotforge.importer): their keys are relative to the
import's image root rather than to the dataset's official root."""
JPEG_QUALITY = 95

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageRef:
    """One image a row embeds: where it is in the store, and which record needs it (named in
    the error when the file is missing)."""

    dataset: str
    split: str
    key: str
    class_index: int
    owner: str

    @property
    def image_id(self) -> str:
        """``<dataset>/<split>/<key>``: the store's id, and the name the output gives the image
        (relative, so no folder of the exporting machine appears in it)."""
        return f"{self.dataset}/{self.split}/{self.key}"


class ImageFiles:
    """Finds and encodes the images of the datasets being exported.

    ``sources`` are the datasets' sources over their official roots; ``import_roots`` the folders
    imported images' keys are relative to, by dataset.
    """

    def __init__(self, sources: Mapping[str, Source], import_roots: Mapping[str, Path]) -> None:
        self.sources = dict(sources)
        self.import_roots = dict(import_roots)

    def path(self, ref: ImageRef) -> Path:
        """The file of ``ref`` on this machine."""
        if ref.split == IMPORT_SPLIT and ref.dataset in self.import_roots:
            return self.import_roots[ref.dataset] / ref.key
        return self.sources[ref.dataset].root / ref.key

    def check_present(self, refs: Iterable[ImageRef]) -> None:
        """Raise :class:`DatasetNotFoundError` naming the first missing file and how many are
        missing, before anything is written. Each folder is listed once, not each file stat'ed.
        """
        listed: dict[Path, set[str]] = {}
        missing: list[tuple[ImageRef, Path]] = []
        for ref in refs:
            path = self.path(ref)
            folder = path.parent
            if folder not in listed:
                listed[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
            if path.name not in listed[folder]:
                missing.append((ref, path))
        if missing:
            raise _missing(*missing[0], others=len(missing) - 1)

    def encoded(self, ref: ImageRef) -> dict[str, bytes | str]:
        """The ``datasets`` Image value of ``ref``: its bytes and its relative name."""
        source = self.sources[ref.dataset]
        path = self.path(ref)
        if not path.is_file():
            raise _missing(ref, path)
        try:
            if source.edits_pixels:
                record = ImageRecord(ref.dataset, ref.split, ref.key, path, ref.class_index)
                buffer = io.BytesIO()
                source.open_image(record).save(buffer, format="JPEG", quality=JPEG_QUALITY)
                return {"bytes": buffer.getvalue(), "path": ref.image_id}
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)):  # the header only: a cheap check it is an image
                pass
        except (CorruptImageError, UnidentifiedImageError, OSError) as err:
            msg = (
                f"image {ref.image_id} of {ref.owner} is not a readable image ({path}: {err}); "
                f"nothing was written. Replace the file or drop the record"
            )
            raise CorruptImageError(msg) from err
        return {"bytes": data, "path": ref.image_id}


def _missing(ref: ImageRef, path: Path, *, others: int = 0) -> DatasetNotFoundError:
    more = f" ({others} more images are missing too)" if others else ""
    return DatasetNotFoundError(
        f"image {ref.image_id} of {ref.owner} is missing: {path} does not exist{more}; "
        f"nothing was written. Pass --root {ref.dataset}=FOLDER where the dataset is now"
    )


def ordered_map(
    function: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int | None = None
) -> Iterator[R]:
    """``map(function, items)`` run in ``workers`` threads, in order, with at most ``ahead``
    (default 4 per worker) items in flight: unlike ``Executor.map`` it does not read the
    whole input first, so a stream of rows stays a stream."""
    if workers <= 1:
        yield from map(function, items)
        return
    window = ahead or 4 * workers
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cotforge-export")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
