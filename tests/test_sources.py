"""The six dataset loaders against generated copies of their official on-disk layouts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from cotforge.data.aircraft import AircraftSource
from cotforge.data.annotations import load_annotations
from cotforge.data.base import Source
from cotforge.data.cub import CubSource
from cotforge.data.registry import (
    ALIASES,
    SOURCES,
    canonical_name,
    dataset_names,
    get_source,
)
from cotforge.errors import CorruptImageError, DatasetNotFoundError, UnknownDatasetError
from tests.fixtures.fgvr_layouts import BANNER_ROWS, HEIGHT, WIDTH, LayoutInfo

NAMES = ("aircraft", "cub", "cars", "dogs", "flowers", "pets")
Layout = Callable[..., LayoutInfo]


def _source(info: LayoutInfo) -> Source:
    return get_source(info.name, info.root)


def _close(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    """JPEG shifts colours a little; a different class is far off."""
    return max(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 40


@pytest.mark.parametrize("name", NAMES)
def test_splits_list_the_official_images_with_their_classes(
    official_layout: Layout, name: str
) -> None:
    info = official_layout(name)
    source = _source(info)
    assert "train" in source.splits
    assert set(source.splits) == set(info.records)
    for split in source.splits:
        records = source.images(split)
        assert [(r.key, r.class_index) for r in records] == info.records[split]
    used = {c.index for c in info.classes}
    assert {c.paper_split for c in info.classes} == {"seen", "unseen"}
    assert {r.class_index for r in source.images("train")} == used


@pytest.mark.parametrize("name", NAMES)
def test_keys_are_unique_relative_and_make_the_image_id(official_layout: Layout, name: str) -> None:
    info = official_layout(name)
    source = _source(info)
    for split in source.splits:
        records = source.images(split)
        keys = [r.key for r in records]
        assert len(set(keys)) == len(keys)
        for record in records:
            assert not Path(record.key).is_absolute()
            assert ".." not in Path(record.key).parts
            assert "\\" not in record.key
            assert record.path == info.root / record.key
            assert record.path.is_file()
            assert record.image_id == f"{name}/{split}/{record.key}"
            assert record.dataset == name
            assert record.split == split


@pytest.mark.parametrize("name", NAMES)
def test_open_image_gives_the_listed_file_as_rgb(official_layout: Layout, name: str) -> None:
    info = official_layout(name)
    source = _source(info)
    for split in source.splits:
        for record in source.images(split):
            image = source.open_image(record)
            assert image.mode == "RGB"
            assert image.size == (WIDTH, HEIGHT)
            colour = info.colours[record.class_index]
            # Top-left and bottom-left corners: the class colour, so the key found the right file
            # and (for aircraft) the white banner at the bottom is gone.
            assert _close(image.getpixel((2, 2)), colour)
            assert _close(image.getpixel((2, HEIGHT - 2)), colour)


def test_aircraft_crop_removes_exactly_the_banner(official_layout: Layout) -> None:
    info = official_layout("aircraft")
    source = _source(info)
    record = source.images("test")[0]
    with Image.open(record.path) as raw:
        assert raw.size == (WIDTH, HEIGHT + BANNER_ROWS)
        raw_rgb = raw.convert("RGB")
    cropped = source.open_image(record)
    assert cropped.size == (WIDTH, raw_rgb.height - BANNER_ROWS)
    assert np.array_equal(np.asarray(cropped), np.asarray(raw_rgb)[:HEIGHT])


@pytest.mark.parametrize("name", NAMES)
def test_corrupt_images_raise_corrupt_image_error(official_layout: Layout, name: str) -> None:
    info = official_layout(name, corrupt=2)
    assert len(info.corrupt_keys) == 2
    source = _source(info)
    for record in source.images("train"):
        if record.key in info.corrupt_keys:
            with pytest.raises(CorruptImageError, match=record.key.split("/")[-1]):
                source.open_image(record)
        else:
            assert source.open_image(record).mode == "RGB"


@pytest.mark.parametrize("name", NAMES)
def test_each_missing_required_file_is_named(official_layout: Layout, name: str) -> None:
    info = official_layout(name)
    for rel in SOURCES[name].required_files:
        target = info.root / rel
        aside = info.root.with_name(info.root.name + "-aside")
        target.rename(aside)
        try:
            with pytest.raises(DatasetNotFoundError, match=rel) as err:
                _source(info).images("train")
            assert SOURCES[name].download_hint in str(err.value)
        finally:
            aside.rename(target)
    assert _source(info).images("train")


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_root_says_where_to_get_the_dataset(tmp_path: Path, name: str) -> None:
    source = get_source(name, tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match="does not exist") as err:
        source.images("train")
    assert source.download_hint in str(err.value)


def test_cars_hint_says_the_host_is_gone_and_lists_the_files() -> None:
    hint = SOURCES["cars"].download_hint
    for needed in (
        "gone",
        "mirror",
        "cars_train/",
        "cars_test/",
        "devkit/cars_meta.mat",
        "devkit/cars_train_annos.mat",
        "cars_test_annos_withlabels.mat",
    ):
        assert needed in hint


def test_cars_missing_test_labels_names_the_separate_file(official_layout: Layout) -> None:
    info = official_layout("cars")
    (info.root / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="separately published test-label file"):
        _source(info).images("test")


def test_cars_test_labels_are_found_in_devkit(official_layout: Layout) -> None:
    info = official_layout("cars")
    labels = info.root / "cars_test_annos_withlabels.mat"
    labels.rename(info.root / "devkit" / labels.name)
    records = _source(info).images("test")
    assert [(r.key, r.class_index) for r in records] == info.records["test"]


def test_cars_train_and_test_file_names_collide_but_keys_do_not(official_layout: Layout) -> None:
    info = official_layout("cars")
    source = _source(info)
    train, test = source.images("train"), source.images("test")
    assert {r.path.name for r in train} & {r.path.name for r in test}
    assert not {r.key for r in train} & {r.key for r in test}
    assert not {r.image_id for r in train} & {r.image_id for r in test}
    first_train = next(r for r in train if r.path.name == "00001.jpg")
    first_test = next(r for r in test if r.path.name == "00001.jpg")
    assert first_train.key == "cars_train/00001.jpg"
    assert first_test.key == "cars_test/00001.jpg"


@pytest.mark.parametrize("filename", ["train_list.mat", "test_list.mat"])
def test_dogs_lists_are_found_in_lists_folder_or_root(
    official_layout: Layout, filename: str
) -> None:
    info = official_layout("dogs")
    assert (info.root / "lists" / filename).is_file()
    for name in ("train_list.mat", "test_list.mat", "file_list.mat"):
        (info.root / "lists" / name).rename(info.root / name)  # flat, as lists.tar extracts
    source = _source(info)
    for split in source.splits:
        assert [(r.key, r.class_index) for r in source.images(split)] == info.records[split]
    (info.root / filename).unlink()
    with pytest.raises(DatasetNotFoundError, match=f"{filename} \\(in the root or lists/\\)"):
        _source(info).images("train")


# --- damaged files: each names the file ------------------------------------------------------


def _edit_text(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(f"{line}\n" for line in edit(lines)), encoding="utf-8")


def _edit_mat(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    mat = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    edit(mat)
    savemat(path, mat)


def _first_data_line(lines: list[str], replace: Callable[[list[str]], list[str]]) -> list[str]:
    """Apply ``replace`` to the whitespace-split fields of the first non-comment line."""
    position = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    lines[position] = " ".join(replace(lines[position].split()))
    return lines


def _set_struct(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(mat: dict[str, Any]) -> None:
        mat["annotations"][field][0, 0] = np.array([[value]])

    return edit


def _drop_struct_field(mat: dict[str, Any]) -> None:
    old = mat["annotations"]
    fields = [name for name in old.dtype.names if name != "class"]
    new = np.empty(old.shape, dtype=[(name, object) for name in fields])
    for name in fields:
        new[name] = old[name]
    mat["annotations"] = new


def _swap_dog_label(mat: dict[str, Any]) -> None:
    mat["labels"][0, 0] = mat["labels"][-1, 0]


def _short_dog_labels(mat: dict[str, Any]) -> None:
    mat["labels"] = mat["labels"][:-1]


def _pets_wrong_class_id(fields: list[str]) -> list[str]:
    return [fields[0], str(int(fields[1]) % 37 + 1), *fields[2:]]


MALFORMED: list[tuple[str, str, Callable[[Path], None]]] = [
    (
        "aircraft",
        "images_variant_train.txt",
        lambda root: _edit_text(
            root / "data/images_variant_train.txt", lambda lines: [*lines, "1234567"]
        ),
    ),
    (
        "cub",
        "train_test_split.txt",
        lambda root: _edit_text(
            root / "train_test_split.txt",
            lambda lines: _first_data_line(lines, lambda f: [f[0], "2"]),
        ),
    ),
    (
        "cub",
        "image_class_labels.txt",
        lambda root: _edit_text(root / "image_class_labels.txt", lambda lines: lines[1:]),
    ),
    (
        "cub",
        "images.txt",
        lambda root: _edit_text(root / "images.txt", lambda lines: [*lines, "x y"]),
    ),
    (
        "cars",
        "cars_meta.mat",
        lambda root: (root / "devkit/cars_meta.mat").write_bytes(b"not a mat file"),
    ),
    (
        "cars",
        "cars_meta.mat",
        lambda root: savemat(root / "devkit/cars_meta.mat", {"class_names": np.arange(3.0)}),
    ),
    (
        "cars",
        "cars_train_annos.mat",
        lambda root: _edit_mat(root / "devkit/cars_train_annos.mat", _set_struct("class", 0)),
    ),
    (
        "cars",
        "cars_train_annos.mat",
        lambda root: _edit_mat(root / "devkit/cars_train_annos.mat", _drop_struct_field),
    ),
    (
        "cars",
        "cars_train_annos.mat",
        lambda root: savemat(root / "devkit/cars_train_annos.mat", {"annos": np.arange(3.0)}),
    ),
    (
        "dogs",
        "train_list.mat",
        lambda root: _edit_mat(root / "lists/train_list.mat", _swap_dog_label),
    ),
    (
        "dogs",
        "train_list.mat",
        lambda root: _edit_mat(root / "lists/train_list.mat", _short_dog_labels),
    ),
    (
        "flowers",
        "setid.mat",
        lambda root: _edit_mat(
            root / "setid.mat", lambda mat: mat["trnid"].__setitem__((0, 0), 9999)
        ),
    ),
    (
        "flowers",
        "imagelabels.mat",
        lambda root: _edit_mat(
            root / "imagelabels.mat", lambda mat: mat["labels"].__setitem__((0, 0), 1.5)
        ),
    ),
    (
        "pets",
        "trainval.txt",
        lambda root: _edit_text(
            root / "annotations/trainval.txt",
            lambda lines: _first_data_line(lines, lambda f: f[:3]),
        ),
    ),
    (
        "pets",
        "trainval.txt",
        lambda root: _edit_text(
            root / "annotations/trainval.txt",
            lambda lines: _first_data_line(lines, _pets_wrong_class_id),
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "filename", "damage"),
    MALFORMED,
    ids=[f"{name}-{filename}-{n}" for n, (name, filename, _) in enumerate(MALFORMED)],
)
def test_damaged_files_raise_a_layout_error_naming_the_file(
    official_layout: Layout, name: str, filename: str, damage: Callable[[Path], None]
) -> None:
    info = official_layout(name)
    damage(info.root)
    with pytest.raises(DatasetNotFoundError, match=filename) as err:
        _source(info).images("train")
    assert "extract it again from the official archive" in str(err.value)


# --- unknown labels ------------------------------------------------------------------------


def _rename_class(names: Any, old: str, new: str) -> None:
    for position in range(names.size):
        if str(names.flat[position].ravel()[0]) == old:
            names.flat[position] = np.array([new])


def _unknown_label(name: str, root: Path, info: LayoutInfo) -> str:
    """Make the train list name a class that is not in the dataset; return that label."""
    used = info.classes[0].label
    if name == "aircraft":
        _edit_text(
            root / "data/images_variant_train.txt",
            lambda lines: _first_data_line(lines, lambda f: [f[0], "Zeppelin", "NT"]),
        )
        return "Zeppelin NT"
    if name == "cub":
        _edit_text(
            root / "classes.txt",
            lambda lines: [line.replace(used, "201.Dodo") for line in lines],
        )
        return "201.Dodo"
    if name == "cars":
        _edit_mat(
            root / "devkit/cars_meta.mat",
            lambda mat: _rename_class(mat["class_names"], used, "DeLorean DMC-12 1981"),
        )
        return "DeLorean DMC-12 1981"
    if name == "dogs":
        _edit_mat(
            root / "lists/train_list.mat",
            lambda mat: mat["file_list"].__setitem__(
                (0, 0), np.array(["n09999999-Dire_wolf/n09999999_1.jpg"])
            ),
        )
        return "n09999999-Dire_wolf"
    if name == "flowers":
        train_number = int(loadmat(root / "setid.mat")["trnid"][0, 0])
        _edit_mat(
            root / "imagelabels.mat",
            lambda mat: mat["labels"].__setitem__((0, train_number - 1), 103),
        )
        return "103"
    _edit_text(
        root / "annotations/trainval.txt",
        lambda lines: _first_data_line(lines, lambda f: ["Dodo_1", *f[1:]]),
    )
    return "Dodo"


@pytest.mark.parametrize("name", NAMES)
def test_unknown_label_in_a_list_is_a_layout_error(official_layout: Layout, name: str) -> None:
    info = official_layout(name)
    label = _unknown_label(name, info.root, info)
    with pytest.raises(DatasetNotFoundError, match="not one of the") as err:
        _source(info).images("train")
    assert repr(label) in str(err.value)


# --- half-extracted folders ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_verify_files_finds_images_missing_from_a_partial_extraction(
    official_layout: Layout, name: str
) -> None:
    info = official_layout(name)
    source = _source(info)
    assert source.verify_files("test") == source.images("test")
    records = source.images("train")
    records[-1].path.unlink()
    if name in ("cub", "dogs"):  # a whole class folder missing, as when a tar stops early
        shutil.rmtree(records[0].path.parent)
    else:
        records[0].path.unlink()
    missing = [r.key for r in records if not r.path.exists()]
    with pytest.raises(DatasetNotFoundError, match="partly extracted") as err:
        source.verify_files("train")
    assert f"{len(missing)} of the {len(records)} train images" in str(err.value)
    assert records[0].key in str(err.value)
    assert (records[-1].key in str(err.value)) == (len(missing) <= 3)


# --- aircraft hierarchy --------------------------------------------------------------------


def test_aircraft_official_hierarchy_matches_annotations(official_layout: Layout) -> None:
    info = official_layout("aircraft")
    source = _source(info)
    assert isinstance(source, AircraftSource)
    hierarchy = source.official_hierarchy()
    assert set(hierarchy) == {c.label for c in info.classes}
    by_label = load_annotations("aircraft").by_label
    for variant, ancestors in hierarchy.items():
        assert ancestors == by_label[variant].hierarchy


def test_aircraft_hierarchy_rejects_a_variant_in_two_families(official_layout: Layout) -> None:
    info = official_layout("aircraft")
    families = {c.hierarchy[1] for c in load_annotations("aircraft").classes}
    other = next(family for family in sorted(families) if family != info.classes[0].hierarchy[1])
    first_id = info.records["test"][0][0].split("/")[-1].removesuffix(".jpg")
    _edit_text(
        info.root / "data/images_family_test.txt",
        lambda lines: [
            f"{first_id} {other}" if line.startswith(first_id) else line for line in lines
        ],
    )
    with pytest.raises(DatasetNotFoundError, match="under both"):
        AircraftSource(info.root).official_hierarchy()


# --- registry ------------------------------------------------------------------------------


def test_registry_names_and_aliases(tmp_path: Path) -> None:
    assert dataset_names() == list(NAMES)
    assert {SOURCES[name].name for name in NAMES} == set(NAMES)
    for alias, canonical in ALIASES.items():
        assert canonical_name(alias) == canonical
        assert type(get_source(alias, tmp_path)) is SOURCES[canonical]
    assert isinstance(get_source("bird", tmp_path), CubSource)
    assert get_source("pets", str(tmp_path)).root == tmp_path


def test_registry_passes_annotations_through(tmp_path: Path) -> None:
    annotations = load_annotations("cub")
    assert get_source("cub", tmp_path, annotations=annotations).annotations is annotations


@pytest.mark.parametrize("bad", ["x", "birds", "CUB", ""])
def test_unknown_dataset_lists_the_choices(tmp_path: Path, bad: str) -> None:
    expected = f"unknown dataset {bad!r}; choose one of aircraft, cub, cars, dogs, flowers, pets"
    with pytest.raises(UnknownDatasetError) as err:
        get_source(bad, tmp_path)
    assert str(err.value) == expected


def test_sources_match_their_annotations() -> None:
    for name, source_class in SOURCES.items():
        annotations = load_annotations(name)
        assert annotations.name == name
        assert [c.index for c in annotations.classes] == list(range(len(annotations.classes)))
        assert source_class.name == name
