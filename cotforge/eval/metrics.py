"""How one answer is scored: strict accuracy, the paper's text inclusion, and SS_rel.

Three numbers per answer, because they answer different questions:

- strict accuracy (:func:`cotforge.scoring.score`): the answer names the true class and no
  other class of the dataset, by display name or alias. An answer listing several classes is
  wrong. This is the number to trust.
- text inclusion: the lower-cased truth is a substring of the answer, as Fine-R1's released
  script counts it. It accepts "A or B or C", so it is kept only to put numbers beside the
  paper's. In the closed world the script compares whole names; in the open world it drops the
  model year of a car first (:func:`cotforge.scoring.text_inclusion`).
- SS_rel (open world): how much closer the answer is to the truth than the bare super-category
  word is, in a text encoder's space: ``max(0, (s(pred, gt) - s(super, gt)) / (1 - s(super,
  gt)))``. "a bird" scores 0 for any bird; the exact name scores 1.

The released script picks the super-category word from the image path and gets birds, dogs and
pets wrong (they fall back to "object", which inflates their SS_rel); here it is the dataset's
own word from ``annotations/<dataset>/dataset.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cotforge.data.annotations import ClassInfo, load_annotations
from cotforge.data.registry import canonical_name
from cotforge.scoring import ClassMatcher, extract_answer, score, text_inclusion

Mode = Literal["closed", "open"]
PromptStyle = Literal["fine-r1", "answer-only", "zero-shot"]

_DEGENERATE = 1e-6
"""Below this, ``1 - s(super, gt)`` means the encoder cannot tell the truth from the bare
super-category word, and SS_rel is undefined; it is scored 0 rather than divided by ~0."""


def super_category(dataset: str) -> str:
    """The word SS_rel measures answers against: what every class of the dataset is a kind of.

    >>> [super_category(n) for n in ("aircraft", "cub", "cars", "dogs", "flowers", "pets")]
    ['aircraft', 'bird', 'car', 'dog', 'flower', 'pet']
    >>> super_category("bird")
    'bird'
    """
    return load_annotations(canonical_name(dataset)).super_category


def relative_similarity(similarity: float, baseline: float) -> float:
    """SS_rel from the two cosines: ``max(0, (similarity - baseline) / (1 - baseline))``.

    Args:
        similarity: cosine of the answer and the ground truth.
        baseline: cosine of the super-category word and the ground truth.

    >>> relative_similarity(1.0, 0.6)
    1.0
    >>> round(relative_similarity(0.8, 0.6), 6)
    0.5
    >>> relative_similarity(0.5, 0.6)
    0.0
    """
    room = 1.0 - baseline
    if room <= _DEGENERATE:
        return 0.0
    return max(0.0, min(1.0, (similarity - baseline) / room))


def ss_rel(prediction: np.ndarray, truth: np.ndarray, word: np.ndarray) -> float:
    """SS_rel of three unit-length embeddings: the answer, the ground truth, the super-category.

    >>> gt = np.array([1.0, 0.0]); word = np.array([0.6, 0.8])
    >>> ss_rel(gt, gt, word), ss_rel(word, gt, word)
    (1.0, 0.0)
    """
    return relative_similarity(float(prediction @ truth), float(word @ truth))


def harmonic_mean(seen: float, unseen: float) -> float:
    """The harmonic mean of the seen and unseen scores, 0 when either is 0: a model must do
    well on both, and a high seen score cannot make up for failing the unseen classes.

    >>> harmonic_mean(90.0, 60.0), harmonic_mean(80.0, 0.0)
    (72.0, 0.0)
    """
    if seen <= 0 or unseen <= 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)


def closed_inclusion(answer: str | None, truth_name: str) -> bool:
    """The released closed-world rule: the truth, lower-cased with ``_`` as spaces, is a
    substring of the answer treated alike; no answer is wrong.

    >>> closed_inclusion("Acura TL Type-S 2008 or Acura RL Sedan 2012", "Acura TL Type-S 2008")
    True
    >>> closed_inclusion("Acura TL Type-S", "Acura TL Type-S 2008")
    False
    """
    if not answer:
        return False
    return truth_name.lower().replace("_", " ") in answer.lower().replace("_", " ")


@dataclass(frozen=True)
class Judged:
    """The verdict on one model output, before SS_rel (which needs the text encoder)."""

    answer: str | None
    """The parsed answer: the last ``<answer>`` content; for answer-only and zero-shot
    prompts, the whole output when it has no tags."""
    correct: bool
    text_inclusion: bool
    named: tuple[str, ...]
    reason: str
    similarity_text: str
    """What SS_rel compares with the truth in the open world: the answer, or the whole output
    when there is none (as the released script does)."""


def judge_output(
    output: str | None,
    truth: ClassInfo,
    *,
    matcher: ClassMatcher,
    mode: Mode,
    style: PromptStyle,
) -> Judged:
    """Parse and score one output for ``truth`` (strict and text inclusion).

    >>> m = ClassMatcher.for_dataset("aircraft")
    >>> truth = m.annotations.by_name["Boeing 737-300"]
    >>> both = "<think>...</think><answer>Boeing 737-300 or Boeing 737-400</answer>"
    >>> j = judge_output(both, truth, matcher=m, mode="closed", style="fine-r1")
    >>> j.correct, j.text_inclusion, j.reason
    (False, True, 'names 2 classes: Boeing 737-300, Boeing 737-400')
    """
    text = output or ""
    answer = extract_answer(text)
    if answer is None and style != "fine-r1":
        answer = text.strip() or None
    verdict = score(answer, truth, matcher)
    if mode == "closed":
        included = closed_inclusion(answer, truth.name)
    else:
        included = text_inclusion(answer or text, truth.name, dataset=matcher.annotations.name)
    reason = verdict.reason if answer is not None else "no <answer> tag"
    return Judged(
        answer=answer,
        correct=verdict.correct,
        text_inclusion=included,
        named=verdict.named,
        reason=reason,
        similarity_text=(answer or text).strip(),
    )


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over trials.

    >>> mean_std([80.0, 82.0, 84.0])
    (82.0, 2.0)
    >>> mean_std([70.0])
    (70.0, 0.0)
    """
    if not values:
        msg = "mean_std needs at least one value"
        raise ValueError(msg)
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return float(array.mean()), std
