"""Stanford Cars (196 make/model/year classes) in the layout of its original archives.

``root`` holds ``cars_train/``, ``cars_test/`` and ``devkit/`` (from ``cars_train.tgz``,
``cars_test.tgz`` and ``car_devkit.tgz``) plus ``cars_test_annos_withlabels.mat``, the test labels
that were published separately from the devkit (accepted in the root or in ``devkit/``). The
original host is gone, so these files now come from mirrors. Splits are the official ``train``
(the sampler's default) and ``test``. Train and test reuse the same file names (``00001.jpg`` is
in both), so keys keep the folder: ``cars_train/00001.jpg`` and ``cars_test/00001.jpg``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cotforge.data._official import (
    first_existing,
    layout_error,
    load_mat,
    mat_strings,
    mat_structs,
)
from cotforge.data.base import Source

TEST_LABELS = "cars_test_annos_withlabels.mat"
_TEST_LABEL_PLACES = (TEST_LABELS, f"devkit/{TEST_LABELS}")
_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


class CarsSource(Source):
    """Stanford Cars: image folders per split, labels in MATLAB struct arrays."""

    name: ClassVar[str] = "cars"
    title: ClassVar[str] = "Stanford Cars"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    required_files: ClassVar[tuple[str, ...]] = (
        "cars_train",
        "cars_test",
        "devkit/cars_meta.mat",
        "devkit/cars_train_annos.mat",
    )
    download_hint: ClassVar[str] = (
        "the original host (ai.stanford.edu/~jkrause/cars) is gone, so get the official layout "
        "from a mirror: cars_train/ and cars_test/ (cars_train.tgz, cars_test.tgz), "
        "devkit/cars_meta.mat and devkit/cars_train_annos.mat (car_devkit.tgz), and "
        f"{TEST_LABELS} (the test labels, published separately; in the root or devkit/), "
        "all under one folder passed as the root"
    )

    def missing_files(self) -> list[str]:
        """The fixed files, plus the test-label file, which may sit in the root or devkit/."""
        missing = super().missing_files()
        if first_existing(self.root, _TEST_LABEL_PLACES) is None:
            missing.append(f"{TEST_LABELS} (the separately published test-label file)")
        return missing

    def _read_split(self, split: str) -> list[tuple[str, str]]:
        meta_path = self.root / "devkit" / "cars_meta.mat"
        meta = load_mat(self.title, meta_path, ["class_names"])
        class_names = mat_strings(
            self.title, meta_path, meta["class_names"], variable="class_names"
        )
        annos_path = self._annotations_path(split)
        annos = load_mat(self.title, annos_path, ["annotations"])
        rows = mat_structs(
            self.title, annos_path, annos["annotations"], variable="annotations", fields=_FIELDS
        )
        pairs = []
        for row in rows:
            class_id = row["class"]
            if not (isinstance(class_id, (int, float)) and class_id == int(class_id)):
                raise layout_error(self.title, annos_path, f"has class {class_id!r}, not a number")
            if not 1 <= class_id <= len(class_names):
                raise layout_error(
                    self.title,
                    annos_path,
                    f"has class {int(class_id)} for {row['fname']}, outside the "
                    f"{len(class_names)} classes of {meta_path.name}",
                )
            pairs.append((f"cars_{split}/{row['fname']}", class_names[int(class_id) - 1]))
        return pairs

    def _annotations_path(self, split: str) -> Path:
        if split == "train":
            return self.root / "devkit" / "cars_train_annos.mat"
        return first_existing(self.root, _TEST_LABEL_PLACES) or self.root / TEST_LABELS
