"""Oxford-IIIT Pet (37 cat and dog breeds) as ``images.tar.gz`` and ``annotations.tar.gz``
extract.

``root`` holds ``images/<Breed>_<n>.jpg`` and ``annotations/{trainval,test}.txt``, lines
``<name> <class id> <species> <breed id>``. The dataset's official splits are ``trainval`` and
``test``; there is no separate official train list, so ``trainval`` is exposed under the name
``train`` (the split the sampler draws from by default) rather than twice under two names, which
would give one image two ids.

A class label is the breed prefix of the image name (``Abyssinian``, ``american_bulldog``; cats
are capitalised). The class id on the same line must agree with it, or the list belongs to
another copy of the images.
"""

from __future__ import annotations

from typing import ClassVar

from cotforge.data._official import layout_error, parse_int, read_lines
from cotforge.data.base import Source

_LIST_FILE = {"train": "trainval.txt", "test": "test.txt"}


class PetsSource(Source):
    """Oxford-IIIT Pet: flat ``images/`` folder, breed from the file name, split from text lists."""

    name: ClassVar[str] = "pets"
    title: ClassVar[str] = "Oxford-IIIT Pet"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    required_files: ClassVar[tuple[str, ...]] = (
        "images",
        "annotations/trainval.txt",
        "annotations/test.txt",
    )
    download_hint: ClassVar[str] = (
        "download images.tar.gz and annotations.tar.gz from "
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ and extract both into one folder (it gets "
        "images/ and annotations/), then pass that folder as the root"
    )

    def _read_split(self, split: str) -> list[tuple[str, str]]:
        path = self.root / "annotations" / _LIST_FILE[split]
        by_label = self.annotations.by_label
        pairs = []
        for number, line in read_lines(self.title, path):
            fields = line.split()
            breed, _, suffix = fields[0].rpartition("_")
            if len(fields) != 4 or not breed or not suffix:
                raise layout_error(
                    self.title,
                    path,
                    f"line {number} is malformed ({line!r}; expected "
                    "'<Breed>_<n> <class id> <species> <breed id>')",
                )
            class_id = parse_int(self.title, path, fields[1], what="class id")
            info = by_label.get(breed)
            if info is not None and info.index != class_id - 1:
                raise layout_error(
                    self.title,
                    path,
                    f"gives {fields[0]} class id {class_id}, but breed {breed} is class "
                    f"{info.index + 1}",
                )
            pairs.append((f"images/{fields[0]}.jpg", breed))
        return pairs
