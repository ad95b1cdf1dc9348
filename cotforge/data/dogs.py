"""Stanford Dogs (120 breeds) as ``images.tar`` and ``lists.tar`` extract.

``root`` holds ``Images/<wnid>-<Breed>/<wnid>_<n>.jpg`` and the split lists ``train_list.mat`` and
``test_list.mat``. ``lists.tar`` extracts those straight into the folder it is unpacked in, while
the usual layout (and ``cotforge datasets download``) keeps them in ``lists/``; both are
accepted. Splits are the official ``train`` (the sampler's default) and ``test``.

A class label is the breed folder name (``n02085620-Chihuahua``). The lists also carry a number
(1..120, the folder's position in sorted order); the two must agree, or the lists belong to
another copy of the images.
"""

from __future__ import annotations

from typing import ClassVar

from cotforge.data._official import (
    first_existing,
    layout_error,
    load_mat,
    mat_ints,
    mat_strings,
)
from cotforge.data.base import Source


def _places(filename: str) -> tuple[str, str]:
    return (filename, f"lists/{filename}")


class DogsSource(Source):
    """Stanford Dogs: breed folders under ``Images/`` and MATLAB split lists."""

    name: ClassVar[str] = "dogs"
    title: ClassVar[str] = "Stanford Dogs"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    required_files: ClassVar[tuple[str, ...]] = ("Images",)
    download_hint: ClassVar[str] = (
        "download images.tar and lists.tar from http://vision.stanford.edu/aditya86/ImageNetDogs/ "
        "and extract both into one folder (train_list.mat and test_list.mat in it or in lists/), "
        "then pass that folder as the root"
    )

    def missing_files(self) -> list[str]:
        """``Images/`` plus the split lists, which may sit in the root or in ``lists/``."""
        missing = super().missing_files()
        for split in self.splits:
            filename = f"{split}_list.mat"
            if first_existing(self.root, _places(filename)) is None:
                missing.append(f"{filename} (in the root or lists/)")
        return missing

    def _read_split(self, split: str) -> list[tuple[str, str]]:
        filename = f"{split}_list.mat"
        path = first_existing(self.root, _places(filename)) or self.root / filename
        mat = load_mat(self.title, path, ["file_list", "labels"])
        files = mat_strings(self.title, path, mat["file_list"], variable="file_list")
        numbers = mat_ints(self.title, path, mat["labels"], variable="labels")
        if len(files) != len(numbers):
            raise layout_error(
                self.title, path, f"has {len(files)} files but {len(numbers)} labels"
            )
        by_label = self.annotations.by_label
        pairs = []
        for rel_path, number in zip(files, numbers, strict=True):
            folder, _, filename_part = rel_path.partition("/")
            if not filename_part:
                raise layout_error(
                    self.title, path, f"lists {rel_path!r}, which is not <breed folder>/<file>"
                )
            info = by_label.get(folder)
            if info is not None and info.index != number - 1:
                raise layout_error(
                    self.title,
                    path,
                    f"gives {rel_path} label {number}, but its folder is class {info.index + 1}",
                )
            pairs.append((f"Images/{rel_path}", folder))
        return pairs
