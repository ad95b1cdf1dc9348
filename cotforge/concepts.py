"""Image-level visual concepts: what the teacher's captions of an image say, kept when it helps.

Fine-R1 gives the teacher, next to the label, a list of visual concepts drawn from several
captions of the same image, each caption stressing other attributes, aggregated and pruned. Here
one request asks for one caption per aspect (shape, colour and markings, parts, context); the
captions split into short phrases, and a phrase is dropped when an image of one of the class's
confusable neighbours (from the plan's confusion ranking) shows it too: "white fuselage" says
nothing that tells a 737-300 from a 737-400, while "three-window door arrangement" might.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ASPECTS: tuple[dict[str, str], ...] = (
    {"name": "shape", "hint": "overall silhouette, proportions and outline"},
    {"name": "colour", "hint": "colours, patterns, markings and textures"},
    {"name": "parts", "hint": "distinctive parts, their number, placement and shape"},
    {"name": "context", "hint": "pose, viewpoint and surroundings that affect what is visible"},
)
"""The aspects the concepts prompt asks one caption for each."""

MAX_CONCEPTS = 12
"""Concepts given to the rationale prompt; more dilute the ones that matter."""

_LINE_LABEL = re.compile(r"^\W{0,8}([A-Za-z][\w /&-]{0,30}?)\s{0,4}[:\-\u2013]\s+")
_PHRASE_SPLIT = re.compile(r"[,;]|\.(?:\s|$)|\s+(?:and|with|plus)\s+")
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_MIN_PHRASE_CHARS = 3
_MAX_PHRASE_WORDS = 8
_STOP_PHRASES = frozenset({"visible", "the image", "the photo", "image", "photo", "unclear"})


@dataclass(frozen=True)
class Concept:
    """One visual phrase and its comparison key (lower-case words, in order)."""

    text: str
    key: str


def _key(phrase: str) -> str:
    return " ".join(_WORD.findall(phrase.lower()))


def parse_captions(text: str | None) -> list[Concept]:
    """The distinct short phrases of a concepts answer, in order of first appearance.

    Each line may start with its aspect ("shape: ..."), which is dropped; the rest splits at
    commas, semicolons, sentence ends and joining words, since a concept is one visible
    attribute. Phrases that are too short, too long to be one attribute, or say nothing
    ("visible") are left out.

    >>> [c.text for c in parse_captions("shape: long fuselage, swept wings\\n"
    ...     "colour: white body with blue tail; red stripe.")]
    ['long fuselage', 'swept wings', 'white body', 'blue tail', 'red stripe']
    >>> parse_captions(None), parse_captions("")
    ([], [])
    """
    found: dict[str, Concept] = {}
    for raw_line in (text or "").splitlines():
        line = raw_line.strip().strip("*-\u2022 ")
        label = _LINE_LABEL.match(line)
        if label:
            line = line[label.end() :]
        for part in _PHRASE_SPLIT.split(line):
            phrase = part.strip(" .*\"'()[]").strip()
            key = _key(phrase)
            words = key.split()
            if (
                len(key) < _MIN_PHRASE_CHARS
                or len(words) > _MAX_PHRASE_WORDS
                or key in _STOP_PHRASES
            ):
                continue
            found.setdefault(key, Concept(phrase, key))
    return list(found.values())


def discriminative(
    own: Sequence[Concept],
    neighbours: Iterable[Sequence[Concept]],
    *,
    limit: int = MAX_CONCEPTS,
) -> list[str]:
    """``own`` concepts that no neighbour image shows, at most ``limit``, in order.

    When every concept is shared (a plain image, near-identical classes), the first few are
    kept anyway: the rationale still needs something to describe, and the label-conditioned
    teacher does the discriminating.

    >>> mine = parse_captions("white fuselage, three cabin doors, winglets")
    >>> theirs = [parse_captions("white fuselage, two cabin doors")]
    >>> discriminative(mine, theirs)
    ['three cabin doors', 'winglets']
    >>> discriminative(parse_captions("white fuselage"), theirs)
    ['white fuselage']
    """
    shared = {concept.key for group in neighbours for concept in group}
    kept = [concept.text for concept in own if concept.key not in shared]
    if not kept:
        kept = [concept.text for concept in own[: min(limit, 3)]]
    return kept[:limit]


def neighbour_concepts(
    class_index: int,
    *,
    ranking: Mapping[int, Sequence[int]],
    concepts_by_class: Mapping[int, Sequence[Sequence[Concept]]],
    neighbours: int,
) -> list[Sequence[Concept]]:
    """The concept lists of the images of ``class_index``'s ``neighbours`` most confusable
    classes that have any (classes without planned images are passed over)."""
    found: list[Sequence[Concept]] = []
    taken = 0
    for other in ranking.get(class_index, ()):
        groups = concepts_by_class.get(other)
        if not groups:
            continue
        found.extend(groups)
        taken += 1
        if taken == neighbours:
            break
    return found
