"""TAPO's rewards on real responses: the released Fine-R1 stage-1 records, and edits of them that
a policy under RL really produces (lists of classes, cut-off answers, chatter after the tags)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cotforge.data.annotations import load_annotations
from cotforge.errors import ConfigError, UnknownDatasetError
from tests.test_scoring import RELEASED_TRUTH, SAMPLE
from trainers.rewards import (
    REWARD_FUNCS,
    REWARD_WEIGHTS,
    accuracy_reward,
    fine_r1_reward,
    format_reward,
)


@pytest.fixture(scope="module")
def released() -> list[str]:
    """The teacher's responses of the 12 released records (assistant turns)."""
    records = json.loads(SAMPLE.read_text(encoding="utf-8"))
    return [record["messages"][2]["content"] for record in records]


def columns(pairs: list[tuple[str, str]], aliases: list[list[str]] | None = None) -> dict[str, Any]:
    """The export's columns the rewards read, for (dataset, class name) pairs."""
    return {
        "dataset": [dataset for dataset, _ in pairs],
        "answer": [name for _, name in pairs],
        "aliases": aliases if aliases is not None else [[] for _ in pairs],
    }


def with_answer(response: str, answer: str) -> str:
    head, _, _ = response.rpartition("<answer>")
    return f"{head}<answer>{answer}</answer>"


def test_released_responses_score_full_reward(released: list[str]) -> None:
    data = columns(RELEASED_TRUTH)
    assert format_reward(released) == [1.0] * 12
    assert accuracy_reward(released, **data) == [1.0] * 12
    assert fine_r1_reward(released, **data) == pytest.approx([1.0] * 12)


def test_conversational_completions_are_read_like_strings(released: list[str]) -> None:
    messages = [[{"role": "assistant", "content": text}] for text in released]
    data = columns(RELEASED_TRUTH)
    assert accuracy_reward(messages, **data) == accuracy_reward(released, **data)
    assert format_reward(messages) == format_reward(released)


def test_answers_naming_several_classes_or_none_score_zero(released: list[str]) -> None:
    typhoon = released[0]  # truth: Eurofighter Typhoon (aircraft)
    hedged = [
        with_answer(typhoon, "Eurofighter Typhoon or Tornado"),
        with_answer(typhoon, "Eurofighter Typhoon, F-16A/B, Tornado"),
        with_answer(typhoon, "Tornado"),  # one class, the wrong one
        with_answer(typhoon, ""),
        with_answer(typhoon, "a fighter jet"),  # names no class
        typhoon.rpartition("<answer>")[0],  # cut off before the answer
    ]
    pairs = [("aircraft", "Eurofighter Typhoon")] * len(hedged)
    assert accuracy_reward(hedged, **columns(pairs)) == [0.0] * len(hedged)
    # The released reward's substring test would pay the first two in full.
    assert [float("eurofighter typhoon" in text.lower()) for text in hedged[:2]] == [1.0, 1.0]
    # Format still holds where the tags do; the cut-off response has no answer tag.
    assert format_reward(hedged) == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_format_wants_reasoning_then_answer_and_nothing_else(released: list[str]) -> None:
    text = released[8]  # a pets record
    think, _, rest = text.partition("</think>")
    variants = {
        "answer only": rest.strip(),
        "chatter after the answer": text + "\nHope this helps!",
        "answer before the reasoning": rest.strip() + "\n" + think + "</think>",
        "spaced tags (the release forgives them)": text.replace("</think>", "< /think >"),
        "leading and trailing blank lines": "\n\n" + text + "\n",
    }
    assert dict(zip(variants, format_reward(list(variants.values())), strict=True)) == {
        "answer only": 0.0,
        "chatter after the answer": 0.0,
        "answer before the reasoning": 0.0,
        "spaced tags (the release forgives them)": 1.0,
        "leading and trailing blank lines": 1.0,
    }
    # The total is 0.9 * accuracy + 0.1 * format.
    assert fine_r1_reward([rest.strip()], **columns([RELEASED_TRUTH[8]])) == pytest.approx([0.9])


def test_row_aliases_count_and_cars_need_their_year(released: list[str]) -> None:
    corolla = released[3]  # truth: Toyota Corolla Sedan 2012
    texts = [with_answer(corolla, "Corolla 2012"), with_answer(corolla, "Toyota Corolla Sedan")]
    pairs = [("cars", "Toyota Corolla Sedan 2012")] * 2
    assert accuracy_reward(texts, **columns(pairs)) == [0.0, 0.0]
    widened = columns(pairs, aliases=[["Corolla 2012"], ["Corolla 2012"]])
    assert accuracy_reward(texts, **widened) == [1.0, 0.0]


def test_rows_the_rewards_cannot_judge_are_refused(released: list[str]) -> None:
    text = released[0]
    with pytest.raises(UnknownDatasetError, match="no annotations for dataset 'planes'"):
        accuracy_reward([text], **columns([("planes", "Eurofighter Typhoon")]))
    with pytest.raises(ConfigError, match="'Typhoon Mk2' is not a class of 'aircraft'"):
        accuracy_reward([text], **columns([("aircraft", "Typhoon Mk2")]))
    other = load_annotations("aircraft").by_name["Tornado"].name
    clash = columns([("aircraft", "Eurofighter Typhoon")], aliases=[[other]])
    with pytest.raises(ConfigError, match="names both"):
        accuracy_reward([text], **clash)


def test_default_rewards_and_weights_line_up() -> None:
    assert [f.__name__ for f in REWARD_FUNCS] == ["accuracy_reward", "format_reward"]
    assert REWARD_WEIGHTS == (0.9, 0.1)
