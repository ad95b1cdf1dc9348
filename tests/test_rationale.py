"""Parsing and rendering rationales, on the 12 real Fine-R1 Stage-1 records and mutations of them.

The tagged-format inputs are built from the real records' own stages (wrapped in our tags), so
the text inside the stages is real teacher prose, not text written to suit the parser.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cotforge.rationale import (
    Rationale,
    parse,
    parse_headed,
    parse_tagged,
    render_target,
    same_text,
)

SAMPLE = Path(__file__).parent / "data" / "fine_r1_stage1_sample.json"
RECORDS = [r["messages"][2]["content"] for r in json.loads(SAMPLE.read_text(encoding="utf-8"))]
STAGE_FIELDS = ("analysis", "comparison", "prediction")


def same_stages(a: Rationale, b: Rationale) -> bool:
    return (
        all(same_text(getattr(a, name), getattr(b, name)) for name in STAGE_FIELDS)
        and a.candidates == b.candidates
    )


def tagged(r: Rationale, *, options: str | None = None) -> str:
    """A teacher answer in our tag format carrying the stages of a parsed real record."""
    listed = options if options is not None else "\n".join(f"- {c}" for c in r.candidates)
    return (
        f"<analysis>\n{r.analysis}\n</analysis>\n\n<options>\n{listed}\n</options>\n\n"
        f"<comparison>\n{r.comparison}\n</comparison>\n\n<prediction>\n{r.prediction}\n"
        f"</prediction>\n<answer>{r.answer}</answer>"
    )


@pytest.fixture(params=range(len(RECORDS)), ids=lambda i: f"record{i:02d}")
def record(request: pytest.FixtureRequest) -> str:
    return RECORDS[request.param]


# --- headed: the released records --------------------------------------------------------------


def test_sample_has_the_twelve_released_records() -> None:
    assert len(RECORDS) == 12
    assert all(text.startswith("<think>") for text in RECORDS)


def test_every_released_record_parses_into_four_stages(record: str) -> None:
    r = parse_headed(record)
    assert r.source_format == "headed"
    assert r.problems == ()
    assert r.analysis and r.comparison and r.prediction
    assert 2 <= len(r.candidates) <= 4
    assert r.answer == record.rsplit("<answer>", 1)[1].split("</answer>")[0]
    assert r.prediction_line
    assert r.raw_text == record
    # the formula lines are not part of any stage text
    for name in STAGE_FIELDS:
        text = getattr(r, name).lower()
        assert "the prediction is:" not in text
        assert "the analysis of candidate subcategories" not in text


def test_released_candidates_and_stage_boundaries() -> None:
    first, crj, ferrari, setter = (parse_headed(RECORDS[i]) for i in (0, 1, 2, 5))
    assert first.candidates == (
        "Eurofighter Typhoon",
        "Dassault Rafale",
        "Saab JAS 39 Gripen",
        "Lockheed Martin F-35 Lightning II",
    )
    assert first.analysis.startswith("The image shows a modern fighter aircraft")
    assert first.analysis.endswith("either taking off or landing.")
    assert first.comparison.lstrip().startswith("1. Eurofighter Typhoon:")
    # the summary after "Final Answer:" stays in the prediction stage, the formula lines do not
    assert "Final Answer:" in first.prediction
    assert first.prediction.endswith("wing design, sensors, and overall configuration.")
    assert first.prediction_line == "The aircraft is identified as the Eurofighter Typhoon."
    # numbered list with trailing spaces and a bracket inside a name
    assert crj.candidates[2] == "Canadair CL-600 (CRJ-100/200)"
    # headings without colons; the list sits in the candidates section
    assert ferrari.candidates[0] == "Ferrari 458 Italia Convertible (2012)"
    assert ferrari.comparison.startswith("Now, let")
    # the line appears twice; the later, cleaner list wins
    assert setter.candidates[-1] == "Belgian Tervuren"


def test_bullet_list_is_used_when_the_candidate_line_is_missing() -> None:
    text = RECORDS[0]
    start = text.index("The analysis of candidate subcategories:")
    end = text.index("\n\n", start)
    r = parse_headed(text[:start] + text[end:])
    assert r.problems == ()
    assert r.candidates == parse_headed(text).candidates


def test_descriptions_after_candidate_names_are_dropped() -> None:
    bird, pet = parse_headed(RECORDS[6]), parse_headed(RECORDS[8])
    assert bird.candidates[0] == "Bank Swallow (Riparia riparia)"
    assert pet.candidates == ("Bengal Cat", "Ocicat", "Toyger", "Abyssinian")


HEADING_VARIANTS = [
    (
        "### Analysis of Visual Features",
        "### Candidate Subcategories",
        "### Comparison Process",
        "### Final Prediction",
    ),
    (
        "**Analysis of Visual Features:**",
        "**Candidate Subcategories:**",
        "**Comparison Process:**",
        "**Final Prediction:**",
    ),
    (
        "## 1. Analysis of Visual Features",
        "## 2. Candidate Subcategories",
        "## 3. Comparison Process",
        "## 4. Final Prediction",
    ),
    (
        "Step 1: Visual Analysis",
        "Step 2: Candidate Options",
        "Step 3: Detailed Comparison",
        "Step 4: Conclusion",
    ),
    (
        "1) Analysis of Visual Features:",
        "2) Candidate Subcategories:",
        "3) Comparison Process:",
        "4) Final Prediction:",
    ),
]


@pytest.mark.parametrize("headings", HEADING_VARIANTS, ids=lambda h: h[0])
def test_heading_wording_and_markup_vary(headings: tuple[str, str, str, str]) -> None:
    original = RECORDS[0]
    text = original
    for old, new in zip(
        (
            " Analysis of Visual Features:",
            " Candidate Subcategories:",
            " Comparison Process:",
            " Final Prediction:",
        ),
        headings,
        strict=True,
    ):
        assert text.count(old) == 1
        text = text.replace(old, new)
    r = parse_headed(text)
    assert r.problems == ()
    assert same_stages(r, parse_headed(original))


def test_headed_problems_are_recorded() -> None:
    text = RECORDS[4]
    without_comparison = parse_headed(text.replace(" Comparison Process:", " Some Notes:"))
    assert "missing section: comparison" in without_comparison.problems
    assert without_comparison.comparison is None
    swapped = (
        text.replace(" Candidate Subcategories:", " @@")
        .replace(" Comparison Process:", " Candidate Subcategories:")
        .replace(" @@", " Comparison Process:")
    )
    assert "stages out of order: analysis, comparison, options, prediction" in (
        parse_headed(swapped).problems
    )
    no_answer = parse_headed(text.split("<answer>")[0])
    assert no_answer.answer is None
    assert "no <answer>" in no_answer.problems
    assert "missing </think>" in parse_headed(text.replace("</think>", "")).problems
    preamble = parse_headed(text.replace("<think> Analysis", "<think> Let me look.\n\n Analysis"))
    assert preamble.problems == (
        f"{len('Let me look.')} characters before the first heading ignored",
    )


# --- round trip --------------------------------------------------------------------------------


def test_render_round_trips_every_released_record(record: str) -> None:
    r = parse_headed(record)
    target = render_target(r, answer=r.answer)
    back = parse(target)
    assert back.source_format == "headed"
    assert back.problems == ()
    assert same_stages(back, r)
    assert back.answer == r.answer
    assert back.prediction_line == r.answer


def test_render_reproduces_the_released_shape() -> None:
    r = parse_headed(RECORDS[4])
    target = render_target(r, answer="German Shepherd")
    assert target.startswith("<think> Analysis of Visual Features:\nThe image shows two dogs")
    assert "\n\n Candidate Subcategories:\n- German Shepherd\n- Belgian Malinois\n" in target
    assert "\n\n Comparison Process:\n" in target
    assert "\n\n Final Prediction:\nThe dogs in the image" in target
    assert target.endswith(
        "The analysis of candidate subcategories: \n"
        "German Shepherd, Belgian Malinois, Dutch Shepherd, Husky\n"
        "The prediction is: German Shepherd\n</think>\n\n<answer>German Shepherd</answer>"
    )
    # the same closing lines, byte for byte, as the released record
    assert (
        "The analysis of candidate subcategories: \nGerman Shepherd, Belgian Malinois"
        in (RECORDS[4])
    )
    assert RECORDS[4].endswith(
        "The prediction is: German Shepherd\n</think>\n\n<answer>German Shepherd</answer>"
    )


def test_render_lists_names_with_commas_as_bullets() -> None:
    r = parse_tagged(tagged(parse_headed(RECORDS[9]), options="- Akita, Japanese\n- Shiba Inu"))
    assert r.candidates == ("Akita, Japanese", "Shiba Inu")
    target = render_target(r, answer="Shiba Inu")
    assert "subcategories: \n- Akita, Japanese\n- Shiba Inu\n" in target
    assert parse(target).candidates == r.candidates


def test_render_refuses_incomplete_or_unreadable_rationales() -> None:
    r = parse_headed(RECORDS[9])
    with pytest.raises(ValueError, match="missing stage"):
        render_target(
            parse_headed(RECORDS[9].replace(" Comparison Process:", " Notes:")), answer="Shiba Inu"
        )
    with pytest.raises(ValueError, match="one non-empty line"):
        render_target(r, answer="  ")
    with pytest.raises(ValueError, match="one non-empty line"):
        render_target(r, answer="Shiba\nInu")
    bad = parse_tagged(tagged(r).replace("</comparison>", "\nFinal Prediction:\n</comparison>"))
    assert bad.comparison and bad.comparison.endswith("Final Prediction:")
    with pytest.raises(ValueError, match="does not read back the same"):
        render_target(bad, answer="Shiba Inu")


# --- tagged ------------------------------------------------------------------------------------


def test_tagged_records_parse_to_the_same_stages(record: str) -> None:
    headed = parse_headed(record)
    r = parse(tagged(headed))
    assert r.source_format == "tags"
    assert r.problems == ()
    assert same_stages(r, headed)
    assert r.answer == headed.answer
    assert render_target(r, answer=r.answer) == render_target(headed, answer=r.answer)


def test_options_one_per_line_numbered_or_comma_separated() -> None:
    r = parse_headed(RECORDS[9])
    expected = ("Shiba Inu", "Akita", "Husky", "Corgi")
    for options in (
        "Shiba Inu\nAkita\nHusky\nCorgi",
        "1. Shiba Inu\n2. Akita.\n3. Husky;\n4. Corgi",
        "* **Shiba Inu**\n* Akita\n* Husky\n* Corgi",
        "Shiba Inu, Akita, Husky, and Corgi.",
        "Candidates:\n- Shiba Inu: fox-like\n- Akita - bigger\n- Husky\n- Corgi",
    ):
        assert parse_tagged(tagged(r, options=options)).candidates == expected, options


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda t: t.replace("<comparison>", "<!-- -->").replace("</comparison>", ""),
            "missing <comparison>",
        ),
        (lambda t: t.replace("</analysis>", ""), "no closing tag for <analysis>"),
        (lambda t: t.replace("</prediction>", ""), "no closing tag for <prediction>"),
        (
            lambda t: t + "\n<analysis>a second analysis</analysis>",
            "repeated <analysis>; kept the first",
        ),
        (
            lambda t: (
                t.replace("<options>", "")
                .replace("</options>", "")
                .replace(
                    "</analysis>",
                    "<options>\n- Shiba Inu\n- Akita\n- Husky\n- Corgi\n</options>\n</analysis>",
                )
            ),
            "nested tags: <options> inside <analysis>",
        ),
        (
            lambda t: t.replace("</analysis>", "<analysis>inner</analysis></analysis>"),
            "nested tags: <analysis> inside <analysis>",
        ),
        (
            lambda t: t.replace("<prediction>", "<prediction></prediction><prediction>"),
            "empty <prediction>",
        ),
        (lambda t: t + "</options>", "stray </options>"),
    ],
    ids=[
        "drop-stage",
        "no-close",
        "no-close-last",
        "repeated",
        "nested",
        "nested-same",
        "empty",
        "stray",
    ],
)
def test_tagged_mutations_are_recorded(mutate: Callable[[str], str], problem: str) -> None:
    r = parse_tagged(mutate(tagged(parse_headed(RECORDS[9]))))
    assert problem in r.problems


def test_repeated_stage_keeps_the_first() -> None:
    base = parse_headed(RECORDS[10])
    text = tagged(base).replace("<options>", "<analysis>a second look</analysis>\n<options>")
    r = parse_tagged(text)
    assert r.problems == ("repeated <analysis>; kept the first",)
    assert same_stages(r, base)


def test_missing_closing_tag_runs_to_the_next_stage() -> None:
    base = parse_headed(RECORDS[3])
    r = parse_tagged(tagged(base).replace("</analysis>", "").replace("</comparison>", ""))
    assert same_stages(r, base)
    assert r.problems == ("no closing tag for <analysis>", "no closing tag for <comparison>")


def test_tolerates_case_whitespace_and_markdown_around_tags() -> None:
    base = parse_headed(RECORDS[7])
    text = tagged(base)
    shouty = (
        text.replace("<analysis>", "< ANALYSIS >")
        .replace("</analysis>", "</ Analysis>")
        .replace("<options>", "<Options>")
        .replace("</comparison>", "< /COMPARISON >")
    )
    fenced = "```xml\n" + text.replace("</analysis>", "</analysis>\n```\n```") + "\n```"
    bold = text.replace("<analysis>", "**<analysis>**").replace("</analysis>", "**</analysis>**")
    unclosed_fence = text.replace("</prediction>", "```")
    for variant in (shouty, fenced, bold, unclosed_fence):
        r = parse(variant)
        assert r.source_format == "tags"
        assert same_stages(r, base), variant[:80]
    assert parse(shouty).problems == ()
    assert parse(fenced).problems == ()


def test_html_elsewhere_is_kept_as_text() -> None:
    base = parse_headed(RECORDS[5])
    html = '<b>Belton</b> coat<br/> <span class="x">white</span>'
    r = parse_tagged(tagged(base).replace("<analysis>\n", f"<analysis>\n{html}\n"))
    assert r.problems == ()
    assert r.analysis.startswith(html)


def test_stages_out_of_order_are_read_and_recorded() -> None:
    base = parse_headed(RECORDS[11])
    text = tagged(base)
    options = text[text.index("<options>") : text.index("</options>") + len("</options>")]
    swapped = options + "\n" + text.replace(options, "")
    r = parse_tagged(swapped)
    assert r.problems == ("stages out of order: options, analysis, comparison, prediction",)
    assert same_stages(r, base)


def test_no_tags_at_all() -> None:
    r = parse_tagged("just some prose")
    assert r.analysis is None
    assert r.candidates == ()
    assert r.problems == tuple(
        f"missing <{s}>" for s in ("analysis", "options", "comparison", "prediction")
    )


# --- robustness --------------------------------------------------------------------------------


def megabyte_inputs() -> list[str]:
    real = tagged(parse_headed(RECORDS[0]))
    return [
        real.replace("</analysis>", "x" * 1_000_000 + "</analysis>"),
        RECORDS[0].replace(" Comparison Process:", " Comparison Process:\n" + "a b\n" * 330_000),
        "<" + " " * 1_000_000,
        "<analysis" * 110_000,
        "<analysis>" * 100_000,
        "< / analysis" * 80_000,
        "The analysis of candidate subcategories: \n" * 25_000,
        "The analysis of candidate subcategories:" + "\n- x" * 330_000,
        "1. " * 330_000,
        " " * 1_000_000,
        "### Analysis\n" * 80_000,
        "<think>" + "The prediction is: " * 50_000,
        "```\n" * 250_000,
    ]


@pytest.mark.parametrize("parser", [parse, parse_headed, parse_tagged])
def test_megabyte_inputs_parse_in_linear_time(parser: Callable[[str], Rationale]) -> None:
    for text in megabyte_inputs():
        assert len(text) >= 900_000
        started = time.perf_counter()
        parser(text)
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, (text[:40], elapsed)


def test_real_record_padded_to_a_megabyte_still_parses() -> None:
    base = parse_headed(RECORDS[0])
    padding = "More detail on the wings. " * 40_000
    r = parse(tagged(base).replace("</analysis>", padding + "</analysis>"))
    assert r.problems == ()
    assert r.analysis.endswith(padding.strip())
    assert r.candidates == base.candidates


def test_invalid_surrogates_are_kept_not_fatal() -> None:
    junk = b"\xff\xfe broken bytes".decode("utf-8", "surrogateescape")
    base = parse_headed(RECORDS[2])
    for text in (
        tagged(base).replace("</analysis>", junk + "</analysis>"),
        RECORDS[2].replace(" Comparison Process", junk + "\n Comparison Process"),
        "<analysis>\udcff</analysis><options>\udcff, B</options>",
        "\udcff" * 1000,
    ):
        r = parse(text)
        assert isinstance(r, Rationale)
    r = parse(tagged(base).replace("</analysis>", junk + "</analysis>"))
    assert r.analysis.endswith(junk.strip())
    assert junk.strip() in render_target(r, answer="Ferrari 458 Italia Convertible 2012")
