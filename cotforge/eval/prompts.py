"""What an evaluated model is asked: Fine-R1's prompts, and an answer-only one for baselines.

The Fine-R1 prompts are worded exactly as in the released evaluation script
(``eval/evaluation.py`` of PKU-ICST-MIPL/FineR1_ICLR2026), options shown as a Python list as the
script formats them, so a Fine-R1 checkpoint sees what it was measured with. They ask for
``<think>`` reasoning and an ``<answer>``; an output without an answer tag is wrong, as there.
A model not trained to reason (a baseline such as Qwen2.5-VL-7B-Instruct) is better asked for
the name alone: its whole reply counts as the answer when it writes no tags.

Each template's digest is stored with every prediction and hashed into request ids, so a
reworded prompt never reuses an answer to the old wording.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache

from cotforge.eval.metrics import Mode, PromptStyle

TEMPLATES: dict[tuple[PromptStyle, Mode], str] = {
    ("fine-r1", "closed"): (
        "Given the question: {question}, based on the options provided in {options}, output "
        "the thinking process in <think> </think> and final choice in <answer> </answer> tags. "
        "The response format should be: <think>...</think> <answer>choice</answer>."
    ),
    ("fine-r1", "open"): (
        "Given the question: {question}. This is a fine-grained question. Output reasoning in "
        "<think></think> and the final answer in <answer></answer>."
    ),
    ("answer-only", "closed"): (
        "{question}\nOptions: {options}\nReply with the one option that matches the image, "
        "copied exactly as written, inside <answer> </answer> tags, and nothing else."
    ),
    ("answer-only", "open"): (
        "{question}\nReply with the exact name of the {super_category} in the image, as "
        "specific as you can, inside <answer> </answer> tags, and nothing else."
    ),
    ("zero-shot", "closed"): "a photo of a {option}, a type of {super_category}.",
}
"""Templates by (style, mode). The zero-shot one is the CLIP text prompt for each option (the
CLIP paper's template for fine-grained datasets)."""


@cache
def template_digest(style: PromptStyle, mode: Mode) -> str:
    """The version of one template: 16 hex digits of its SHA-256.

    >>> len(template_digest("fine-r1", "closed"))
    16
    """
    text = _template(style, mode)
    return hashlib.sha256(f"{style}/{mode}\x1f{text}".encode()).hexdigest()[:16]


def render(
    style: PromptStyle,
    mode: Mode,
    *,
    question: str,
    options: Sequence[str] = (),
    super_category: str,
) -> str:
    """The text of one question in ``style``; closed-world prompts list ``options``.

    >>> print(render("fine-r1", "closed", question="Which dog is it?", options=["A", "B"],
    ...              super_category="dog"))  # doctest: +ELLIPSIS
    Given the question: Which dog is it?, based on the options provided in ['A', 'B'], output...
    >>> render("answer-only", "closed", question="Which dog?", options=["A", "B"],
    ...        super_category="dog").splitlines()[1]
    'Options: A; B'
    """
    template = _template(style, mode)
    if mode == "closed" and not options:
        msg = "a closed-world prompt needs the options"
        raise ValueError(msg)
    shown = repr(list(options)) if style == "fine-r1" else "; ".join(options)
    return template.format(question=question, options=shown, super_category=super_category)


def option_prompt(option: str, *, super_category: str) -> str:
    """The zero-shot text for one option.

    >>> option_prompt("Boeing 737-300", super_category="aircraft")
    'a photo of a Boeing 737-300, a type of aircraft.'
    """
    template = _template("zero-shot", "closed")
    return template.format(option=option, super_category=super_category)


def _template(style: PromptStyle, mode: Mode) -> str:
    try:
        return TEMPLATES[(style, mode)]
    except KeyError:
        if style == "zero-shot":
            msg = "a zero-shot CLIP/SigLIP model needs options: evaluate it with --mode closed"
        else:
            known = sorted({s for s, _ in TEMPLATES})
            msg = f"unknown prompt style {style!r}; choose one of {', '.join(known)}"
        raise ValueError(msg) from None
