"""The shipped ``annotations/`` against the Fine-R1 manifests they were built from.

Display names and the seen/unseen split must agree with the paper's manifests exactly, because
prompts, scoring and evaluation compare text against them; labels and order must have the shape
of each dataset's official files, because the loaders parse those files against them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from cotforge.data.annotations import Annotations, annotations_dir, load_annotations
from cotforge.errors import ConfigError

# registry name -> (manifest prefix, super-category, classes seen, classes unseen)
DATASETS = {
    "aircraft": ("aircraft", "aircraft", 60, 40),
    "cub": ("bird", "bird", 120, 80),
    "cars": ("car", "car", 117, 79),
    "dogs": ("dog", "dog", 72, 48),
    "flowers": ("flower", "flower", 61, 41),
    "pets": ("pet", "pet", 22, 15),
}
REPO = Path(__file__).resolve().parents[1]


@cache
def manifest_rows(name: str, split: str) -> tuple[dict, ...]:
    prefix = DATASETS[name][0]
    path = annotations_dir() / "fine_r1_eval" / f"{prefix}_{split}.jsonl"
    with path.open(encoding="utf-8") as lines:
        return tuple(json.loads(line) for line in lines)


def ground_truths(name: str, split: str) -> set[str]:
    return {row["ground_truth"] for row in manifest_rows(name, split)}


def image_paths(name: str) -> dict[str, set[str]]:
    """Display name -> image paths, over both manifests."""
    paths: dict[str, set[str]] = {}
    for split in ("seen", "unseen"):
        for row in manifest_rows(name, split):
            paths.setdefault(row["ground_truth"], set()).add(row["image_path"])
    return paths


def alias_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.casefold())


@pytest.fixture(params=sorted(DATASETS))
def dataset(request: pytest.FixtureRequest) -> Annotations:
    return load_annotations(request.param)


def test_names_are_the_manifest_ground_truths(dataset: Annotations) -> None:
    truths = ground_truths(dataset.name, "seen") | ground_truths(dataset.name, "unseen")
    assert {info.name for info in dataset.classes} == truths
    assert len(dataset.by_name) == len(dataset.classes)


def test_paper_split_is_the_manifest_each_class_appears_in(dataset: Annotations) -> None:
    seen, unseen = ground_truths(dataset.name, "seen"), ground_truths(dataset.name, "unseen")
    assert not seen & unseen
    for info in dataset.classes:
        expected = "seen" if info.name in seen else "unseen"
        assert info.paper_split == expected, info.name


def test_split_counts_match_the_paper(dataset: Annotations) -> None:
    _, _, n_seen, n_unseen = DATASETS[dataset.name]
    counts = Counter(info.paper_split for info in dataset.classes)
    assert counts == {"seen": n_seen, "unseen": n_unseen}


def test_every_option_is_a_class(dataset: Annotations) -> None:
    options = {
        option
        for split in ("seen", "unseen")
        for row in manifest_rows(dataset.name, split)
        for option in row["options"]
    }
    assert options - dataset.by_name.keys() == set()


def test_indexes_are_official_order_and_labels_unique(dataset: Annotations) -> None:
    assert [info.index for info in dataset.classes] == list(range(len(dataset.classes)))
    assert len(dataset.by_label) == len(dataset.classes)


def test_aliases_name_one_class_only(dataset: Annotations) -> None:
    owner: dict[str, str] = {}
    for info in dataset.classes:
        assert info.name not in info.aliases
        assert len(set(info.aliases)) == len(info.aliases), info.name
        for text in {alias_key(t) for t in (info.name, *info.aliases)}:
            assert owner.setdefault(text, info.name) == info.name, (text, info.name)


def test_metadata_and_hierarchy_shape(dataset: Annotations) -> None:
    assert dataset.super_category == DATASETS[dataset.name][1]
    assert dataset.hierarchy_levels
    assert dataset.hierarchy_source
    for info in dataset.classes:
        assert len(info.hierarchy) == len(dataset.hierarchy_levels), info.name
        assert all(node.strip() for node in info.hierarchy), info.name


def test_aircraft_labels_are_official_variants() -> None:
    aircraft = load_annotations("aircraft")
    assert len(aircraft.classes) == 100
    assert [c.label for c in aircraft.classes[:3]] == ["707-320", "727-200", "737-200"]
    assert aircraft.classes[-1].label == "Yak-42"
    for info in aircraft.classes:
        assert info.name in {info.label, f"Boeing {info.label}", f"Airbus {info.label}"}
        if info.name != info.label:
            assert info.label in info.aliases
    assert len({c.hierarchy[1] for c in aircraft.classes}) == 70
    assert len({c.hierarchy[0] for c in aircraft.classes}) == 30
    assert aircraft.by_label["A321"].hierarchy == ("Airbus", "A320")
    assert aircraft.by_label["Cessna 560"].hierarchy == ("Cessna", "Cessna Citation")
    assert aircraft.by_label["Model B200"].hierarchy == ("Beechcraft", "King Air")
    assert aircraft.by_label["CRJ-900"].hierarchy == ("Canadair", "CRJ-700")
    assert aircraft.by_label["DHC-8-300"].hierarchy == ("de Havilland", "Dash 8")


def test_cub_labels_are_the_image_folders() -> None:
    cub = load_annotations("cub")
    paths = image_paths("cub")
    for info in cub.classes:
        assert {p.split("/")[-2] for p in paths[info.name]} == {info.label}
        assert re.fullmatch(r"\d{3}\.\w+", info.label), info.label
        assert int(info.label[:3]) == info.index + 1
    assert cub.classes[0].label == "001.Black_footed_Albatross"


def test_dogs_labels_are_the_image_folders_in_sorted_order() -> None:
    dogs = load_annotations("dogs")
    paths = image_paths("dogs")
    for info in dogs.classes:
        assert {p.split("/")[-2] for p in paths[info.name]} == {info.label}
        assert re.fullmatch(r"n\d{8}-\S+", info.label), info.label
    labels = [info.label for info in dogs.classes]
    assert labels == sorted(labels)
    assert labels[0] == "n02085620-Chihuahua"


def test_pets_labels_are_the_file_name_breeds() -> None:
    pets = load_annotations("pets")
    paths = image_paths("pets")
    for info in pets.classes:
        prefixes = {p.rsplit("/", 1)[-1].rsplit("_", 1)[0] for p in paths[info.name]}
        assert prefixes == {info.label}
        species = "cat" if info.label[0].isupper() else "dog"
        assert info.hierarchy == (species,), info.label
    labels = [info.label for info in pets.classes]
    assert labels == sorted(labels, key=str.lower)
    assert (labels[0], labels[-1]) == ("Abyssinian", "yorkshire_terrier")
    assert Counter(info.hierarchy[0] for info in pets.classes) == {"cat": 12, "dog": 25}


def test_cars_follow_the_devkit_order() -> None:
    cars = load_annotations("cars")
    assert cars.classes[0].label == "AM General Hummer SUV 2000"
    assert [c.name for c in cars.classes[1:6]] == [
        "Acura RL Sedan 2012",
        "Acura TL Sedan 2012",
        "Acura TL Type-S 2008",
        "Acura TSX Sedan 2012",
        "Acura Integra Type R 2001",
    ]
    assert cars.classes[-1].label == "smart fortwo Convertible 2012"
    assert all(info.label == info.name for info in cars.classes)
    assert cars.by_label["Land Rover LR2 SUV 2012"].hierarchy == ("Land Rover", "LR2", "SUV")


def test_flowers_labels_are_the_official_numbers() -> None:
    flowers = load_annotations("flowers")
    assert [info.label for info in flowers.classes] == [str(i) for i in range(1, 103)]
    assert [c.name for c in flowers.classes[:4]] == [
        "pink primrose",
        "hard-leaved pocket orchid",
        "canterbury bells",
        "sweet pea",
    ]
    assert flowers.classes[4].name == "english marigold"
    assert flowers.classes[101].name == "blackberry lily"
    assert "globe-flower" in flowers.by_name["globe flower"].aliases


def test_random_split_is_reproducible_and_respects_the_fraction(dataset: Annotations) -> None:
    first = dataset.split(mode="random", unseen_fraction=0.4, seed=7)
    assert first == dataset.split(mode="random", unseen_fraction=0.4, seed=7)
    assert first != dataset.split(mode="random", unseen_fraction=0.4, seed=8)
    assert sorted(first) == [info.index for info in dataset.classes]
    assert Counter(first.values())["unseen"] == round(0.4 * len(dataset.classes))


def test_paper_split_mode_returns_the_manifest_split(dataset: Annotations) -> None:
    split = dataset.split(mode="paper")
    assert split == {info.index: info.paper_split for info in dataset.classes}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_random_split_rejects_a_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match="unseen-fraction"):
        load_annotations("pets").split(mode="random", unseen_fraction=fraction, seed=0)


def test_builder_reproduces_the_shipped_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_annotations.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in DATASETS:
        for file in ("dataset.json", "classes.jsonl"):
            built = (tmp_path / name / file).read_bytes()
            assert built == (REPO / "annotations" / name / file).read_bytes(), f"{name}/{file}"
