"""The columns of each exported config, as ``datasets`` features: one place that says what a
row holds, used for the parquet schema, the card's ``dataset_info`` and its column table.

Images are ``datasets.Image`` (a struct of the encoded bytes and a relative name), so
``load_dataset`` decodes them to PIL images and the Hub's viewer shows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Features

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "sft": {
        "images": "the image, as a list of one (the shape TRL's vision collators take)",
        "messages": "system prompt; user turn with an image placeholder and the question; "
        "assistant turn with the `<think>...</think><answer>...</answer>` target",
        "label": "the dataset's own label of the class",
        "dataset": "source dataset (aircraft, cub, cars, dogs, flowers, pets)",
        "super_category": "what the dataset's classes are kinds of (aircraft, bird, ...)",
        "split": "seen or unseen: whether the class is a training class of the split",
        "rationale_id": "the rationale's id in the cotforge store that made this file",
    },
    "tapo": {
        "image": "the anchor image",
        "image_positive": "another image of the anchor's class",
        "image_negative": "an image of the most confusable other class",
        "prompt": "user turn: image placeholder, question and the reasoning-format suffix",
        "answer": "the class name rewards match against",
        "aliases": "other names that mean the same class",
        "label": "the dataset's own label of the anchor's class",
        "negative_label": "the dataset's own label of the negative's class",
        "dataset": "source dataset",
    },
    "eval": {
        "image": "a test image",
        "question": "the question asked about it",
        "answer": "the class name (ground truth)",
        "options": "closed-world choices: the answer and 3 close classes, in a seeded order",
        "label": "the dataset's own label of the class",
        "dataset": "source dataset",
    },
}
"""What each column of each config means, for the dataset card."""


def config_features(config: str) -> Features:
    """The ``datasets.Features`` of ``config`` (sft, tapo or eval), columns in card order."""
    from datasets import Features, Image, List, Value

    text = Value("string")
    message = {"role": text, "content": List({"type": text, "text": text})}
    columns = {
        "sft": {
            "images": List(Image()),
            "messages": List(message),
            "label": text,
            "dataset": text,
            "super_category": text,
            "split": text,
            "rationale_id": text,
        },
        "tapo": {
            "image": Image(),
            "image_positive": Image(),
            "image_negative": Image(),
            "prompt": List(message),
            "answer": text,
            "aliases": List(text),
            "label": text,
            "negative_label": text,
            "dataset": text,
        },
        "eval": {
            "image": Image(),
            "question": text,
            "answer": text,
            "options": List(text),
            "label": text,
            "dataset": text,
        },
    }
    if config not in columns:
        msg = f"unknown config {config!r}; configs are {', '.join(columns)}"
        raise ValueError(msg)
    assert list(columns[config]) == list(DESCRIPTIONS[config])
    return Features(columns[config])
