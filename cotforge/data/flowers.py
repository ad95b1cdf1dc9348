"""Oxford Flowers-102 as its three downloads give it: ``102flowers.tgz``, ``imagelabels.mat``,
``setid.mat``.

``root`` holds ``jpg/image_<nnnnn>.jpg`` and the two ``.mat`` files. Splits are the official
``train`` (the sampler's default; 10 images per class), ``val`` (10 per class) and ``test`` (the
rest), from ``setid.mat``'s ``trnid``, ``valid`` and ``tstid``. The official files name no
classes, so a class label is the label number as a string (``"1"`` .. ``"102"``); display names
come from ``annotations/flowers``.
"""

from __future__ import annotations

from typing import ClassVar

from cotforge.data._official import layout_error, load_mat, mat_ints
from cotforge.data.base import Source

_SETID_VARIABLE = {"train": "trnid", "val": "valid", "test": "tstid"}


class FlowersSource(Source):
    """Oxford Flowers-102: numbered images, labels and split ids in MATLAB vectors."""

    name: ClassVar[str] = "flowers"
    title: ClassVar[str] = "Oxford Flowers-102"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    required_files: ClassVar[tuple[str, ...]] = ("jpg", "imagelabels.mat", "setid.mat")
    download_hint: ClassVar[str] = (
        "download 102flowers.tgz, imagelabels.mat and setid.mat from "
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into one folder, extract the .tgz "
        "there (it makes jpg/), and pass that folder as the root"
    )

    def _read_split(self, split: str) -> list[tuple[str, str]]:
        labels_path = self.root / "imagelabels.mat"
        labels = mat_ints(
            self.title,
            labels_path,
            load_mat(self.title, labels_path, ["labels"])["labels"],
            variable="labels",
        )
        setid_path = self.root / "setid.mat"
        variable = _SETID_VARIABLE[split]
        numbers = mat_ints(
            self.title,
            setid_path,
            load_mat(self.title, setid_path, [variable])[variable],
            variable=variable,
        )
        pairs = []
        for number in numbers:
            if not 1 <= number <= len(labels):
                raise layout_error(
                    self.title,
                    setid_path,
                    f"lists image {number} in {variable}, but {labels_path.name} labels only "
                    f"{len(labels)} images",
                )
            pairs.append((f"jpg/image_{number:05d}.jpg", str(labels[number - 1])))
        return pairs
