"""CUB-200-2011 (200 bird species) as ``CUB_200_2011.tgz`` extracts.

``root`` is the ``CUB_200_2011`` folder. The official split is ``train_test_split.txt``
(``is_training`` 1 = train, 0 = test); ``train`` is therefore the official train half, the split
the sampler draws from by default. Class labels are the ``classes.txt`` names
(``001.Black_footed_Albatross``), which are also the image folder names.
"""

from __future__ import annotations

from typing import ClassVar

from cotforge.data._official import layout_error, parse_int, read_mapping
from cotforge.data.base import Source

_IS_TRAINING = {"train": "1", "test": "0"}


class CubSource(Source):
    """CUB-200-2011: ``images/<class>/<file>.jpg`` joined through the id-keyed text lists."""

    name: ClassVar[str] = "cub"
    title: ClassVar[str] = "CUB-200-2011"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    required_files: ClassVar[tuple[str, ...]] = (
        "images",
        "images.txt",
        "image_class_labels.txt",
        "classes.txt",
        "train_test_split.txt",
    )
    download_hint: ClassVar[str] = (
        "download CUB_200_2011.tgz from https://data.caltech.edu/records/65de6-vp158, extract "
        "it, and pass the CUB_200_2011 folder as the root"
    )

    def _read_split(self, split: str) -> list[tuple[str, str]]:
        paths = self._mapping("images.txt", "<image id> <path>")
        class_of = self._mapping("image_class_labels.txt", "<image id> <class id>")
        is_training = self._mapping("train_test_split.txt", "<image id> <is_training 1|0>")
        class_names = self._mapping("classes.txt", "<class id> <class name>")
        pairs = []
        for image_id, rel_path in paths.items():
            flag = self._lookup(is_training, image_id, "train_test_split.txt", "image")
            if flag not in ("0", "1"):
                path = self.root / "train_test_split.txt"
                raise layout_error(self.title, path, f"has is_training {flag!r} (expected 1 or 0)")
            if flag != _IS_TRAINING[split]:
                continue
            raw_class = self._lookup(class_of, image_id, "image_class_labels.txt", "image")
            labels_path = self.root / "image_class_labels.txt"
            class_id = str(parse_int(self.title, labels_path, raw_class, what="class id"))
            label = self._lookup(class_names, class_id, "classes.txt", "class")
            pairs.append((f"images/{rel_path}", label))
        return pairs

    def _mapping(self, filename: str, expected: str) -> dict[str, str]:
        """One id-keyed list; ids must be numbers and are normalised (``007`` is ``7``)."""
        path = self.root / filename
        raw = read_mapping(self.title, path, expected=expected)
        return {
            str(parse_int(self.title, path, key, what="id")): value for key, value in raw.items()
        }

    def _lookup(self, mapping: dict[str, str], key: str, filename: str, what: str) -> str:
        """``mapping[key]``, or the layout error naming the list that lacks it."""
        if key not in mapping:
            path = self.root / filename
            raise layout_error(self.title, path, f"does not list {what} {key}")
        return mapping[key]
