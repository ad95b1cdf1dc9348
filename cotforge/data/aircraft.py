"""FGVC-Aircraft 2013b, classified at the variant level (100 classes), as its archive extracts.

``root`` is the ``fgvc-aircraft-2013b`` folder, the one that contains ``data/``. Splits are the
official ``train``, ``val``, ``trainval`` and ``test`` lists; ``train`` (the default split the
sampler draws from) is the official train list, so ``val`` stays free for validation.
Every image carries a 20-pixel copyright banner at the bottom, which :meth:`_postprocess` crops
so the teacher and the student never see text that is not part of the aircraft.
"""

from __future__ import annotations

from typing import ClassVar

from PIL import Image

from cotforge.data._official import layout_error, read_mapping, read_pairs
from cotforge.data.base import Source

BANNER_ROWS = 20
"""Height in pixels of the copyright banner at the bottom of every FGVC-Aircraft image."""

_SPLITS = ("train", "val", "trainval", "test")
_HIERARCHY_SPLITS = ("trainval", "test")
"""Together these list every image once, so reading them covers every variant."""


class AircraftSource(Source):
    """FGVC-Aircraft 2013b variants: ``data/images/<id>.jpg`` and ``data/images_*_<split>.txt``."""

    name: ClassVar[str] = "aircraft"
    title: ClassVar[str] = "FGVC-Aircraft 2013b"
    splits: ClassVar[tuple[str, ...]] = _SPLITS
    required_files: ClassVar[tuple[str, ...]] = (
        "data/images",
        *(f"data/images_variant_{split}.txt" for split in _SPLITS),
        *(
            f"data/images_{level}_{split}.txt"
            for level in ("family", "manufacturer")
            for split in _HIERARCHY_SPLITS
        ),
    )
    download_hint: ClassVar[str] = (
        "download https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/"
        "fgvc-aircraft-2013b.tar.gz, extract it, and pass the fgvc-aircraft-2013b folder "
        "(the one that contains data/) as the root"
    )

    def _read_split(self, split: str) -> list[tuple[str, str]]:
        path = self.root / "data" / f"images_variant_{split}.txt"
        pairs = read_pairs(self.title, path, expected="<image id> <variant>")
        return [(f"data/images/{image_id}.jpg", variant) for image_id, variant in pairs]

    def _postprocess(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        return image.crop((0, 0, width, height - BANNER_ROWS))

    def official_hierarchy(self) -> dict[str, tuple[str, str]]:
        """Map each variant to its ``(manufacturer, family)`` as the official lists give them.

        The archive has no variant -> family table; the hierarchy exists only through the
        per-image family and manufacturer lists, so it is rebuilt by joining them on image id. A
        variant that the lists put under two families means the files do not belong together.
        """
        self.check_layout()
        hierarchy: dict[str, tuple[str, str]] = {}
        for split in _HIERARCHY_SPLITS:
            data = self.root / "data"
            variants = read_mapping(
                self.title, data / f"images_variant_{split}.txt", expected="<image id> <variant>"
            )
            levels = {
                level: read_mapping(
                    self.title,
                    data / f"images_{level}_{split}.txt",
                    expected=f"<image id> <{level}>",
                )
                for level in ("manufacturer", "family")
            }
            for image_id, variant in variants.items():
                ancestors = []
                for level, by_id in levels.items():
                    if image_id not in by_id:
                        path = data / f"images_{level}_{split}.txt"
                        raise layout_error(self.title, path, f"does not list image {image_id}")
                    ancestors.append(by_id[image_id])
                pair = (ancestors[0], ancestors[1])
                if hierarchy.setdefault(variant, pair) != pair:
                    path = data / f"images_family_{split}.txt"
                    raise layout_error(
                        self.title,
                        path,
                        f"and images_manufacturer_{split}.txt put variant {variant!r} under both "
                        f"{hierarchy[variant]} and {pair}",
                    )
        return hierarchy
