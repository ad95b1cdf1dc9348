"""The interface every FGVR source implements, and the records it hands out.

A source reads one dataset's OFFICIAL on-disk layout (what the authors' archives extract to), so a
user points ``--root`` at the folder they downloaded and nothing is converted or copied. Class
identity comes from ``annotations/`` (display names as the Fine-R1 manifests spell them); the
source only maps the dataset's own labels onto those classes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from PIL import Image, UnidentifiedImageError

from cotforge.data.annotations import Annotations, ClassInfo, load_annotations
from cotforge.errors import CorruptImageError, DatasetNotFoundError


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset split; holds a path, never pixels, so listing a dataset is cheap.

    ``key`` is the image's path relative to the dataset root (POSIX separators): unique within the
    dataset, stable across machines, and enough to find the file again under another root.
    """

    dataset: str
    split: str
    key: str
    path: Path
    class_index: int

    @property
    def image_id(self) -> str:
        """The store's id for this image: ``<dataset>/<split>/<key>``."""
        return f"{self.dataset}/{self.split}/{self.key}"


class Source(ABC):
    """One FGVR dataset in its official layout under ``root``.

    Subclasses declare the files the layout must contain and parse one split's (relative path,
    official label) pairs; this base class does the validation, label mapping and lazy image
    opening that every dataset shares.
    """

    name: ClassVar[str]
    """Registry name, e.g. ``"aircraft"``; also the folder name under ``annotations/``."""
    title: ClassVar[str]
    """Human-readable dataset name with its version, e.g. ``"FGVC-Aircraft 2013b"``."""
    splits: ClassVar[tuple[str, ...]]
    """The official splits this dataset ships, e.g. ``("train", "val", "test")``."""
    required_files: ClassVar[tuple[str, ...]]
    """Paths relative to ``root`` that a complete extraction has; checked before any parsing."""
    download_hint: ClassVar[str]
    """What to do when files are missing: the download command or where to get the files."""

    def __init__(self, root: Path | str, *, annotations: Annotations | None = None) -> None:
        self.root = Path(root).expanduser()
        self._annotations = annotations

    @cached_property
    def annotations(self) -> Annotations:
        """Class names, aliases, hierarchy and the paper's split for this dataset."""
        return self._annotations or load_annotations(self.name)

    @property
    def classes(self) -> list[ClassInfo]:
        """Classes in official label order (``classes[i].index == i``)."""
        return self.annotations.classes

    def missing_files(self) -> list[str]:
        """Required files absent under ``root`` (empty when the layout is complete)."""
        return [rel for rel in self.required_files if not (self.root / rel).exists()]

    def check_layout(self) -> None:
        """Raise a :class:`DatasetNotFoundError` naming what is missing and what to do."""
        if not self.root.is_dir():
            msg = f"{self.title}: dataset folder {self.root} does not exist; {self.download_hint}"
            raise DatasetNotFoundError(msg)
        missing = self.missing_files()
        if missing:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            msg = (
                f"{self.title}: {self.root} is incomplete or not the official layout "
                f"(missing {shown}); {self.download_hint}"
            )
            raise DatasetNotFoundError(msg)

    def images(self, split: str) -> list[ImageRecord]:
        """All images of one official split, in the order the dataset's own files list them."""
        if split not in self.splits:
            msg = f"{self.title} has splits {', '.join(self.splits)}; got {split!r}"
            raise ValueError(msg)
        cache = self.__dict__.setdefault("_images_cache", {})
        if split not in cache:
            self.check_layout()
            by_label = self.annotations.by_label
            records = []
            for rel_path, label in self._read_split(split):
                info = by_label.get(label)
                if info is None:
                    msg = (
                        f"{self.title}: {self.root} lists label {label!r} for {rel_path}, which is "
                        f"not one of the {len(by_label)} official classes; the folder is not the "
                        f"official layout or is from another dataset version"
                    )
                    raise DatasetNotFoundError(msg)
                records.append(
                    ImageRecord(self.name, split, rel_path, self.root / rel_path, info.index)
                )
            cache[split] = records
        return cache[split]

    def verify_files(self, split: str) -> list[ImageRecord]:
        """List ``split`` and check that every image it names exists; return the records.

        ``check_layout`` only looks at the list files, so a half-extracted image archive (lists
        present, images cut off) would otherwise surface one image at a time, deep into a run.
        Each image folder is listed once instead of stating every file, which keeps this cheap
        for tens of thousands of images. It checks presence, not decodability: decoding is what
        :meth:`open_image` does, lazily.
        """
        records = self.images(split)
        present: dict[Path, set[str]] = {}
        missing = []
        for record in records:
            folder = record.path.parent
            if folder not in present:
                present[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
            if record.path.name not in present[folder]:
                missing.append(record.key)
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            msg = (
                f"{self.title}: {len(missing)} of the {len(records)} {split} images listed under "
                f"{self.root} are missing ({', '.join(missing[:3])}{more}); the image archive was "
                f"only partly extracted, so extract it again ({self.download_hint})"
            )
            raise DatasetNotFoundError(msg)
        return records

    def open_image(self, record: ImageRecord) -> Image.Image:
        """Decode one image as RGB, applying the dataset's usual preprocessing (e.g. crops).

        Raises :class:`CorruptImageError` for a missing, truncated or non-image file, so callers
        can record the image as skipped and go on.
        """
        try:
            with Image.open(record.path) as image:
                image.load()
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as err:
            msg = f"{record.path}: cannot decode image ({err}); the file is corrupt or truncated"
            raise CorruptImageError(msg) from err
        return self._postprocess(rgb)

    @property
    def edits_pixels(self) -> bool:
        """Whether :meth:`open_image` changes an image beyond decoding it (e.g. a crop). When it
        does not, a teacher client may send the file's own bytes instead of re-encoding it."""
        return type(self)._postprocess is not Source._postprocess

    def _postprocess(self, image: Image.Image) -> Image.Image:
        """Dataset-specific fix-ups applied after decoding; identity unless overridden."""
        return image

    @abstractmethod
    def _read_split(self, split: str) -> list[tuple[str, str]]:
        """Parse the official files into ``(path relative to root, official label)`` pairs.

        The official label is the string ``annotations/<name>/classes.jsonl`` stores as
        ``label``. Raise :class:`DatasetNotFoundError` for malformed files.
        """
