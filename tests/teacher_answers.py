"""What a well-behaved teacher answers to cotforge's prompts, built from the 12 real records.

The scripted server (cotforge.testing.openai_server) calls :func:`answer` on each request body:
it reads which prompt it got (questions, concepts or rationale) and, for a rationale, which class
the prompt names, and answers in the tagged format the rationale prompt asks for, with the
analysis and comparison text of a real Fine-R1 record. ``wrong_first`` names classes whose
first answer predicts another class, so tests see resampling.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from cotforge.rationale import Rationale, parse

SAMPLE_RECORDS = Path(__file__).parent / "data" / "fine_r1_stage1_sample.json"
_CLASS = re.compile(r'the kind "([^"]+)"')
_ATTEMPT_SEED = "seed"


@cache
def real_rationales() -> tuple[Rationale, ...]:
    """The parsed assistant turns of the 12 real records (Fine-R1 release, stage 1 sample)."""
    records = json.loads(SAMPLE_RECORDS.read_text(encoding="utf-8"))
    return tuple(parse(record["messages"][2]["content"]) for record in records)


def user_text(body: dict[str, Any]) -> str:
    """The text parts of the last user turn of a chat completion body."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def tagged(class_name: str, *, predict: str | None = None, record: int = 0) -> str:
    """A four-part tagged answer about ``class_name`` from real record ``record``'s text."""
    real = real_rationales()[record % len(real_rationales())]
    predicted = predict or class_name
    options = (
        [class_name, "Other Variant X"] if predicted == class_name else [class_name, predicted]
    )
    return (
        f"<analysis>\n{real.analysis}\n</analysis>\n"
        f"<options>\n" + "\n".join(options) + "\n</options>\n"
        f"<comparison>\n{real.comparison}\n</comparison>\n"
        f"<prediction>\nThe features in the image match best: {predicted}\n</prediction>"
    )


def answer(
    body: dict[str, Any],
    *,
    wrong_first: frozenset[str] = frozenset(),
    unfaithful: frozenset[str] = frozenset(),
) -> str:
    """The answer to one of cotforge's prompts; see the module docstring. The judge finds the
    comparisons about ``unfaithful`` classes unfaithful."""
    text = user_text(body)
    if "different questions" in text:
        return "\n".join(
            f"{n}. {q}"
            for n, q in enumerate(
                [
                    "Which aircraft variant is shown in this photo?",
                    "What exact model of airplane is this?",
                    "Can you name the specific aircraft type in the picture?",
                    "What variant of aircraft appears here?",
                ],
                start=1,
            )
        )
    if "short captions" in text:
        return (
            "shape: long fuselage, swept wings\n"
            "colour: white body, blue tail\n"
            "parts: two underwing engines, winglets\n"
            "context: parked on a taxiway"
        )
    if "Judge only whether" in text:
        found = _CLASS.search(text)
        if found and found.group(1) in unfaithful:
            return "verdict: unfaithful\nreason: the winglets it describes are not in the image"
        return "verdict: faithful\nreason: every feature it names is visible"
    found = _CLASS.search(text)
    if found is None:
        return "I cannot tell which prompt this is."
    name = found.group(1)
    seed = body.get("seed") or 0
    if name in wrong_first and seed % 1000 == 0:
        return tagged(name, predict="Boeing 747-400")
    return tagged(name, record=seed % 1000)
