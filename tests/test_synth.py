"""``write_synthetic_aircraft``: the aircraft source reads it as the official layout, with the
real class names and hierarchy, and its images look like photos rather than flat colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotforge.data.annotations import load_annotations
from cotforge.data.registry import get_source
from cotforge.errors import ConfigError
from cotforge.testing.synth import BANNER_ROWS, HEIGHT, ROOT_NAME, WIDTH, write_synthetic_aircraft


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_aircraft(tmp_path_factory.mktemp("synth"), classes=5, images_per_class=6)


def test_the_registry_source_lists_every_split(synth_root: Path) -> None:
    assert synth_root.name == ROOT_NAME
    source = get_source("aircraft", synth_root)
    source.check_layout()
    counts = {split: len(source.verify_files(split)) for split in source.splits}
    assert counts == {"train": 20, "val": 5, "trainval": 25, "test": 5}
    for split in source.splits:
        assert {record.class_index for record in source.images(split)} == set(range(5))
    keys = [record.key for split in ("trainval", "test") for record in source.images(split)]
    assert len(keys) == len(set(keys)) == 30
    assert all(key.startswith("data/images/") and len(Path(key).stem) == 7 for key in keys)


def test_classes_and_hierarchy_are_the_official_first_ones(synth_root: Path) -> None:
    notes = load_annotations("aircraft")
    source = get_source("aircraft", synth_root)
    expected = {info.label: tuple(info.hierarchy) for info in notes.classes[:5]}
    assert source.official_hierarchy() == expected
    data = synth_root / "data"
    variants = data.joinpath("variants.txt").read_text(encoding="utf-8").splitlines()
    assert variants == [info.label for info in notes.classes[:5]]
    families = data.joinpath("families.txt").read_text(encoding="utf-8").splitlines()
    assert families == list(dict.fromkeys(info.hierarchy[1] for info in notes.classes[:5]))


def test_lists_are_sorted_by_image_id_like_the_archive(synth_root: Path) -> None:
    for path in (synth_root / "data").glob("images_*_*.txt"):
        ids = [line.split(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
        assert ids == sorted(ids), path.name


def test_images_are_photo_like_with_the_banner_cropped(synth_root: Path) -> None:
    source = get_source("aircraft", synth_root)
    records = source.images("train")
    raw = np.asarray(Image.open(records[0].path).convert("RGB"), dtype=np.float32)
    assert raw.shape == (HEIGHT + BANNER_ROWS, WIDTH, 3)
    assert raw[HEIGHT:].mean() > 200  # the white banner strip
    opened = [np.asarray(source.open_image(record), dtype=np.float32) for record in records[:4]]
    for pixels in opened:
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        assert pixels.std() > 20  # gradient, silhouette and noise, not a flat colour
        # Far more distinct colours than a flat fill plus JPEG ringing would give.
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000
    assert not np.array_equal(opened[0], opened[1])


def test_boxes_frame_the_aircraft_inside_the_image(synth_root: Path) -> None:
    lines = (synth_root / "data" / "images_box.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30
    for line in lines:
        x0, y0, x1, y1 = map(int, line.split()[1:])
        assert 1 <= x0 < x1 <= WIDTH and 1 <= y0 < y1 <= HEIGHT
        assert (x1 - x0) * (y1 - y0) > 0.05 * WIDTH * HEIGHT


def test_same_arguments_write_the_same_files(synth_root: Path, tmp_path: Path) -> None:
    again = write_synthetic_aircraft(tmp_path, classes=5, images_per_class=6)
    files = sorted(p.relative_to(synth_root) for p in synth_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (again / rel).read_bytes() == (synth_root / rel).read_bytes(), rel


def test_counts_split_like_the_official_lists(tmp_path: Path) -> None:
    root = write_synthetic_aircraft(tmp_path, classes=2, images_per_class=3, seed=7)
    source = get_source("aircraft", root)
    assert {split: len(source.images(split)) for split in source.splits} == {
        "train": 2,
        "val": 2,
        "trainval": 4,
        "test": 2,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"classes": 0}, "classes must be between 1 and 100; got 0"),
        ({"classes": 101}, "classes must be between 1 and 100; got 101"),
        ({"images_per_class": 2}, "images_per_class must be at least 3"),
    ],
)
def test_out_of_range_counts_are_refused(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        write_synthetic_aircraft(tmp_path, **options)
    assert not (tmp_path / ROOT_NAME).exists()


def test_never_writes_over_an_existing_dataset(tmp_path: Path) -> None:
    existing = tmp_path / ROOT_NAME / "data"
    existing.mkdir(parents=True)
    (existing / "variants.txt").write_text("707-320\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        write_synthetic_aircraft(tmp_path)
    assert [p.name for p in existing.iterdir()] == ["variants.txt"]
