"""The eval config's rows: official test images, closed-world options, the paper's manifests."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from cotforge.data.annotations import ClassInfo, load_annotations
from cotforge.data.base import Source
from cotforge.data.registry import get_source
from cotforge.errors import ConfigError, DatasetNotFoundError, PlanError
from cotforge.eval_set import (
    PAPER_IMAGE_ROOTS,
    EvalRow,
    ManifestMappingError,
    default_manifest_dir,
    eval_rows,
    manifest_word,
    official_key,
    paper_eval_rows,
)
from cotforge.questions import seed_questions
from tests.fixtures.fgvr_layouts import (
    _CAR_FIELDS,
    LayoutInfo,
    _dog_list,
    _struct_array,
    write_official_layout,
)

NAMES = ("aircraft", "cub", "cars", "dogs", "flowers", "pets")
Layout = Callable[..., LayoutInfo]


def _source(info: LayoutInfo) -> Source:
    return get_source(info.name, info.root)


def _positions(rows: Sequence[EvalRow]) -> Counter[int]:
    return Counter(row.options.index(row.answer) for row in rows)


def _assert_spread(rows: Sequence[EvalRow], options: int = 4) -> None:
    """The truth sits at every position about equally often (a fair order gives 1/options)."""
    counts = _positions(rows)
    assert set(counts) == set(range(options))
    for position in range(options):
        share = counts[position] / len(rows)
        assert 0.6 / options < share < 1.4 / options, (position, counts)


# --- eval_rows ---------------------------------------------------------------------------------


def test_rows_are_the_test_images_of_both_groups_in_order(official_layout: Layout) -> None:
    info = official_layout("aircraft", n_classes=6, test_per_class=3)
    source = _source(info)
    rows = list(eval_rows(source, seed=0))
    ann = source.annotations

    assert len(rows) == info.counts["test"] == 18
    assert sorted(r.record.key for r in rows) == sorted(k for k, _ in info.records["test"])
    assert all(r.record.split == "test" for r in rows)
    for row in rows:
        assert row.split == ann.classes[row.record.class_index].paper_split
    assert Counter(r.split for r in rows) == {"seen": 9, "unseen": 9}
    keys = [(r.split, r.record.class_index, r.record.key) for r in rows]
    assert keys == sorted(keys)


@pytest.mark.parametrize("name", NAMES)
def test_options_hold_the_truth_once_among_classes_of_its_group(
    official_layout: Layout, name: str
) -> None:
    source = _source(official_layout(name))
    ann = source.annotations
    split_of = {c.name: c.paper_split for c in ann.classes}
    rows = list(eval_rows(source, seed=3))
    assert rows
    for row in rows:
        truth = ann.classes[row.record.class_index]
        assert (row.answer, row.label, row.dataset) == (truth.name, truth.label, name)
        assert len(row.options) == 4
        assert len(set(row.options)) == 4
        assert row.options.count(row.answer) == 1
        assert all(option in ann.by_name for option in row.options)
        assert {split_of[option] for option in row.options} == {row.split}
        assert row.question in seed_questions(ann.super_category)


def test_distractors_are_the_nearest_classes_of_the_same_group(official_layout: Layout) -> None:
    source = _source(
        official_layout("aircraft", n_classes=None, train_per_class=1, test_per_class=1)
    )
    options = {row.answer: set(row.options) for row in eval_rows(source, seed=0)}
    # Seen 737 variants are each other's siblings ...
    assert options["Boeing 737-200"] == {
        "Boeing 737-200",
        "Boeing 737-400",
        "Boeing 737-500",
        "Boeing 737-700",
    }
    # ... while the unseen 737-300 has one unseen sibling, then other unseen Boeings, never a
    # seen 737 even though those are nearer in the tree.
    assert options["Boeing 737-300"] == {
        "Boeing 737-300",
        "Boeing 737-600",
        "Boeing 707-320",
        "Boeing 757-200",
    }


def test_a_given_strategy_picks_the_distractors(official_layout: Layout) -> None:
    class LastFirst:
        """Ranks the other classes by descending index: easy to predict, unlike any real one."""

        name = "last-first"

        def rank(self, classes: Sequence[ClassInfo]) -> dict[int, list[int]]:
            indices = sorted((c.index for c in classes), reverse=True)
            return {c.index: [i for i in indices if i != c.index] for c in classes}

    source = _source(official_layout("pets", n_classes=4))
    ann = source.annotations
    for row in eval_rows(source, seed=0, options=3, strategy=LastFirst()):
        group = [c.index for c in ann.classes if c.paper_split == row.split]
        expected = [i for i in sorted(group, reverse=True) if i != row.record.class_index][:2]
        assert set(row.options) == {row.answer, *(ann.classes[i].name for i in expected)}


def test_seeded_order_is_stable_and_the_seed_changes_it(official_layout: Layout) -> None:
    source = _source(official_layout("cub", n_classes=6, test_per_class=4))
    first = list(eval_rows(source, seed=7))
    again = list(eval_rows(get_source(source.name, source.root), seed=7))
    assert first == again
    other = list(eval_rows(source, seed=8))
    assert [set(r.options) for r in other] == [set(r.options) for r in first]
    assert [r.options for r in other] != [r.options for r in first]
    assert [r.question for r in other] == [r.question for r in first]


def test_truth_position_is_spread_not_first(official_layout: Layout) -> None:
    source = _source(official_layout("pets", n_classes=None, train_per_class=1, test_per_class=8))
    rows = list(eval_rows(source, seed=0))
    assert len(rows) == 37 * 8
    _assert_spread(rows)


def test_per_class_keeps_a_seeded_subset_with_the_same_rows(official_layout: Layout) -> None:
    source = _source(official_layout("flowers", n_classes=4, test_per_class=6))
    full = list(eval_rows(source, seed=0))
    capped = list(eval_rows(source, seed=0, per_class=2))
    assert Counter(r.record.class_index for r in capped) == {
        index: 2 for index in {r.record.class_index for r in full}
    }
    assert all(row in full for row in capped)
    assert capped == list(eval_rows(source, seed=0, per_class=2))
    reseeded = list(eval_rows(source, seed=1, per_class=2))
    assert {r.record.key for r in reseeded} != {r.record.key for r in capped}


def test_random_split_follows_the_annotations_split(official_layout: Layout) -> None:
    source = _source(official_layout("dogs", n_classes=8))
    split = source.annotations.split(mode="random", unseen_fraction=0.5, seed=4)
    rows = list(eval_rows(source, seed=0, split_mode="random", unseen_fraction=0.5, split_seed=4))
    assert rows
    names = {c.name: c.index for c in source.classes}
    for row in rows:
        assert row.split == split[row.record.class_index]
        assert {split[names[option]] for option in row.options} == {row.split}


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"options": 1}, ConfigError, "at least 2"),
        ({"options": 16}, PlanError, "unseen group has 15 classes"),
        ({"per_class": 0}, ConfigError, "per_class"),
        ({"split_mode": "halves"}, ConfigError, "split mode"),
    ],
)
def test_bad_options_fail_when_called(
    official_layout: Layout, options: dict[str, object], error: type[Exception], words: str
) -> None:
    source = _source(official_layout("pets"))
    with pytest.raises(error, match=words):
        eval_rows(source, seed=0, **options)  # type: ignore[arg-type]


def test_a_missing_test_image_fails_before_any_row(official_layout: Layout) -> None:
    info = official_layout("aircraft")
    key = info.records["test"][0][0]
    (info.root / key).unlink()
    with pytest.raises(DatasetNotFoundError, match=key):
        eval_rows(_source(info), seed=0)


# --- the paper's manifests ----------------------------------------------------------------------

_JPEG = io.BytesIO()
Image.new("RGB", (8, 8), (200, 40, 40)).save(_JPEG, format="JPEG")
JPEG = _JPEG.getvalue()


def _manifest(name: str, group: str) -> list[dict[str, object]]:
    path = default_manifest_dir() / f"{manifest_word(name)}_{group}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _subset(name: str, *, classes: int = 2, per_class: int = 2) -> dict[str, list[dict]]:
    """The first ``per_class`` lines of the first ``classes`` classes of each manifest file."""
    chosen: dict[str, list[dict]] = {}
    for group in ("seen", "unseen"):
        taken: Counter[str] = Counter()
        chosen[group] = []
        for row in _manifest(name, group):
            truth = str(row["ground_truth"])
            if taken[truth] < per_class and (truth in taken or len(taken) < classes):
                taken[truth] += 1
                chosen[group].append(row)
    return chosen


def _write_manifests(folder: Path, name: str, lines: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for group, rows in lines.items():
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"{manifest_word(name)}_{group}.jsonl").write_text(text, encoding="utf-8")
    return folder


def _write_test_split(name: str, root: Path, images: Sequence[tuple[str, ClassInfo]]) -> None:
    """Make ``images`` (official key, class) the official test split of the layout under
    ``root``, in the dataset's own list format, and write each file."""
    ann = load_annotations(name)
    for key, _ in images:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(JPEG)
    if name == "aircraft":
        ids = [(Path(key).stem, info) for key, info in images]
        for level, value in (
            ("variant", lambda i: i.label),
            ("manufacturer", lambda i: i.hierarchy[0]),
            ("family", lambda i: i.hierarchy[1]),
        ):
            lines = "".join(f"{image_id} {value(info)}\n" for image_id, info in ids)
            (root / "data" / f"images_{level}_test.txt").write_text(lines, encoding="utf-8")
    elif name == "pets":
        breed: dict[int, tuple[int, int]] = {}
        count = {1: 0, 2: 0}
        for info in ann.classes:
            species = 1 if info.label[0].isupper() else 2
            count[species] += 1
            breed[info.index] = (species, count[species])
        lines = "".join(
            f"{Path(key).stem} {info.index + 1} {breed[info.index][0]} {breed[info.index][1]}\n"
            for key, info in images
        )
        (root / "annotations" / "test.txt").write_text(lines, encoding="utf-8")
    elif name == "cub":
        listed = [
            (n, key.removeprefix("images/"), info) for n, (key, info) in enumerate(images, start=1)
        ]
        for filename, column in (
            ("images.txt", lambda rel, info: rel),
            ("image_class_labels.txt", lambda rel, info: info.index + 1),
            ("train_test_split.txt", lambda rel, info: 0),
        ):
            lines = "".join(f"{n} {column(rel, info)}\n" for n, rel, info in listed)
            (root / filename).write_text(lines, encoding="utf-8")
    elif name == "cars":
        entries = [(1, 1, 7, 7, info.index + 1, Path(key).name) for key, info in images]
        savemat(
            root / "cars_test_annos_withlabels.mat",
            {"annotations": _struct_array(entries, _CAR_FIELDS)},
        )
    elif name == "dogs":
        files = [key.removeprefix("Images/") for key, _ in images]
        savemat(
            root / "lists" / "test_list.mat",
            _dog_list(files, [info.index + 1 for _, info in images]),
        )
    elif name == "flowers":
        numbers = [int(Path(key).stem.removeprefix("image_")) for key, _ in images]
        labels = np.ones(max(numbers), dtype=np.float64)
        for number, (_, info) in zip(numbers, images, strict=True):
            labels[number - 1] = int(info.label)
        savemat(root / "imagelabels.mat", {"labels": labels.reshape(1, -1)})
        empty = np.zeros((1, 0), dtype=np.float64)
        savemat(
            root / "setid.mat",
            {"trnid": empty, "valid": empty, "tstid": np.array([numbers], dtype=np.float64)},
        )


def _paper_layout(name: str, root: Path, lines: dict[str, list[dict]]) -> Source:
    """An official layout whose test split holds exactly the manifest lines' images, at the keys
    the manifests name (the rest of the layout is the usual generated fixture)."""
    write_official_layout(name, root, n_classes=2, train_per_class=1)
    by_name = load_annotations(name).by_name
    images = [
        (official_key(name, str(row["image_path"])), by_name[str(row["ground_truth"])])
        for rows in lines.values()
        for row in rows
    ]
    _write_test_split(name, root, images)  # type: ignore[arg-type]
    return get_source(name, root)


@pytest.mark.parametrize(
    ("name", "example", "key"),
    [
        ("aircraft", "fgvc_aircraft/data/images/0116175.jpg", "data/images/0116175.jpg"),
        (
            "cub",
            "bird_200/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
            "images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
        ),
        ("cars", "stanford-cars/cars_test/00002.jpg", "cars_test/00002.jpg"),
        (
            "dogs",
            "dogs_120/Images/n02085936-Maltese_dog/n02085936_2760.jpg",
            "Images/n02085936-Maltese_dog/n02085936_2760.jpg",
        ),
        ("flowers", "flower102/jpg/image_05087.jpg", "jpg/image_05087.jpg"),
        ("pets", "oxford-pet/images/american_bulldog_203.jpg", "images/american_bulldog_203.jpg"),
    ],
)
def test_official_key_strips_the_papers_folder(name: str, example: str, key: str) -> None:
    assert official_key(name, example) == key
    assert official_key(name, key) is None
    assert official_key(name, PAPER_IMAGE_ROOTS[name]) is None


@pytest.mark.parametrize("name", NAMES)
def test_every_manifest_path_is_under_the_papers_folder(name: str) -> None:
    for group in ("seen", "unseen"):
        assert all(official_key(name, str(row["image_path"])) for row in _manifest(name, group))


@pytest.mark.parametrize("name", NAMES)
def test_paper_rows_map_manifest_images_onto_the_official_layout(tmp_path: Path, name: str) -> None:
    lines = _subset(name)
    source = _paper_layout(name, tmp_path / "root", lines)
    folder = _write_manifests(tmp_path / "eval", name, lines)
    rows = list(paper_eval_rows(source, folder, seed=0))
    expected = {
        official_key(name, str(row["image_path"])): (group, row)
        for group, group_rows in lines.items()
        for row in group_rows
    }
    assert len(rows) == len(expected) == 8
    for row in rows:
        group, line = expected[row.record.key]
        assert row.record.split == "test"
        assert row.record.path == source.root / row.record.key
        assert row.split == group
        assert (row.question, row.answer) == (line["question"], line["ground_truth"])
        assert sorted(row.options) == sorted(line["options"])  # type: ignore[arg-type]
        assert row.label == source.classes[row.record.class_index].label
        assert row.dataset == name
    keys = [(r.split, r.record.class_index, r.record.key) for r in rows]
    assert keys == sorted(keys)
    kept = list(paper_eval_rows(source, folder, keep_order=True))
    assert all(row.options == expected[row.record.key][1]["options"] for row in kept)


@pytest.mark.parametrize(("name", "counts"), [("aircraft", (2002, 1331)), ("pets", (2176, 1493))])
def test_whole_paper_manifests_map_and_lose_their_truth_first_bias(
    tmp_path: Path, name: str, counts: tuple[int, int]
) -> None:
    lines = {group: _manifest(name, group) for group in ("seen", "unseen")}
    source = _paper_layout(name, tmp_path, lines)
    rows = list(paper_eval_rows(source, seed=0))
    assert (Counter(r.split for r in rows)["seen"], Counter(r.split for r in rows)["unseen"]) == (
        counts
    )
    assert len({r.record.key for r in rows}) == sum(counts)
    _assert_spread(rows)
    assert set(_positions(list(paper_eval_rows(source, keep_order=True)))) == {0}
    assert [r.options for r in paper_eval_rows(source, seed=0)] == [r.options for r in rows]


def test_unmapped_manifest_images_are_all_reported(tmp_path: Path) -> None:
    lines = _subset("aircraft")
    source = _paper_layout("aircraft", tmp_path / "root", lines)
    seen = lines["seen"]
    not_in_layout = {**seen[0], "image_path": "fgvc_aircraft/data/images/9999999.jpg"}
    elsewhere = {**seen[0], "image_path": "bird_200/images/x/y.jpg"}
    wrong_truth = {**seen[1], "ground_truth": lines["unseen"][0]["ground_truth"]}
    broken = {"seen": [*seen[2:], not_in_layout, elsewhere, wrong_truth], "unseen": lines["unseen"]}
    folder = _write_manifests(tmp_path / "eval", "aircraft", broken)

    with pytest.raises(ManifestMappingError) as caught:
        paper_eval_rows(source, folder)
    problems = dict(caught.value.problems)
    assert set(problems) == {
        "fgvc_aircraft/data/images/9999999.jpg",
        "bird_200/images/x/y.jpg",
        seen[1]["image_path"],
    }
    assert (
        "not an image of the official test split"
        in problems["fgvc_aircraft/data/images/9999999.jpg"]
    )
    assert "fgvc_aircraft/" in problems["bird_200/images/x/y.jpg"]
    assert "official label" in problems[str(seen[1]["image_path"])]
    message = str(caught.value)
    assert "3 of the 9 images" in message
    assert "9999999.jpg" in message
    assert "\n" not in message
    assert isinstance(caught.value, DatasetNotFoundError)


def test_a_manifest_image_listed_twice_is_reported(tmp_path: Path) -> None:
    lines = _subset("pets")
    source = _paper_layout("pets", tmp_path / "root", lines)
    twice = {"seen": [*lines["seen"], lines["seen"][0]], "unseen": lines["unseen"]}
    folder = _write_manifests(tmp_path / "eval", "pets", twice)
    with pytest.raises(ManifestMappingError, match="more than once"):
        paper_eval_rows(source, folder)


def test_a_manifest_image_missing_on_disk_is_named(tmp_path: Path) -> None:
    lines = _subset("pets")
    source = _paper_layout("pets", tmp_path / "root", lines)
    folder = _write_manifests(tmp_path / "eval", "pets", lines)
    key = official_key("pets", str(lines["unseen"][1]["image_path"]))
    (source.root / str(key)).unlink()
    with pytest.raises(DatasetNotFoundError, match=str(key)):
        paper_eval_rows(source, folder)


def test_bad_manifest_files_name_file_and_line(tmp_path: Path) -> None:
    lines = _subset("pets")
    source = _paper_layout("pets", tmp_path / "root", lines)
    folder = _write_manifests(tmp_path / "eval", "pets", lines)
    seen_file = folder / "pet_seen.jsonl"

    seen_file.write_text(seen_file.read_text() + '{"image_path": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pet_seen\.jsonl:5 has fields"):
        paper_eval_rows(source, folder)
    seen_file.write_text(seen_file.read_text().replace('"options": [', '"options": [7, '))
    with pytest.raises(ConfigError, match=r"pet_seen\.jsonl:1 has a field that is not text"):
        paper_eval_rows(source, folder)
    seen_file.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pet_seen\.jsonl:1 is not a JSON object"):
        paper_eval_rows(source, folder)
    seen_file.unlink()
    with pytest.raises(ConfigError, match=r"pet_seen\.jsonl does not exist"):
        paper_eval_rows(source, folder)
