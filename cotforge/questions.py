"""The student's questions: about ten paraphrases per super-category, one chosen per sample.

Fine-R1's records pair each image with one of about ten paraphrased questions ("Can you identify
the model of the airplane in this image?"), so the student does not learn one wording. The
teacher writes the paraphrases once per dataset (one request, stored like any other); the seed
examples below are questions of the released records, and they stand in when the teacher's
answer yields too few usable questions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

SEED_QUESTIONS: dict[str, tuple[str, ...]] = {
    "aircraft": (
        "What is the name of the airplane in this image, and what is its type?",
        "Can you identify the model of the airplane in this image?",
    ),
    "car": (
        "Can you tell the type of car visible in this image?",
        "Can you determine the type of car shown in this image?",
    ),
    "dog": ("What is the dog species in this photo?", "What is the dogs name in this image?"),
    "bird": ("What is the birds name in this image?", "What is the bird species in this photo?"),
    "pet": ("Name the pet depicted in this image.", "What is the pets name?"),
    "flower": (
        "What is the correct species name of this flower?",
        "What is the name of this flower?",
    ),
}
"""Questions of the released Fine-R1 records (``../shared/reference/fine-r1/stage1-sample.json``),
by super-category."""

MIN_QUESTIONS = 3
"""Fewer usable paraphrases than this and the seed questions are used instead."""

_NUMBERING = re.compile(r"^\s*(?:[-*\u2022]|\(?\d{1,2}[.):]|[a-z][.)])\s*")
_MAX_QUESTION_CHARS = 200


def seed_questions(super_category: str) -> tuple[str, ...]:
    """The seed examples for ``super_category`` (a generic pair for one without any)."""
    return SEED_QUESTIONS.get(
        super_category,
        (
            f"What is the specific type of {super_category} shown in this image?",
            f"Can you identify the exact kind of {super_category} in this photo?",
        ),
    )


def parse_questions(text: str | None, *, class_names: Sequence[str] = ()) -> list[str]:
    """The distinct usable questions of the teacher's answer, in order.

    A usable line is one question (numbering and quotes removed) of sensible length that names
    no class: a paraphrase that names one would leak a label into every record using it.

    >>> parse_questions('1. "What kind of aircraft is this?"\\n2) Which model is shown?\\nSure!',
    ...                 class_names=["Boeing 737-300"])
    ['What kind of aircraft is this?', 'Which model is shown?']
    >>> parse_questions("Is this a Boeing 737-300?", class_names=["Boeing 737-300"])
    []
    """
    names = [name.lower() for name in class_names]
    found: dict[str, str] = {}
    for raw in (text or "").splitlines():
        line = _NUMBERING.sub("", raw).strip().strip("\"'\u201c\u201d").strip()
        if not line.endswith("?") or len(line) > _MAX_QUESTION_CHARS or line.count("?") > 1:
            continue
        lowered = line.lower()
        if any(name in lowered for name in names):
            continue
        found.setdefault(" ".join(lowered.split()), line)
    return list(found.values())


def usable_questions(
    text: str | None, *, super_category: str, class_names: Sequence[str]
) -> list[str]:
    """The teacher's paraphrases when there are enough of them, else the seed questions."""
    parsed = parse_questions(text, class_names=class_names)
    return parsed if len(parsed) >= MIN_QUESTIONS else list(seed_questions(super_category))


def question_for(sample_id: str, questions: Sequence[str]) -> str:
    """The question of one sample: chosen by a hash of its id, so it is the same on every rerun
    (and so is the request id it goes into) and the paraphrases spread evenly.

    >>> question_for("aircraft/train/x.jpg", ["A?", "B?", "C?"])
    'A?'
    """
    if not questions:
        msg = "no questions to choose from; pass at least one"
        raise ValueError(msg)
    digest = hashlib.sha256(sample_id.encode("utf-8")).digest()
    return questions[int.from_bytes(digest[:8], "big") % len(questions)]
