"""Evaluation metrics, prompts, paper rows and the result tables, without a model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from cotforge.errors import ConfigError
from cotforge.eval.backends import parse_model
from cotforge.eval.metrics import (
    closed_inclusion,
    harmonic_mean,
    judge_output,
    relative_similarity,
    ss_rel,
    super_category,
)
from cotforge.eval.paper import paper_row
from cotforge.eval.prompts import render
from cotforge.eval.results import RunFigures, aggregate
from cotforge.eval.similarity import RelativeSimilarity, load_text_encoder
from cotforge.scoring import ClassMatcher

# --- SS_rel --------------------------------------------------------------------------------------


def test_ss_rel_on_hand_computed_vectors() -> None:
    truth = np.array([1.0, 0.0, 0.0])
    word = np.array([0.6, 0.8, 0.0])  # cos(word, truth) = 0.6
    halfway = np.array([0.8, 0.6, 0.0])  # cos = 0.8: (0.8 - 0.6) / (1 - 0.6) = 0.5
    assert ss_rel(halfway, truth, word) == pytest.approx(0.5)
    assert ss_rel(truth, truth, word) == pytest.approx(1.0)
    assert ss_rel(word, truth, word) == 0.0
    away = np.array([0.0, 0.0, 1.0])  # cos = 0, below the word's 0.6: clipped to 0
    assert ss_rel(away, truth, word) == 0.0
    near = np.array([0.9, np.sqrt(1 - 0.81), 0.0])  # cos = 0.9: 0.3 / 0.4 = 0.75
    assert ss_rel(near, truth, word) == pytest.approx(0.75)


def test_ss_rel_is_zero_when_the_word_equals_the_truth() -> None:
    assert relative_similarity(1.0, 1.0) == 0.0
    assert relative_similarity(0.9, 0.9999999) == 0.0


def test_super_category_words_for_all_six_datasets() -> None:
    """The released script finds only aircraft, car and flower by path (birds, dogs and pets
    fall back to 'object'); every dataset has its own word here, by any of its names."""
    expected = {
        "aircraft": "aircraft",
        "cub": "bird",
        "cars": "car",
        "dogs": "dog",
        "flowers": "flower",
        "pets": "pet",
    }
    assert {name: super_category(name) for name in expected} == expected
    for alias, word in (("bird", "bird"), ("car", "car"), ("dog", "dog"), ("pet", "pet")):
        assert super_category(alias) == word


class _TableEncoder:
    """A text encoder with fixed vectors, counting what it was asked to embed."""

    name = "table"

    def __init__(self, vectors: dict[str, Sequence[float]]) -> None:
        self.vectors = {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()}
        self.asked: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.extend(texts)
        rows = [self.vectors[text] / np.linalg.norm(self.vectors[text]) for text in texts]
        return np.stack(rows)


def test_relative_similarity_embeds_names_once_and_scores_empty_answers_zero() -> None:
    encoder = _TableEncoder(
        {"Bengal": [1, 0], "pet": [0.6, 0.8], "Bengal cat": [0.8, 0.6], "dog": [0, 1]}
    )
    similarity = RelativeSimilarity(encoder)
    first = similarity.scores([("Bengal cat", "Bengal", "pet"), ("", "Bengal", "pet")])
    assert first == [pytest.approx(0.5), 0.0]
    second = similarity.scores([("dog", "Bengal", "pet")])
    assert second == [0.0]
    assert encoder.asked.count("Bengal") == 1 and encoder.asked.count("pet") == 1


def test_text_encoder_specs() -> None:
    assert load_text_encoder("hf:some/model").name == "hf:some/model"
    with pytest.raises(ConfigError, match="minilm"):
        load_text_encoder("siglip")


# --- strict accuracy and the paper's text inclusion ----------------------------------------------


@pytest.fixture(scope="module")
def aircraft() -> ClassMatcher:
    return ClassMatcher.for_dataset("aircraft")


@pytest.fixture(scope="module")
def cars() -> ClassMatcher:
    return ClassMatcher.for_dataset("cars")


def test_a_multi_answer_is_wrong_strictly_and_right_by_inclusion(aircraft: ClassMatcher) -> None:
    truth = aircraft.annotations.by_name["Boeing 737-300"]
    output = "<think>two candidates</think><answer>Boeing 737-300 or Boeing 737-400</answer>"
    for mode in ("closed", "open"):
        judged = judge_output(output, truth, matcher=aircraft, mode=mode, style="fine-r1")
        assert not judged.correct
        assert judged.text_inclusion
        assert judged.named == ("Boeing 737-300", "Boeing 737-400")
    single = judge_output(
        "<answer>Boeing 737-300</answer>", truth, matcher=aircraft, mode="closed", style="fine-r1"
    )
    assert single.correct and single.text_inclusion


def test_text_inclusion_drops_the_car_year_in_the_open_world_only(cars: ClassMatcher) -> None:
    truth = cars.annotations.by_name["Acura TL Type-S 2008"]
    output = "<think>...</think><answer>an Acura TL Type-S</answer>"
    open_world = judge_output(output, truth, matcher=cars, mode="open", style="fine-r1")
    assert open_world.text_inclusion  # the released open-world rule drops the year
    assert not open_world.correct  # strictly, no year names no class
    closed_world = judge_output(output, truth, matcher=cars, mode="closed", style="fine-r1")
    assert not closed_world.text_inclusion  # the closed-world rule compares whole names
    assert closed_inclusion("Acura TL Type-S 2008", truth.name)
    other_year = judge_output(
        "<answer>Acura TL Type-S 2012</answer>", truth, matcher=cars, mode="open", style="fine-r1"
    )
    assert other_year.text_inclusion and not other_year.correct


def test_missing_answer_tags_fail_the_fine_r1_prompt_only(aircraft: ClassMatcher) -> None:
    truth = aircraft.annotations.by_name["Boeing 737-300"]
    output = "It is a Boeing 737-300."
    reasoning = judge_output(output, truth, matcher=aircraft, mode="closed", style="fine-r1")
    assert (reasoning.answer, reasoning.correct, reasoning.reason) == (
        None,
        False,
        "no <answer> tag",
    )
    assert not reasoning.text_inclusion
    # Open world: inclusion and SS_rel fall back to the whole output, as the released script.
    open_world = judge_output(output, truth, matcher=aircraft, mode="open", style="fine-r1")
    assert open_world.text_inclusion and not open_world.correct
    assert open_world.similarity_text == output
    baseline = judge_output(output, truth, matcher=aircraft, mode="closed", style="answer-only")
    assert baseline.answer == output and baseline.correct


def test_harmonic_mean_punishes_a_weak_side() -> None:
    assert harmonic_mean(90.0, 60.0) == pytest.approx(72.0)
    assert harmonic_mean(100.0, 0.0) == 0.0


# --- prompts, models, paper rows -----------------------------------------------------------------


def test_fine_r1_prompts_are_the_released_wording() -> None:
    closed = render(
        "fine-r1",
        "closed",
        question="What is the name of the car in the photo?",
        options=["Ferrari FF Coupe 2012", "Ferrari 458 Italia Coupe 2012"],
        super_category="car",
    )
    assert closed == (
        "Given the question: What is the name of the car in the photo?, based on the options "
        "provided in ['Ferrari FF Coupe 2012', 'Ferrari 458 Italia Coupe 2012'], output the "
        "thinking process in <think> </think> and final choice in <answer> </answer> tags. The "
        "response format should be: <think>...</think> <answer>choice</answer>."
    )
    opened = render("fine-r1", "open", question="Which car?", super_category="car")
    assert opened.startswith("Given the question: Which car?. This is a fine-grained question.")
    baseline = render("answer-only", "open", question="Which car?", super_category="car")
    assert "exact name of the car" in baseline
    with pytest.raises(ValueError, match="options"):
        render("fine-r1", "closed", question="Which car?", super_category="car")


def test_model_specs() -> None:
    spec = parse_model("openai:fine-r1@http://127.0.0.1:8000@http://127.0.0.1:8001")
    assert (spec.kind, spec.name, len(spec.urls)) == ("openai", "openai:fine-r1", 2)
    assert parse_model("local:/ckpt/sft").name == "local:/ckpt/sft"
    assert parse_model("clip:openai/clip-vit-large-patch14").kind == "clip"
    with pytest.raises(ConfigError, match="openai:NAME@URL"):
        parse_model("fine-r1-7b")
    with pytest.raises(ConfigError, match="--model"):
        parse_model("openai:fine-r1")  # no server


def test_paper_rows_are_found_by_name() -> None:
    assert paper_row("openai:StevenHH2000/Fine-R1-3B").model == "Fine-R1-3B"  # type: ignore[union-attr]
    row = paper_row("local:/models/Qwen2.5-VL-7B-Instruct")
    assert row is not None and row.open_ss_rel == (56.50, 45.60)
    assert paper_row("local:/ckpt/anything", override="fine-r1-7b").closed == (91.71, 85.70)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="Fine-R1-7B"):
        paper_row("x", override="GPT-5")


# --- aggregation ---------------------------------------------------------------------------------


def _frame(rows: list[tuple[str, str, int, bool]]) -> pl.DataFrame:
    """(dataset, split, trial, correct) closed-world predictions."""
    return pl.DataFrame(
        {
            "dataset": [r[0] for r in rows],
            "class_split": [r[1] for r in rows],
            "trial": [r[2] for r in rows],
            "correct": [r[3] for r in rows],
            "text_inclusion": [True] * len(rows),
            "ss_rel": [None] * len(rows),
            "mode": ["closed"] * len(rows),
            "option_order": ["shuffled"] * len(rows),
        },
        schema_overrides={"ss_rel": pl.Float64},
    )


def test_aggregate_seen_unseen_hm_average_and_trials() -> None:
    rows = [
        # trial 0: pets seen 2/2, unseen 1/2; cub seen 1/2, unseen 0/2
        ("pets", "seen", 0, True), ("pets", "seen", 0, True),
        ("pets", "unseen", 0, True), ("pets", "unseen", 0, False),
        ("cub", "seen", 0, True), ("cub", "seen", 0, False),
        ("cub", "unseen", 0, False), ("cub", "unseen", 0, False),
        # trial 1: pets seen 1/2, unseen 1/2; cub seen 1/2, unseen 1/2
        ("pets", "seen", 1, True), ("pets", "seen", 1, False),
        ("pets", "unseen", 1, True), ("pets", "unseen", 1, False),
        ("cub", "seen", 1, False), ("cub", "seen", 1, True),
        ("cub", "unseen", 1, True), ("cub", "unseen", 1, False),
    ]  # fmt: skip
    results = aggregate(
        _frame(rows),
        figures=RunFigures(run_id="r", model="openai:Fine-R1-7B"),
        modes=["closed"],
        datasets=["pets", "cub"],
        trials=2,
        paper=paper_row("openai:Fine-R1-7B"),
        expected={("closed", "shuffled"): 18},
    )
    (section,) = results.sections
    pets = section.cells["correct"]["pets"]
    assert (pets["seen"].mean, pets["unseen"].mean) == (75.0, 50.0)
    assert pets["seen"].std == pytest.approx(np.std([100, 50], ddof=1))
    # HM per trial, then the mean: trial 0 HM(100, 50) = 66.67, trial 1 HM(50, 50) = 50.
    assert pets["hm"].mean == pytest.approx((200 / 3 + 50) / 2)
    assert section.cells["correct"]["cub"]["hm"].mean == pytest.approx((0 + 50) / 2)
    average = section.cells["correct"]["average"]
    # trial 0: seen (100 + 50) / 2 = 75, unseen (50 + 0) / 2 = 25; trial 1: 50 and 50.
    assert (average["seen"].mean, average["unseen"].mean) == (62.5, 37.5)
    assert average["hm"].mean == pytest.approx((harmonic_mean(75, 25) + 50) / 2)
    assert results.score("closed", "correct").mean == average["hm"].mean
    # The paper's row sits under the metric it reports (text inclusion), and 2 questions are
    # reported missing.
    markdown = results.to_markdown()
    assert "| paper: Fine-R1-7B | 91.71 | 85.70 |" in markdown
    assert any("2 questions have no answer" in note for note in results.notes)
    data = results.to_json()
    assert data["sections"][0]["metrics"]["correct"]["pets"]["seen"]["mean"] == 75.0
    assert list(data["paper"]["closed"]) == [91.71, 85.7]


def test_minilm_ss_rel_orders_answers_by_closeness() -> None:
    """The default encoder, for real: the exact name scores 1, the bare super-category word
    0, and a near miss more than an unrelated word."""
    pytest.importorskip("sentence_transformers")
    similarity = RelativeSimilarity(load_text_encoder("minilm"))
    truth = "Black Footed Albatross"
    exact, word, near, far = similarity.scores(
        [
            (truth, truth, "bird"),
            ("bird", truth, "bird"),
            ("Laysan Albatross", truth, "bird"),
            ("pickup truck", truth, "bird"),
        ]
    )
    assert exact == pytest.approx(1.0, abs=1e-5)
    assert word == 0.0
    assert near > far
