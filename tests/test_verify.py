"""Verification checks on the 12 real Fine-R1 Stage-1 records and on mutations of them.

Every failing example is a real record with one thing broken (a stage dropped, the answer
swapped, a Chinese sentence injected, a leakage phrase added, ...), so each check is shown to
pass on real teacher prose and to fail on exactly the fault it is meant to catch.
"""

from __future__ import annotations

import dataclasses
import doctest
import io
import json
import multiprocessing
import os
import random
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from cotforge import verify
from cotforge.config import VERIFY_CHECKS, VerifyOptions, resolve
from cotforge.data.annotations import ClassInfo
from cotforge.errors import ConfigError, VerifyError
from cotforge.rationale import Rationale, parse
from cotforge.scoring import ClassMatcher, extract_answer
from cotforge.store import Store
from cotforge.verify import (
    CheckResult,
    accepted,
    candidates,
    correct,
    language,
    leakage,
    length,
    structure,
    super_category,
    verify_many,
    verify_rationale,
    verify_store,
)

SAMPLE = Path(__file__).parent / "data" / "fine_r1_stage1_sample.json"
DATASET_BY_PATH = {
    "fgvc-aircraft": "aircraft",
    "stanford_cars": "cars",
    "dogs_120": "dogs",
    "bird_200": "cub",
    "oxford-pet": "pets",
    "flower102": "flowers",
}


@dataclass(frozen=True)
class Record:
    """A released record: its assistant text, dataset and true class (its ``<answer>``)."""

    text: str
    image: str
    dataset: str
    truth: ClassInfo
    matcher: ClassMatcher

    @property
    def rationale(self) -> Rationale:
        return parse(self.text)

    def check(self, text: str, **options: object) -> dict[str, CheckResult]:
        results = verify_rationale(
            parse(text), truth=self.truth, matcher=self.matcher, options=VerifyOptions(**options)
        )
        return {result.name: result for result in results}

    def other_class(self) -> ClassInfo:
        """A class of the same dataset that is not the truth and no candidate names."""
        named = {info for name in self.rationale.candidates for info in self.matcher.find(name)}
        return next(c for c in self.matcher.annotations.classes if c not in named | {self.truth})


def _load() -> list[Record]:
    records = []
    for row in json.loads(SAMPLE.read_text(encoding="utf-8")):
        image = row["images"][0]
        dataset = next(name for prefix, name in DATASET_BY_PATH.items() if image.startswith(prefix))
        matcher = ClassMatcher.for_dataset(dataset)
        text = row["messages"][2]["content"]
        named = matcher.find(extract_answer(text))
        assert len(named) == 1, (image, named)
        records.append(Record(text, image, dataset, named[0], matcher))
    return records


RECORDS = _load()


@pytest.fixture(params=range(len(RECORDS)), ids=lambda i: f"record{i:02d}")
def record(request: pytest.FixtureRequest) -> Record:
    return RECORDS[request.param]


# --- mutations -------------------------------------------------------------------------------


def tagged(r: Rationale, *, options: str | None = None, drop: str = "", answer: str = "") -> str:
    """The record's own stages in our tag format, optionally with a stage left out."""
    listed = options if options is not None else "\n".join(f"- {c}" for c in r.candidates)
    stages = {
        "analysis": r.analysis,
        "options": listed,
        "comparison": r.comparison,
        "prediction": r.prediction,
    }
    body = "\n\n".join(f"<{tag}>\n{text}\n</{tag}>" for tag, text in stages.items() if tag != drop)
    return f"{body}\n<answer>{answer or r.answer}</answer>"


def swap_answer(text: str, answer: str) -> str:
    """The record with its ``<answer>`` and "The prediction is:" line both saying ``answer``."""
    text = re.sub(r"<answer>.*?</answer>", f"<answer>{answer}</answer>", text, flags=re.S)
    return re.sub(r"(The prediction is:)[^\n<]*", rf"\g<1> {answer}", text)


def inject(record: Record, sentence: str) -> tuple[str, int]:
    """The record with ``sentence`` put at the start of its comparison; and where it starts."""
    comparison = record.rationale.comparison
    assert comparison
    at = record.text.index(comparison[:30])
    return record.text[:at] + sentence + " " + record.text[at:], at


# --- all real records pass -------------------------------------------------------------------


def test_every_real_record_passes_every_check(record: Record) -> None:
    results = record.check(record.text)
    assert list(results) == list(VERIFY_CHECKS)
    failed = {name: r.reason for name, r in results.items() if not r.passed}
    assert failed == {}
    assert accepted(list(results.values()), VerifyOptions())
    assert all(r.reason for r in results.values())


def test_real_stages_in_the_tag_format_pass_too(record: Record) -> None:
    results = record.check(tagged(record.rationale))
    assert {name: r.reason for name, r in results.items() if not r.passed} == {}


def test_pass_reasons_say_what_was_seen() -> None:
    first = RECORDS[0].check(RECORDS[0].text)
    assert first["candidates"].reason == (
        "4 distinct candidates, the true class Eurofighter Typhoon and the prediction among them"
    )
    assert first["super_category"].reason == (
        "the true class Eurofighter Typhoon is a known aircraft class; 1 of 4 candidates known; "
        "unknown: 'Dassault Rafale', 'Saab JAS 39 Gripen', 'Lockheed Martin F-35 Lightning II'"
    )
    assert first["correct"].reason == (
        "answer and prediction line name the true class Eurofighter Typhoon"
    )
    assert first["length"].reason.startswith("analysis 1,100, comparison 1,779, prediction 700")


# --- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["analysis", "options", "comparison", "prediction"])
def test_structure_fails_without_a_stage(record: Record, stage: str) -> None:
    result = record.check(tagged(record.rationale, drop=stage))["structure"]
    assert not result.passed
    assert f"missing <{stage}>" in result.reason


def test_structure_fails_when_a_headed_section_is_dropped() -> None:
    text = RECORDS[0].text
    cut = text[: text.index(" Comparison Process:")] + text[text.index(" Final Prediction:") :]
    result = RECORDS[0].check(cut)["structure"]
    assert not result.passed
    assert "missing section: comparison" in result.reason


def test_structure_fails_on_stages_out_of_order() -> None:
    r = RECORDS[4].rationale
    text = (
        f"<analysis>{r.analysis}</analysis><options>{', '.join(r.candidates)}</options>"
        f"<prediction>{r.prediction}</prediction><comparison>{r.comparison}</comparison>"
        f"<answer>{r.answer}</answer>"
    )
    result = RECORDS[4].check(text)["structure"]
    assert not result.passed
    assert "stages out of order: analysis, options, prediction, comparison" in result.reason


@pytest.mark.parametrize(
    ("markup", "shown"),
    [
        ("<div class='note'>", "<div class='note'>"),
        ('<span style="color: red" >', '<span style="color: red" >'),
        ("<br/>", "<br/>"),
        ("<I>Riparia</I>", "<I>"),
        ("&nbsp;", "&nbsp;"),
        ("&#39;", "&#39;"),
    ],
)
def test_structure_fails_on_html(markup: str, shown: str) -> None:
    text, at = inject(RECORDS[6], markup)
    result = RECORDS[6].check(text)["structure"]
    assert not result.passed
    assert result.reason == f"HTML markup at {at}: {shown!r}"


def test_comparison_signs_and_our_tags_are_not_html() -> None:
    text, _ = inject(RECORDS[6], "Wings < 12 cm & tail > 5 cm; R&D; a <b and c> d.")
    assert RECORDS[6].check(text)["structure"].passed


# --- correct ---------------------------------------------------------------------------------


def test_correct_fails_when_the_answer_is_swapped_to_another_class(record: Record) -> None:
    other = record.other_class()
    result = record.check(swap_answer(record.text, other.name))["correct"]
    assert not result.passed
    assert result.reason.endswith(f"names {other.name}, not the true {record.truth.name}")


def test_correct_fails_when_only_the_prediction_line_disagrees() -> None:
    record = RECORDS[9]
    other = record.other_class()
    text = record.text.replace("The prediction is: Shiba Inu", f"The prediction is: {other.name}")
    result = record.check(text)["correct"]
    assert not result.passed
    assert result.reason.startswith(f"prediction line {other.name!r}: names {other.name}")


def test_correct_fails_on_a_second_answer_in_the_same_tag(record: Record) -> None:
    other = record.other_class()
    text = record.text.replace(
        f"<answer>{record.rationale.answer}</answer>",
        f"<answer>{record.rationale.answer} or {other.name}</answer>",
    )
    result = record.check(text)["correct"]
    assert not result.passed
    assert "names 2 classes" in result.reason


def test_correct_takes_the_last_answer_tag() -> None:
    record = RECORDS[7]
    text = record.text + f"\n<answer>{record.other_class().name}</answer>"
    assert not record.check(text)["correct"].passed


def test_correct_fails_on_an_empty_or_missing_answer() -> None:
    record = RECORDS[5]
    empty = record.check(swap_answer(record.text, ""))["correct"]
    assert not empty.passed
    assert empty.reason == "answer '': empty answer"
    r = record.rationale
    bare = f"<analysis>{r.analysis}</analysis><options>{', '.join(r.candidates)}</options>"
    assert record.check(bare)["correct"].reason == (
        "no <answer>, prediction line or prediction stage"
    )


def test_correct_scores_the_prediction_stage_when_nothing_else_states_it() -> None:
    record = RECORDS[9]
    r = record.rationale
    text = tagged(r).rsplit("<answer>", 1)[0]
    result = record.check(text)["correct"]
    assert result.passed, result.reason
    assert result.reason == "prediction name the true class Shiba Inu"


def test_cars_without_the_year_only_by_option() -> None:
    record = RECORDS[3]
    text = swap_answer(record.text, "Toyota Corolla Sedan")
    strict = record.check(text)
    assert not strict["correct"].passed
    assert "names no class of cars" in strict["correct"].reason
    lenient = record.check(text, allow_missing_year=True)
    assert lenient["correct"].passed
    assert lenient["candidates"].passed


def test_cars_candidates_without_the_year_only_by_option() -> None:
    record = RECORDS[3]
    r = record.rationale
    names = [re.sub(r"\s*\(2012\)", "", name) for name in r.candidates]
    text = tagged(r, options=", ".join(names))
    for check in ("candidates", "super_category"):
        assert not record.check(text)[check].passed
        assert record.check(text, allow_missing_year=True)[check].passed


# --- candidates and super_category -----------------------------------------------------------


def test_candidates_fail_on_duplicates(record: Record) -> None:
    r = record.rationale
    names = [*r.candidates[:3], f"the {r.candidates[0].lower()}"]
    result = record.check(tagged(r, options=", ".join(names)))["candidates"]
    assert not result.passed
    assert result.reason.endswith("are the same candidate")


@pytest.mark.parametrize("count", [0, 1, 5])
def test_candidates_fail_outside_two_to_four(count: int) -> None:
    record = RECORDS[7]  # four known vireos: the fifth name is a real class too
    truth = record.truth.name
    others = [c.name for c in record.matcher.annotations.classes if c != record.truth]
    names = [truth, *others[: count - 1]] if count else []
    text = tagged(record.rationale, options="\n".join(f"- {n}" for n in names))
    result = record.check(text)["candidates"]
    assert not result.passed
    assert result.reason.startswith(f"{count} candidates")
    assert result.reason.endswith("2 to 4 wanted")


def test_truth_missing_from_candidates_fails_candidates_and_super_category(
    record: Record,
) -> None:
    r = record.rationale
    names = [
        name if record.truth not in record.matcher.find(name) else f"Unknown Lookalike {n}"
        for n, name in enumerate(r.candidates)
    ]
    text = tagged(r, options=", ".join(names))
    results = record.check(text)
    assert not results["candidates"].passed
    assert results["candidates"].reason.startswith(
        f"the true class {record.truth.name} is not among the candidates"
    )
    assert not results["super_category"].passed
    assert "unknown: 'Unknown Lookalike " in results["super_category"].reason


def test_prediction_not_among_candidates_fails() -> None:
    record = RECORDS[7]
    other = record.other_class()
    result = record.check(swap_answer(record.text, other.name))["candidates"]
    assert not result.passed
    assert result.reason.startswith(f"answer {other.name!r} is not among the candidates")


def test_prediction_matches_a_candidate_by_text_or_by_class() -> None:
    bengal = RECORDS[8]  # answer "Bengal", candidate "Bengal Cat", line "Bengal Cat"
    assert bengal.check(bengal.text)["candidates"].passed
    crj = RECORDS[1]  # answer "CRJ-200", candidate "Bombardier CRJ-200"
    text = swap_answer(crj.text, "Canadair Regional Jet CRJ-200")
    assert crj.check(text)["candidates"].passed


def test_super_category_passes_with_unknown_lookalikes_and_fails_on_an_unknown_truth() -> None:
    record = RECORDS[0]
    r = record.rationale
    assert record.check(record.text)["super_category"].passed
    text = tagged(r, options="Eurofighter, Dassault Rafale, Saab JAS 39 Gripen")
    result = record.check(text)["super_category"]
    assert not result.passed
    assert result.reason == (
        "no candidate names the true class Eurofighter Typhoon as a aircraft class; 0 of 3 "
        "candidates known; unknown: 'Eurofighter', 'Dassault Rafale', 'Saab JAS 39 Gripen'"
    )


# --- leakage ---------------------------------------------------------------------------------

LEAKS = [
    "Given the label, the bird is clearly this species.",
    "Given that the correct label is known, we look for it.",
    "As stated, this is the right answer.",
    "The answer provided matches the features.",
    "The label is consistent with the image.",
    "We are told this is the species.",
    "We\u2019re told what it is.",
    "I was told the class.",
    "According to the provided label, it is this one.",
    "According to the answer, it must be this.",
    "This matches the ground-truth class.",
    "The provided label confirms it.",
    "The correct answer is this one.",
    "It is labelled as this class.",
    "The bird, labeled as a Bank Swallow, has a brown band.",
    "As mentioned in the question, this is the species.",
    "The prompt says which class it is.",
    "The correct class is this one.",
    "Given the class name, it is this one.",
    "The supplied answers agree with it.",
    "As noted in the hint, it is this species.",
    "The expected answer was this one.",
    "According to the hint, it is this species.",
    "The instruction says which species it is.",
    "As specified by the annotation, it is this one.",
    "It was annotated as this species.",
    "We have been told which species it is.",
    "I\u2019ve been told which species it is.",
    "The true label was this species.",
    "Given the ground truth, it is this one.",
    "The question mentioned the species.",
]


@pytest.mark.parametrize("sentence", LEAKS)
def test_leakage_fails_on_label_citing_phrases(sentence: str) -> None:
    record = RECORDS[2]
    text, at = inject(record, sentence)
    result = record.check(text)["leakage"]
    assert not result.passed
    quoted, position = re.match(r"'(.+?)' at (\d+): ", result.reason).groups()  # type: ignore[union-attr]
    assert text[int(position) : int(position) + len(quoted)] == quoted
    assert at <= int(position) < at + len(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "Given the visual features, the bird belongs here.",
        "As stated above, the wings are long.",
        "This aligns with the description provided.",
        "There is a hint of brown on the crown.",
        "The owner was told nothing, and the image provided shows a bird.",
        "The label-like patch has stated colours.",
        "It was labeled by experts? No: the bird has a forked tail.",
        "Chas stated nothing; groundtruthing is a word.",
    ],
)
def test_leakage_passes_ordinary_prose(sentence: str) -> None:
    text, _ = inject(RECORDS[2], sentence)
    result = RECORDS[2].check(text)["leakage"]
    assert result.passed, result.reason


def test_leakage_fast_path_keeps_every_phrase_and_takes_the_real_records() -> None:
    """A text without any word the phrases need passes before any phrase is searched; each
    phrase must keep one of those words (else leakage would miss it), and the real records,
    which cite no label, must take the fast path (else it is dead weight)."""
    for sentence in LEAKS:
        assert verify._may_cite(verify._lower(sentence, ())), sentence
    for record in RECORDS:
        assert not verify._may_cite(verify._lower(record.text, ()))
    # "class", "answer" and "hint" count only where a phrase could use them.
    ordinary = "the classic features; an answer-like call; a hint of buff; the hinting"
    assert not verify._may_cite(ordinary)
    assert verify._may_cite(ordinary + "; the class is")


def test_leakage_ignores_case_and_line_breaks_and_counts_every_hit() -> None:
    text = "Brown back.\nGIVEN   THE\nLABEL, a swallow. We are told so, per the ground truth."
    result = leakage(text)
    assert not result.passed
    assert result.reason.startswith("'GIVEN   THE\\nLABEL' at 12: ")
    assert result.reason.endswith("(3 in all)")


def test_leakage_positions_survive_characters_that_lower_to_two() -> None:
    text = "\u0130stanbul bird. As stated, a gull."
    result = leakage(text)
    assert result.reason.startswith(f"'As stated' at {text.index('As stated')}: ")


def test_leakage_extra_phrases_from_options() -> None:
    record = RECORDS[2]
    text, _ = inject(record, "Per the annotation, it is this car.")
    assert record.check(text)["leakage"].passed
    result = record.check(text, leakage_phrases=["per the  annotation"])["leakage"]
    assert not result.passed
    assert result.reason.startswith("'Per the annotation' at ")
    assert leakage("a (hint: bengal) b", phrases=["(hint:"]).reason.startswith("'(hint:' at 2")
    assert leakage("perthe annotation", phrases=["the annotation"]).passed


# --- language --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "script", "span"),
    [
        ("这只鸟的翅膀是棕色的。", "CJK", "这只鸟的翅膀是棕色的。"),
        ("Это птица.", "CYRILLIC", "Это птица."),
        ("الطائر بني", "ARABIC", "الطائر بني"),
        ("とても小さい", "HIRAGANA", "とても小さい"),
        ("날개가 갈색", "HANGUL", "날개가 갈색"),
        ("นกตัวนี้", "THAI", "นกตัวนี้"),
        ("Die Flügel\uff0c", "CJK", "\uff0c"),
        ("The ptero is πτερό.", "GREEK", "πτερό."),
    ],
)
def test_language_fails_on_another_script_and_quotes_it(
    sentence: str, script: str, span: str
) -> None:
    record = RECORDS[4]
    text, at = inject(record, sentence)
    result = record.check(text)["language"]
    assert not result.passed
    offset = sentence.index(span[0])
    assert result.reason.startswith(f"{script} text at {at + offset}: {span!r}")


@pytest.mark.parametrize(
    "sentence",
    [
        "The café-au-lait coat, like a Pyrénées dog’s — about 50 μm × 3 °C.",  # noqa: RUF001
        "An α-keratin beak; ½ the size; “quoted” … and ① 🙂 ™ ©.",  # noqa: RUF001
        "Mathematical 𝑥 and ligature ﬁne, Łódź, Ærø, Straße.",  # noqa: RUF001
    ],
)
def test_language_passes_latin_text_with_symbols(sentence: str) -> None:
    text, _ = inject(RECORDS[4], sentence)
    result = RECORDS[4].check(text)["language"]
    assert result.passed, result.reason


@pytest.mark.parametrize("bad", ["\udcff", "\ufffd", "\ud800"])
def test_language_fails_on_undecodable_characters(bad: str) -> None:
    record = RECORDS[4]
    text, at = inject(record, f"Brown{bad} wings.")
    result = record.check(text)["language"]
    assert not result.passed
    assert result.reason.startswith(
        f"1 undecodable character(s) (invalid UTF-8), first at {at + 5}"
    )
    result.reason.encode("utf-8")  # escaped, so it can be stored


def test_invalid_utf8_bytes_become_a_failing_verdict_not_a_crash() -> None:
    record = RECORDS[4]
    raw = record.text.encode("utf-8").replace(b"German", b"Ger\xffman", 1)
    results = record.check(raw.decode("utf-8", "surrogateescape"))
    assert not results["language"].passed
    assert all(result.reason.encode("utf-8") for result in results.values())


def test_language_only_knows_english() -> None:
    with pytest.raises(ValueError, match="language must be 'en'"):
        language("text", language="fr")


# --- length ----------------------------------------------------------------------------------


def test_length_fails_on_a_long_or_short_stage(record: Record) -> None:
    r = record.rationale
    assert r.analysis
    copies = 6000 // len(r.analysis) + 1
    long = tagged(dataclasses.replace(r, analysis=(r.analysis + "\n") * copies))
    result = record.check(long)["length"]
    assert not result.passed
    assert re.fullmatch(r"analysis has [\d,]+ characters, over 6,000", result.reason)
    short = tagged(dataclasses.replace(r, comparison="B is darker."))
    assert record.check(short)["length"].reason == "comparison has 12 characters, under 100"


def test_length_bounds_are_options() -> None:
    record = RECORDS[0]
    result = record.check(record.text, comparison_max_chars=1000, max_total_chars=4000)["length"]
    assert result.reason == (
        "comparison has 1,779 characters, over 1,000; "
        "the whole text has 4,181 characters, over 4,000"
    )


def test_length_bounds_are_inclusive() -> None:
    """The common case (everything within bounds) has its own path; a stage exactly at a bound
    takes it, one character beyond does not."""
    r = RECORDS[0].rationale
    assert r.analysis and r.prediction
    size, total = len(r.analysis), len(r.raw_text)
    at_bounds = VerifyOptions(
        analysis_min_chars=size, analysis_max_chars=size, max_total_chars=total
    )
    assert length(r, options=at_bounds).passed
    beyond = VerifyOptions(analysis_max_chars=size - 1, prediction_min_chars=len(r.prediction) + 1)
    assert length(r, options=beyond).reason == (
        f"analysis has {size:,} characters, over {size - 1:,}; "
        f"prediction has {len(r.prediction):,} characters, under {len(r.prediction) + 1:,}"
    )
    assert length(r, options=VerifyOptions(max_total_chars=total - 1)).reason == (
        f"the whole text has {total:,} characters, over {total - 1:,}"
    )


def test_a_megabyte_text_fails_length_without_crashing() -> None:
    record = RECORDS[6]
    text, _ = inject(record, "The tail is forked and brown. " * 35_000)
    started = time.perf_counter()
    results = record.check(text)
    assert time.perf_counter() - started < 2.0
    assert len(text) > 1_000_000
    assert not results["length"].passed
    assert "the whole text has 1,05" in results["length"].reason
    garbage = "\x00<answer" * 130_000
    assert not verify_rationale(parse(garbage), truth=record.truth, matcher=record.matcher)[
        0
    ].passed


# --- one rationale: API ----------------------------------------------------------------------


def test_verify_rationale_refuses_a_truth_from_another_dataset() -> None:
    record = RECORDS[0]
    with pytest.raises(ValueError, match="not a class of aircraft"):
        verify_rationale(record.rationale, truth=RECORDS[4].truth, matcher=record.matcher)


def test_accepted_follows_required_checks() -> None:
    record = RECORDS[4]
    text, _ = inject(record, "这只鸟。")
    results = verify_rationale(parse(text), truth=record.truth, matcher=record.matcher)
    assert not accepted(results)
    assert not accepted(results, VerifyOptions())
    assert accepted(results, VerifyOptions(required=["structure", "correct"]))
    assert accepted(results, VerifyOptions(required=[]))
    # a required check that did not run is not passed
    assert not accepted(results[:1], VerifyOptions(required=["structure", "correct"]))


def test_check_functions_take_their_own_inputs() -> None:
    record = RECORDS[9]
    r = record.rationale
    truth, matcher = record.truth, record.matcher
    assert structure(r).passed
    assert correct(r, truth=truth, matcher=matcher).passed
    assert candidates(r, truth=truth, matcher=matcher).passed
    assert super_category(r, truth=truth, matcher=matcher).passed
    assert leakage(r.raw_text).passed
    assert language(r.raw_text).passed
    assert length(r).passed


@pytest.mark.parametrize("allow_missing_year", [False, True])
def test_verify_rationale_agrees_with_the_check_functions(
    record: Record, allow_missing_year: bool
) -> None:
    """verify_rationale looks up the candidates once for the three class checks; each check
    called alone must say the same, on passing and on failing rationales."""
    r = record.rationale
    no_year = [re.sub(r"\s*\(?(?:19|20)\d\d\)?", "", name) for name in r.candidates]
    texts = [
        record.text,
        tagged(r, options=", ".join(no_year)),
        tagged(r, options=", ".join(r.candidates[1:])),
        swap_answer(record.text, record.other_class().name),
    ]
    options = VerifyOptions(allow_missing_year=allow_missing_year)
    for text in texts:
        parsed = parse(text)
        together = {
            c.name: c
            for c in verify_rationale(
                parsed, truth=record.truth, matcher=record.matcher, options=options
            )
        }
        for check in (correct, candidates, super_category):
            alone = check(
                parsed,
                truth=record.truth,
                matcher=record.matcher,
                allow_missing_year=allow_missing_year,
            )
            assert together[alone.name] == alone


def test_docstring_examples_run() -> None:
    outcome = doctest.testmod(verify)
    assert outcome.attempted >= 8 and outcome.failed == 0


# --- options ---------------------------------------------------------------------------------


def test_verify_options_reject_unknown_checks_with_the_known_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(VerifyOptions, section="verify", flags={"required": ["structure", "faithful"]})
    message = str(caught.value)
    assert "unknown check(s) 'faithful'" in message
    assert "known checks: " + ", ".join((*VERIFY_CHECKS, "judge")) in message
    judged = resolve(VerifyOptions, section="verify", flags={"required": ["structure", "judge"]})
    assert judged.required == ["structure", "judge"]
    monkeypatch.setenv("COTFORGE_VERIFY_REQUIRED", "structure, correct")
    options = resolve(VerifyOptions, section="verify", flags={})
    assert options.required == ["structure", "correct"]


def test_verify_options_validate_bounds_and_phrases() -> None:
    with pytest.raises(ConfigError, match="below analysis_min_chars"):
        resolve(VerifyOptions, section="verify", flags={"analysis_min_chars": 7000})
    with pytest.raises(ConfigError, match="must not be blank"):
        resolve(VerifyOptions, section="verify", flags={"leakage_phrases": ["ok", " "]})
    with pytest.raises(ConfigError, match="unknown option 'lenght'"):
        resolve(VerifyOptions, section="verify", flags={"lenght": 3})
    assert VerifyOptions(leakage_phrases="as annotated, per label").leakage_phrases == [
        "as annotated",
        "per label",
    ]


# --- the store -------------------------------------------------------------------------------


def _image_row(record: Record, key: str) -> dict[str, object]:
    return {
        "image_id": f"{record.dataset}/train/{key}",
        "dataset": record.dataset,
        "split": "train",
        "key": key,
        "class_index": record.truth.index,
        "label": record.truth.label,
        "class_name": record.truth.name,
    }


@pytest.fixture
def filled(tmp_path: Path):
    """A store with the 12 real records (half through requests, half imported) and 6 bad ones.

    Bad: a Chinese sentence, an HTML tag, a swapped answer, a megabyte text, an image the store
    does not know, and a dataset without annotations. Returns the store and the ids expected
    to be accepted.
    """
    with Store.open(tmp_path / "cotforge.duckdb") as store:
        run_id = store.start_run("generate", {}, {})
        images, requests, rationales = [], [], []
        good = set()
        for n, record in enumerate(RECORDS):
            image = _image_row(record, record.image)
            images.append(image)
            rid = f"r{n:02d}"
            good.add(rid)
            if n % 2:
                rationales.append(
                    {"rationale_id": rid, "sample_id": image["image_id"], "raw_text": record.text}
                )
            else:
                requests.append(
                    {
                        "request_id": f"q{n:02d}",
                        "run_id": run_id,
                        "sample_id": image["image_id"],
                        "purpose": "rationale",
                        "model": "teacher",
                        "prompt_hash": "p",
                        "status": "ok",
                        "response_text": record.text,
                    }
                )
                rationales.append(
                    {"rationale_id": rid, "request_id": f"q{n:02d}", "sample_id": image["image_id"]}
                )
        bad = {
            "x1": inject(RECORDS[4], "这只鸟的翅膀是棕色的。")[0],
            "x2": inject(RECORDS[6], "<div>")[0],
            "x3": swap_answer(RECORDS[8].text, RECORDS[8].other_class().name),
            "x4": inject(RECORDS[0], "x" * 1_000_000)[0],
        }
        for rid, text in bad.items():
            source = {"x1": 4, "x2": 6, "x3": 8, "x4": 0}[rid]
            sample = _image_row(RECORDS[source], RECORDS[source].image)["image_id"]
            rationales.append({"rationale_id": rid, "sample_id": sample, "raw_text": text})
        rationales.append(
            {
                "rationale_id": "x5",
                "sample_id": "cub/train/unknown.jpg",
                "raw_text": RECORDS[6].text,
            }
        )
        images.append({**_image_row(RECORDS[6], "moths/1.jpg"), "dataset": "moths"})
        rationales.append(
            {
                "rationale_id": "x6",
                "sample_id": "cub/train/moths/1.jpg",
                "raw_text": RECORDS[6].text,
            }
        )
        store.add_images(images)
        store.upsert_requests(requests)
        store.add_rationales(rationales)
        yield store, good


def _verdicts(store: Store) -> dict[str, dict[str, tuple[bool, bool, str]]]:
    out: dict[str, dict[str, tuple[bool, bool, str]]] = {}
    for row in store.table("verdicts").iter_rows(named=True):
        out.setdefault(row["rationale_id"], {})[row["check_name"]] = (
            row["passed"],
            row["required"],
            row["reason"],
        )
    return out


def test_verify_store_writes_a_verdict_per_check_and_matches_stats(filled) -> None:
    store, good = filled
    console = Console(file=io.StringIO())
    summary = verify_store(store, options=VerifyOptions(batch_size=5), console=console)
    verdicts = _verdicts(store)
    assert len(verdicts) == 18
    assert all(set(checks) == set(VERIFY_CHECKS) for checks in verdicts.values())
    ok = {rid for rid, checks in verdicts.items() if all(v[0] for v in checks.values())}
    assert ok == good
    assert summary.verified == 18
    assert summary.accepted == 12
    # each bad record fails for its own reason
    assert verdicts["x1"]["language"][2].startswith("CJK text at")
    assert verdicts["x2"]["structure"][2].startswith("HTML markup at")
    assert not verdicts["x3"]["correct"][0]
    assert "the whole text has 1,00" in verdicts["x4"]["length"][2]
    for rid in ("x5", "x6"):
        assert verdicts[rid]["structure"][0] and verdicts[rid]["length"][0]
    assert "not in the store's images" in verdicts["x5"]["correct"][2]
    assert "no class list for dataset 'moths'" in verdicts["x6"]["super_category"][2]
    run = store.table("runs", where={"run_id": summary.run_id}).row(0, named=True)
    assert (run["kind"], run["status"]) == ("verify", "ok")
    assert json.loads(run["config"])["batch_size"] == 5
    rows = dict(summary.rows())
    assert rows["rationales verified"] == 18
    assert rows["accepted (all required checks passed)"] == 12
    # stats() last: with DuckDB 2 it leaves a result open that breaks the store's next .sql()
    stats = store.stats()
    assert stats["accepted"] == 12
    assert stats["failed"] == {name: n for name, n in summary.failed.items() if n}


def test_a_second_run_with_only_new_does_nothing(filled) -> None:
    store, _ = filled
    verify_store(store)
    before = store.table("verdicts").sort(["rationale_id", "check_name"])
    runs = store.table("runs").height
    again = verify_store(store)
    assert (again.verified, again.run_id) == (0, None)
    assert store.table("verdicts").sort(["rationale_id", "check_name"]).equals(before)
    assert store.table("runs").height == runs


def test_required_checks_change_acceptance(filled) -> None:
    store, good = filled
    verify_store(store)
    lenient = VerifyOptions(required=["structure", "correct"])
    summary = verify_store(store, options=lenient, only_new=False)
    # x1 (Chinese) and x4 (too long) now pass what is required; x2, x3, x5, x6 still fail
    assert summary.accepted == len(good) + 2
    flags = {
        row["check_name"]: row["required"] for row in store.table("verdicts").iter_rows(named=True)
    }
    assert flags["language"] is False and flags["correct"] is True
    assert dict(summary.rows())["failed language (not required)"] == 1
    stats = store.stats()  # last: see test_verify_store_writes_a_verdict_per_check...
    assert stats["accepted"] == len(good) + 2
    assert set(stats["failed"]) == {"structure", "correct"}


def test_an_interrupted_run_loses_at_most_one_batch_and_resumes(
    filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = filled
    real = Store.upsert_verdicts
    calls = []

    def crash_on_second(self: Store, rows) -> int:
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, rows)

    monkeypatch.setattr(Store, "upsert_verdicts", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        verify_store(store, options=VerifyOptions(batch_size=4))
    monkeypatch.setattr(Store, "upsert_verdicts", real)
    assert len(_verdicts(store)) == 4
    statuses = store.table("runs", where={"kind": "verify"})["status"].to_list()
    assert statuses == ["interrupted"]
    resumed = verify_store(store, options=VerifyOptions(batch_size=4))
    assert resumed.verified == 14
    assert len(_verdicts(store)) == 18


def test_a_record_the_checks_cannot_read_fails_instead_of_stopping_the_run(
    filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = filled
    real = verify.parse

    def fragile(text: str) -> Rationale:
        if "这只鸟" in text:
            raise RuntimeError("parser bug")
        return real(text)

    monkeypatch.setattr(verify, "parse", fragile)
    summary = verify_store(store)
    assert summary.verified == 18
    reasons = {v[2] for v in _verdicts(store)["x1"].values()}
    assert reasons == {"the checks could not read this record (RuntimeError: parser bug)"}


def test_a_rationale_without_any_text_fails_every_check(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.duckdb") as store:
        record = RECORDS[0]
        image = _image_row(record, "a.jpg")
        store.add_images([image])
        store.upsert_requests(
            [
                {
                    "request_id": "q",
                    "run_id": "g",
                    "purpose": "rationale",
                    "model": "m",
                    "prompt_hash": "p",
                    "status": "error",
                }
            ]
        )
        store.add_rationales(
            [{"rationale_id": "r", "request_id": "q", "sample_id": image["image_id"]}]
        )
        summary = verify_store(store)
        assert summary.accepted == 0
        assert all(
            not passed and reason.startswith("no text")
            for passed, _, reason in _verdicts(store)["r"].values()
        )


# --- on several processes --------------------------------------------------------------------


def _comparable(store: Store):
    return store.table("verdicts").drop("run_id", "created_at").sort("rationale_id", "check_name")


def test_verify_many_gives_the_same_results_on_two_processes() -> None:
    records = [(r.text, r.dataset, r.truth.index) for r in RECORDS]
    chinese = inject(RECORDS[4], "这只鸟的翅膀是棕色的。")[0]
    records += [
        (None, "cub", 0),
        (RECORDS[0].text, "moths", 1),
        (RECORDS[0].text, None, None),
        (chinese, RECORDS[4].dataset, RECORDS[4].truth.index),
    ]
    one = list(verify_many(records))
    two = list(verify_many(records, workers=2))
    assert two == one
    assert all(isinstance(check, CheckResult) for checks in two for check in checks)
    assert [accepted(checks) for checks in one] == [True] * len(RECORDS) + [False] * 4


def test_verify_store_on_two_processes_writes_the_same_verdicts(filled, tmp_path: Path) -> None:
    store, good = filled
    summary = verify_store(store, options=VerifyOptions(workers=2, batch_size=5))
    assert (summary.verified, summary.accepted) == (18, len(good))
    run = store.table("runs", where={"run_id": summary.run_id}).row(0, named=True)
    assert json.loads(run["config"])["workers"] == 2
    on_two = _comparable(store)
    again = verify_store(store, options=VerifyOptions(workers=1), only_new=False)
    assert again.failed == summary.failed
    assert _comparable(store).equals(on_two)


@pytest.fixture
def many(tmp_path: Path):
    """A store with 1,500 rationales: the real records over and over, on their own images."""
    with Store.open(tmp_path / "many.duckdb") as store:
        store.add_images([_image_row(record, record.image) for record in RECORDS])
        store.add_rationales(
            [
                {
                    "rationale_id": f"r{n:05d}",
                    "sample_id": f"{RECORDS[n % 12].dataset}/train/{RECORDS[n % 12].image}",
                    "raw_text": RECORDS[n % 12].text,
                }
                for n in range(1500)
            ]
        )
        yield store


def test_a_killed_worker_stops_the_run_with_advice_and_the_rerun_resumes(
    many: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Store.upsert_verdicts

    def kill_workers_first(self: Store, rows) -> int:
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)
        monkeypatch.setattr(Store, "upsert_verdicts", real)
        return real(self, rows)

    monkeypatch.setattr(Store, "upsert_verdicts", kill_workers_first)
    options = VerifyOptions(workers=2, batch_size=256)
    with pytest.raises(VerifyError, match=r"worker process died .* run `cotforge verify` again"):
        verify_store(many, options=options)
    assert store_status(many) == ["failed"]
    assert not multiprocessing.active_children()
    written = many.table("verdicts").height // len(VERIFY_CHECKS)
    assert written % 256 == 0 and 256 <= written < 1500
    resumed = verify_store(many, options=options)
    assert resumed.verified == 1500 - written
    assert resumed.accepted == resumed.verified
    assert many.table("verdicts").height == 1500 * len(VERIFY_CHECKS)


def test_ctrl_c_on_two_processes_stops_the_workers_and_the_rerun_resumes(
    many: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Store.upsert_verdicts
    calls: list[int] = []

    def interrupt_second(self: Store, rows) -> int:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, rows)

    monkeypatch.setattr(Store, "upsert_verdicts", interrupt_second)
    options = VerifyOptions(workers=2, batch_size=300)
    with pytest.raises(KeyboardInterrupt):
        verify_store(many, options=options)
    assert store_status(many) == ["interrupted"]
    assert not multiprocessing.active_children()
    assert many.table("verdicts").height == 300 * len(VERIFY_CHECKS)
    monkeypatch.setattr(Store, "upsert_verdicts", real)
    assert verify_store(many, options=options).verified == 1200


def store_status(store: Store) -> list[str]:
    return store.table("runs", where={"kind": "verify"})["status"].to_list()


# --- throughput (printed, not asserted) ------------------------------------------------------


def test_throughput_in_memory(capsys: pytest.CaptureFixture[str]) -> None:
    """Distinct rationales made from the real records (words swapped in the comparison, a
    candidate replaced by another class), parsed once, then verified; both rates printed."""
    rng = random.Random(0)
    words = re.findall(r"[a-z]{4,}", " ".join(r.text for r in RECORDS))
    docs = []
    for n in range(3000):
        record = RECORDS[n % len(RECORDS)]
        text, _ = inject(record, " ".join(rng.choices(words, k=rng.randint(5, 40))) + ".")
        r = record.rationale
        last = r.candidates[-1]
        if record.truth not in record.matcher.find(last):
            other = rng.choice(record.matcher.annotations.classes)
            if other != record.truth:
                text = text.replace(last, other.name)
        docs.append((text, record))
    started = time.perf_counter()
    parsed = [(parse(text), record) for text, record in docs]
    parse_s = time.perf_counter() - started
    started = time.perf_counter()
    results = [
        verify_rationale(r, truth=record.truth, matcher=record.matcher) for r, record in parsed
    ]
    verify_s = time.perf_counter() - started
    assert len(results) == len(docs)
    with capsys.disabled():
        print(
            f"\nverify: {len(docs) / verify_s:,.0f} rationales/s checks only, "
            f"{len(docs) / (parse_s + verify_s):,.0f}/s with parsing "
            f"(mean {sum(len(t) for t, _ in docs) / len(docs):,.0f} characters)"
        )
