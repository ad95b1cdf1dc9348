"""Answer extraction and class matching, on the shipped annotations of all six datasets."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from cotforge.data.annotations import known_datasets, load_annotations
from cotforge.errors import ConfigError, UnknownDatasetError
from cotforge.scoring import (
    ClassMatcher,
    Score,
    extract_answer,
    normalise,
    score,
    text_inclusion,
)

SAMPLE = Path(__file__).parent / "data" / "fine_r1_stage1_sample.json"


def check(dataset: str, answer: str | None, truth: str, **options: bool) -> Score:
    matcher = ClassMatcher.for_dataset(dataset)
    return score(answer, matcher.annotations.by_name[truth], matcher, **options)


# --- extract_answer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>x</think><answer>Boeing 707-320</answer>", "Boeing 707-320"),
        ("<answer>\n  Bengal \n</answer>", "Bengal"),
        ("< answer >Bengal</ANSWER>", "Bengal"),
        ("<Answer>Bengal< / answer >", "Bengal"),
        ("format: <answer> ... </answer>. Mine: <answer>Pug</answer>", "Pug"),
        ("<answer>Pug</answer> <answer>Boxer", "Pug"),
        ("<answer>a <answer>Pug</answer>", "Pug"),
        ("<answer></answer>", ""),
        ("<think>no answer</think>", None),
        ("<answer>truncated", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text: str | None, expected: str | None) -> None:
    assert extract_answer(text) == expected


# --- normalise ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Boeing 737-800", "boeing 737 800"),
        ("  The   Great_Pyrenees!  ", "great pyrenee"),
        ("a Bengal", "bengal"),
        ("An-12", "an 12"),
        ("Brewer's Blackbird", "brewer blackbird"),
        ("Chuck-will\u2019s-widow", "chuck will widow"),
        ("Ferrari 458 Italia Convertible (2012)", "ferrari 458 italia convertible 2012"),
        ("Brabançon Griffon", "brabancon griffon"),
        ("\uff22\uff25\uff2e\uff27\uff21\uff2c", "bengal"),
        ("Chihuahua", "chihuahua"),
        ("Sphynx", "sphynx"),
        ("Basset", "basset"),
        ("Belgian Malinois", "belgian malinois"),
        ("Hibiscus", "hibiscus"),
        ("Watercress", "watercress"),
        ("the 737s", "the 737"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("plural", "singular"),
    [
        ("Bengals", "Bengal"),
        ("Chihuahuas", "Chihuahua"),
        ("Bassets", "Basset"),
        ("Great Pyrenees", "Great Pyrenee"),
        ("Boeing 737-800s", "Boeing 737-800"),
    ],
)
def test_plural_folding_is_symmetric(plural: str, singular: str) -> None:
    assert normalise(plural) == normalise(singular)


# --- ClassMatcher.find -------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", known_datasets())
def test_every_name_and_alias_finds_exactly_its_class(dataset: str) -> None:
    """The strongest check of overlapping names: no surface form names a second class."""
    matcher = ClassMatcher.for_dataset(dataset)
    wrong = {
        surface: [info.name for info in matcher.find(surface)]
        for info in matcher.annotations.classes
        for surface in (info.name, *info.aliases)
        if matcher.find(surface) != [info]
    }
    assert wrong == {}


@pytest.mark.parametrize(
    ("dataset", "text", "expected"),
    [
        ("cub", "an American Tree Sparrow", ["Tree Sparrow"]),
        ("cub", "a tree sparrow", ["Tree Sparrow"]),
        ("aircraft", "Airbus A330-200", ["Airbus A330-200"]),
        ("aircraft", "a Boeing 737-800, not a 737-8", ["Boeing 737-800"]),
        ("aircraft", "the DC-9-30 (a DC-9)", ["DC-9-30"]),
        ("dogs", "a Border Collie", ["Border Collie"]),
        ("dogs", "a Border Collie or a Collie", ["Border Collie", "Collie"]),
        ("flowers", "tree mallow", ["tree mallow"]),
        ("cars", "Audi S4 Sedan 2012", ["Audi S4 Sedan 2012"]),
        ("cars", "2012 Toyota Corolla Sedan", ["Toyota Corolla Sedan 2012"]),
        ("pets", "Bengal cats", ["Bengal"]),
        ("pets", "a catalogue of nothing", []),
        ("pets", "", []),
    ],
)
def test_find_counts_the_longest_mention(dataset: str, text: str, expected: list[str]) -> None:
    assert [info.name for info in ClassMatcher.for_dataset(dataset).find(text)] == expected


def test_matcher_refuses_an_alias_shared_by_two_classes() -> None:
    annotations = load_annotations("pets")
    first, second = annotations.classes[:2]
    clash = dataclasses.replace(second, aliases=(first.name,))
    broken = dataclasses.replace(annotations, classes=[first, clash])
    with pytest.raises(ConfigError, match="names both"):
        ClassMatcher(broken)


def test_for_dataset_is_cached_and_validates_the_name() -> None:
    assert ClassMatcher.for_dataset("pets") is ClassMatcher.for_dataset("pets")
    with pytest.raises(UnknownDatasetError):
        ClassMatcher.for_dataset("no-such-dataset")


# --- score -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "answer", "truth"),
    [
        ("aircraft", "707-320", "Boeing 707-320"),
        ("aircraft", "Boeing 707-320", "Boeing 707-320"),
        ("aircraft", "CRJ-200", "CRJ-200"),
        ("aircraft", "Bombardier CRJ-200", "CRJ-200"),
        ("pets", "Bengal cat", "Bengal"),
        ("pets", "bengal", "Bengal"),
        ("pets", "Great Pyrenee", "Great Pyrenees"),
        ("dogs", "Chihuahuas", "Chihuahua"),
        ("cub", "Brewer's Blackbird", "Brewer Blackbird"),
        ("cars", "Toyota Corolla Sedan (2012)", "Toyota Corolla Sedan 2012"),
        ("aircraft", "Boeing 737-300, that is a 737-300", "Boeing 737-300"),
    ],
)
def test_score_accepts_names_aliases_and_variants(dataset: str, answer: str, truth: str) -> None:
    verdict = check(dataset, answer, truth)
    assert verdict == Score(True, (truth,), "names the true class")


def test_an_answer_naming_two_classes_is_wrong_even_with_the_truth() -> None:
    verdict = check("aircraft", "Boeing 737-300 or Boeing 737-400", "Boeing 737-300")
    assert not verdict.correct
    assert verdict.named == ("Boeing 737-300", "Boeing 737-400")
    assert verdict.reason == "names 2 classes: Boeing 737-300, Boeing 737-400"
    # the released reward's substring test is fooled by the same answer
    answer = "Boeing 737-300 or Boeing 737-400"
    assert text_inclusion(answer, "Boeing 737-300", dataset="aircraft")


@pytest.mark.parametrize("answer", [None, "", "   \n"])
def test_empty_answer_is_wrong(answer: str | None) -> None:
    assert check("pets", answer, "Bengal") == Score(False, (), "empty answer")


def test_wrong_class_and_no_class() -> None:
    wrong = check("pets", "Ocicat? no: Bombay", "Bengal")
    assert wrong == Score(False, ("Bombay",), "names Bombay, not the true Bengal")
    assert check("pets", "a spotted cat", "Bengal") == Score(False, (), "names no class of pets")


def test_cars_year_required_unless_allowed() -> None:
    truth = "Toyota Corolla Sedan 2012"
    assert not check("cars", "Toyota Corolla Sedan", truth).correct
    allowed = check("cars", "Toyota Corolla Sedan", truth, allow_missing_year=True)
    assert allowed.correct
    assert allowed.named == (truth,)
    # a year that is not the class's year is wrong either way
    assert not check("cars", "Toyota Corolla Sedan 2010", truth, allow_missing_year=True).correct
    assert check("cars", "2012 Toyota Corolla Sedan", truth).correct
    assert not check("cars", "Acura TL Sedan", truth, allow_missing_year=True).correct


def test_cars_missing_year_must_not_be_ambiguous() -> None:
    verdict = check("cars", "Audi S4 Sedan", "Audi S4 Sedan 2012", allow_missing_year=True)
    assert not verdict.correct
    assert set(verdict.named) == {"Audi S4 Sedan 2012", "Audi S4 Sedan 2007"}
    assert "2012" in check("cars", "Audi S4 Sedan 2012", "Audi S4 Sedan 2012").named[0]
    two_models = check(
        "cars",
        "Toyota Corolla Sedan or Acura TL Sedan",
        "Toyota Corolla Sedan 2012",
        allow_missing_year=True,
    )
    assert not two_models.correct
    assert two_models.reason.startswith("names 2 models")


def test_score_refuses_a_truth_from_another_dataset() -> None:
    other = load_annotations("dogs").by_name["Chihuahua"]
    with pytest.raises(ValueError, match="not a class of pets"):
        score("Chihuahua", other, ClassMatcher.for_dataset("pets"))


def test_a_class_is_in_its_matcher_by_equality_not_only_identity() -> None:
    matcher = ClassMatcher.for_dataset("pets")
    bengal = matcher.annotations.by_name["Bengal"]
    copy = dataclasses.replace(bengal)
    assert copy is not bengal
    assert bengal in matcher
    assert copy in matcher
    assert check("pets", "Bengal", "Bengal") == score("Bengal", copy, matcher)
    assert dataclasses.replace(bengal, name="Bengal Tiger") not in matcher
    assert load_annotations("dogs").by_name["Chihuahua"] not in matcher


def test_score_is_frozen() -> None:
    verdict = check("pets", "Bengal", "Bengal")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.correct = False  # type: ignore[misc]


# answers of the 12 released Stage-1 records and the class each image shows
RELEASED_TRUTH = [
    ("aircraft", "Eurofighter Typhoon"),
    ("aircraft", "CRJ-200"),
    ("cars", "Ferrari 458 Italia Convertible 2012"),
    ("cars", "Toyota Corolla Sedan 2012"),
    ("dogs", "German Shepherd"),
    ("dogs", "English Setter"),
    ("cub", "Bank Swallow"),
    ("cub", "Philadelphia Vireo"),
    ("pets", "Bengal"),
    ("pets", "Shiba Inu"),
    ("flowers", "japanese anemone"),
    ("flowers", "daffodil"),
]


def test_released_answers_score_correct() -> None:
    records = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for record, (dataset, truth) in zip(records, RELEASED_TRUTH, strict=True):
        answer = extract_answer(record["messages"][2]["content"])
        assert check(dataset, answer, truth).correct, (answer, truth)


# --- text_inclusion ----------------------------------------------------------------------------


def test_text_inclusion_is_the_papers_lenient_substring() -> None:
    assert text_inclusion("It is a BENGAL cat", "Bengal", dataset="pets")
    assert not text_inclusion("Bengals", "Bengal cat", dataset="pets")
    assert not text_inclusion(None, "Bengal", dataset="pets")
    assert not text_inclusion("Falcon", "Falcon 2000", dataset="aircraft")


def test_text_inclusion_drops_the_year_for_cars_only() -> None:
    assert text_inclusion("Acura TL Type-S", "Acura TL Type-S 2008", dataset="cars")
    assert text_inclusion("an acura tl type-s 2011", "Acura TL Type-S 2008", dataset="cars")
    assert not text_inclusion("Saab", "Saab 2000", dataset="aircraft")
    with pytest.raises(UnknownDatasetError):
        text_inclusion("x", "x", dataset="car")


# --- robustness --------------------------------------------------------------------------------


def test_megabyte_inputs_take_linear_time() -> None:
    matcher = ClassMatcher.for_dataset("aircraft")
    inputs = [
        "<answer>" * 130_000,
        "<" + " " * 1_000_000 + "answer>",
        "Boeing 737-800 or " * 55_000,
        "x" * 1_000_000,
    ]
    started = time.perf_counter()
    for text in inputs:
        extract_answer(text)
        matcher.find(text)
    assert time.perf_counter() - started < 3.0


def test_invalid_surrogates_do_not_raise() -> None:
    text = b"<answer>Bengal \xff cat</answer>".decode("utf-8", "surrogateescape")
    answer = extract_answer(text)
    assert answer is not None
    assert check("pets", answer, "Bengal").correct
    assert "\udcff" not in normalise(answer)
