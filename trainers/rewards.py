"""Fine-R1's rewards for TAPO, as plain TRL reward functions.

TRL calls a reward function as ``func(prompts=..., completions=..., completion_ids=..., **columns)``
with every other dataset column passed by name, one value per completion, and wants one float
per completion back. The ``tapo`` export carries the columns these functions read: ``answer``
(the class name), ``aliases`` and ``dataset``.

The paper's reward is ``0.9 * accuracy + 0.1 * format``. :class:`~trainers.tapo.TAPOTrainer`
passes :data:`REWARD_FUNCS` with ``reward_weights`` :data:`REWARD_WEIGHTS` rather than one
combined function, so TRL logs each part (``rewards/accuracy_reward/mean``, ...) beside the
weighted total (``reward``); :func:`fine_r1_reward` is the same sum as one function, for callers
that want a single number.

Accuracy goes through :mod:`cotforge.scoring`, the rule verification and evaluation share, and
is deliberately stricter than the released code, whose substring test pays "A or B or C": an
answer naming two classes of the dataset, an empty answer, or no ``<answer>`` at all scores 0.
Format is the released regex, applied after the released code's whitespace clean-up around
``<``, ``>`` and ``/`` (it forgave ``< /think >``-style tags from Qwen2.5-VL-32B).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from cotforge.data.annotations import ClassInfo
from cotforge.errors import ConfigError
from cotforge.scoring import ClassMatcher, extract_answer, score

ACCURACY_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1

FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
"""The whole response must match (``fullmatch``): reasoning, then the answer, nothing after."""
_TAG_SPACE = re.compile(r"\s*(<|>|/)\s*")

Completion = str | Sequence[dict[str, Any]]
"""A standard completion is a string; a conversational one is a list of messages."""


def completion_text(completion: Completion) -> str:
    """The text of one completion, whether TRL passed a string or a list of messages.

    >>> completion_text([{"role": "assistant", "content": "<answer>Pug</answer>"}])
    '<answer>Pug</answer>'
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    parts: list[str] = []
    for message in completion:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(part.get("text") or "" for part in content if part.get("type") == "text")
    return "".join(parts)


def format_reward(completions: Sequence[Completion], **kwargs: Any) -> list[float]:
    """1.0 where the response is ``<think>...</think>`` then ``<answer>...</answer>``, else 0.0.

    Args:
        completions: the generated completions, strings or lists of messages.
        **kwargs: the other columns TRL passes; unused.

    Returns:
        One reward per completion.

    >>> format_reward(["<think>wings</think>\\n<answer>Boeing 707-320</answer>", "Boeing 707-320"])
    [1.0, 0.0]
    >>> format_reward(["< think >x< /think ><answer>y</answer>", "<think>x</think><answer>y"])
    [1.0, 0.0]
    """
    return [
        1.0 if FORMAT.fullmatch(_TAG_SPACE.sub(r"\1", completion_text(c))) else 0.0
        for c in completions
    ]


def accuracy_reward(
    completions: Sequence[Completion],
    answer: Sequence[str],
    dataset: Sequence[str],
    aliases: Sequence[Sequence[str] | None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """1.0 where the last ``<answer>`` names the row's class and no other class, else 0.0.

    Args:
        completions: the generated completions.
        answer: per completion, the true class's display name (the export's ``answer``).
        dataset: per completion, the dataset the class belongs to (its ``annotations/`` name).
        aliases: per completion, other names of the class; names not already in the dataset's
            annotations count as well.
        **kwargs: the other columns TRL passes; unused.

    Returns:
        One reward per completion.

    Raises:
        UnknownDatasetError: a ``dataset`` without annotations (its class list is needed to
            refuse answers that name several classes).
        ConfigError: an ``answer`` that is not a class of its dataset, or an alias that names
            another class too.

    >>> done = "<think>...</think><answer>{}</answer>"
    >>> accuracy_reward(
    ...     [done.format("Boeing 707-320"), done.format("Boeing 707-320 or Boeing 727-200"),
    ...      done.format(""), "Boeing 707-320"],
    ...     answer=["Boeing 707-320"] * 4, dataset=["aircraft"] * 4)
    [1.0, 0.0, 0.0, 0.0]
    """
    names = aliases if aliases is not None else [None] * len(completions)
    rows = zip(completions, answer, dataset, names, strict=True)
    return [
        1.0 if _scores(completion_text(c), truth, source, tuple(extra or ())) else 0.0
        for c, truth, source, extra in rows
    ]


def fine_r1_reward(
    completions: Sequence[Completion],
    answer: Sequence[str],
    dataset: Sequence[str],
    aliases: Sequence[Sequence[str] | None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """``0.9 * accuracy + 0.1 * format`` in one function (see the module docstring).

    >>> fine_r1_reward(["<think>x</think><answer>Boeing 707-320</answer>", "<answer>Boeing 707-320"
    ...     "</answer>"], answer=["Boeing 707-320"] * 2, dataset=["aircraft"] * 2)
    [1.0, 0.9]
    """
    right = accuracy_reward(completions, answer, dataset, aliases)
    shaped = format_reward(completions)
    return [ACCURACY_WEIGHT * a + FORMAT_WEIGHT * f for a, f in zip(right, shaped, strict=True)]


REWARD_FUNCS = (accuracy_reward, format_reward)
"""The TAPO trainer's default reward functions, in the order of :data:`REWARD_WEIGHTS`."""
REWARD_WEIGHTS = (ACCURACY_WEIGHT, FORMAT_WEIGHT)


def _scores(text: str, truth_name: str, source: str, aliases: tuple[str, ...]) -> bool:
    matcher, truth = _matcher_for_row(source, truth_name, aliases)
    return score(extract_answer(text), truth, matcher).correct


@lru_cache(maxsize=1024)
def _matcher_for_row(
    source: str, truth_name: str, aliases: tuple[str, ...]
) -> tuple[ClassMatcher, ClassInfo]:
    """The dataset's matcher and the row's class; a row alias the annotations lack widens that
    class in a matcher of its own (built once per distinct row, then cached)."""
    matcher = ClassMatcher.for_dataset(source)
    truth = matcher.annotations.by_name.get(truth_name)
    if truth is None:
        msg = (
            f"answer {truth_name!r} is not a class of {source!r} (annotations/{source}/"
            "classes.jsonl); export the data again with this cotforge so names match"
        )
        raise ConfigError(msg)
    extra = tuple(name for name in aliases if name not in truth.aliases and name != truth.name)
    if not extra:
        return matcher, truth
    widened = replace(truth, aliases=truth.aliases + extra)
    classes = [widened if info is truth else info for info in matcher.annotations.classes]
    return ClassMatcher(replace(matcher.annotations, classes=classes)), widened
