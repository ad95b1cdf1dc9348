"""The rows of each exported config, read from the store (and, for ``eval``, the datasets).

- ``sft``: one row per curated rationale (:meth:`Store.export_rationales` says which): the
  student's system prompt, the question it was asked with the image, and the target rendered
  from the rationale's stages (:func:`cotforge.rationale.render_target`).
- ``tapo``: one row per planned triplet of a seen class: anchor, positive and negative images,
  the question with Fine-R1's RL suffix and no options, the answer and its aliases.
- ``eval``: one row per test image of the seen and unseen classes (:mod:`cotforge.eval_set`).

Messages use the structured content of ``transformers`` chat templates: every turn's
``content`` is a list of ``{"type", "text"}`` parts and the user turn holds one
``{"type": "image"}`` part, which TRL's vision collators fill with the row's image and chat
templates turn into the model's image tokens; the images live in their own column. Rows are
made lazily, in a stable order, with their images as :class:`ImageRef` s that the writer
encodes in worker threads.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotforge.export.images import ImageRef
from cotforge.questions import question_for, seed_questions, usable_questions
from cotforge.rationale import parse, render_target

if TYPE_CHECKING:
    import polars as pl

    from cotforge.data.annotations import Annotations
    from cotforge.data.base import Source
    from cotforge.store import Store

TAPO_SUFFIX = (
    "You first think through the reasoning process as an internal monologue, enclosed within "
    "<think> </think> tags. Then, provide your final answer enclosed within <answer> </answer> "
    "tags."
)
"""What Fine-R1's RL stage appends to the question (no candidate list)."""


def text_turn(role: str, text: str) -> dict[str, Any]:
    """A system or assistant turn in the structured content shape."""
    return {"role": role, "content": [{"type": "text", "text": text}]}


def user_turn(question: str) -> dict[str, Any]:
    """The user turn: the image placeholder, then the question."""
    return {"role": "user", "content": [{"type": "image", "text": None}, text_part(question)]}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@dataclass(frozen=True)
class Row:
    """One output row: its split, its column values (images as :class:`ImageRef`), and what the
    store's ``exports`` table and the card's counts need to know about it."""

    split: str
    values: dict[str, Any]
    sample_id: str
    rationale_id: str | None
    dataset: str
    class_name: str
    class_split: str


@dataclass
class ConfigRows:
    """What one config will write: its splits, the images its rows embed (checked before any
    writing), how many rows were selected, and the rows themselves, made on demand.

    ``left_out`` collects (id, reason) for selected records that could not become a row (a
    reviewed edit that no longer renders), filled while the rows are made.
    """

    name: str
    splits: tuple[str, ...]
    images: list[ImageRef]
    selected: int
    make: Callable[[ConfigRows], Iterator[Row]]
    left_out: list[tuple[str, str]] = field(default_factory=list)

    def rows(self) -> Iterator[Row]:
        """The rows, made now."""
        return self.make(self)


@dataclass
class Catalog:
    """The datasets an export reads: their sources (over this machine's roots), the folders
    imported images are relative to, and each one's class split as its latest plan made it."""

    sources: dict[str, Source]
    import_roots: dict[str, Path]
    plans: dict[str, dict[str, Any]]
    unrooted: set[str] = field(default_factory=set)
    """Datasets whose folder is unknown (no plan, no import, no --root)."""
    _splits: dict[str, dict[int, str]] = field(default_factory=dict)

    def annotations(self, dataset: str) -> Annotations:
        return self.sources[dataset].annotations

    def class_split(self, dataset: str, class_index: int) -> str:
        """seen/unseen of a class, by the split options of the dataset's latest plan (the
        paper's split without one): for images no plan sampled, such as imports."""
        if dataset not in self._splits:
            plan = self.plans.get(dataset) or {}
            self._splits[dataset] = self.annotations(dataset).split(
                mode=plan.get("split_mode", "paper"),
                unseen_fraction=plan.get("unseen_fraction", 0.4),
                seed=plan.get("split_seed", 0),
            )
        return self._splits[dataset][class_index]


class Questions:
    """The student question of each record: the paraphrase generation asked the teacher with.

    Generation asks each teacher once per dataset for paraphrases (a 'questions' request) and
    picks one per sample with :func:`cotforge.questions.question_for`; a rerun reuses the stored
    answer. A rationale's question therefore comes from the last 'questions' answer of its
    dataset and teacher made before its own request; a failed or unusable answer meant the seed
    questions, as it did in generation. Records without a request (imports) and triplet anchors
    without one take the dataset's latest answer, else the seed questions.
    """

    def __init__(self, answers: pl.DataFrame, catalog: Catalog) -> None:
        self._catalog = catalog
        self._times: dict[tuple[str, str], list[datetime]] = {}
        self._texts: dict[tuple[str, str], list[str | None]] = {}
        self._latest: dict[str, str | None] = {}
        for row in answers.iter_rows(named=True):
            key = (row["dataset"], row["model"])
            text = row["response_text"] if row["status"] == "ok" else None
            self._times.setdefault(key, []).append(row["answered_at"])
            self._texts.setdefault(key, []).append(text)
            self._latest[row["dataset"]] = text
        self._parsed: dict[tuple[str, str | None], list[str]] = {}

    def for_rationale(
        self, dataset: str, sample_id: str, *, model: str | None, requested_at: datetime | None
    ) -> str:
        """The question a generated rationale answered (a seed question for an import)."""
        text = None
        if model is not None and requested_at is not None:
            times = self._times.get((dataset, model), [])
            at = bisect.bisect_right(times, requested_at) - 1
            text = self._texts[(dataset, model)][at] if at >= 0 else None
        return question_for(sample_id, self._questions(dataset, text))

    def for_anchor(self, dataset: str, sample_id: str) -> str:
        """The question of a triplet anchor, from the dataset's latest paraphrases."""
        return question_for(sample_id, self._questions(dataset, self._latest.get(dataset)))

    def _questions(self, dataset: str, text: str | None) -> list[str]:
        key = (dataset, text)
        if key not in self._parsed:
            notes = self._catalog.annotations(dataset)
            self._parsed[key] = (
                usable_questions(
                    text,
                    super_category=notes.super_category,
                    class_names=[info.name for info in notes.classes],
                )
                if text is not None
                else list(seed_questions(notes.super_category))
            )
        return self._parsed[key]


def sft_rows(
    store: Store, *, review: str, catalog: Catalog, questions: Questions, system_prompt: str
) -> ConfigRows:
    """The ``sft`` config: one row per curated rationale."""
    selected = store.export_rationale_images(review=review)
    images = [_rationale_image(r) for r in selected.iter_rows(named=True)]

    def make(config: ConfigRows) -> Iterator[Row]:
        for frame in store.export_rationales(review=review):
            for r in frame.iter_rows(named=True):
                try:
                    target = render_target(parse(r["text"] or ""), answer=r["class_name"])
                except ValueError as err:
                    config.left_out.append((r["rationale_id"], str(err)))
                    continue
                dataset = r["dataset"]
                question = questions.for_rationale(
                    dataset, r["sample_id"], model=r["model"], requested_at=r["requested_at"]
                )
                class_split = r["class_split"] or catalog.class_split(dataset, r["class_index"])
                yield Row(
                    split="train",
                    values={
                        "images": [_rationale_image(r)],
                        "messages": [
                            text_turn("system", system_prompt),
                            user_turn(question),
                            text_turn("assistant", target),
                        ],
                        "label": r["label"],
                        "dataset": dataset,
                        "super_category": catalog.annotations(dataset).super_category,
                        "split": class_split,
                        "rationale_id": r["rationale_id"],
                    },
                    sample_id=r["sample_id"],
                    rationale_id=r["rationale_id"],
                    dataset=dataset,
                    class_name=r["class_name"],
                    class_split=class_split,
                )

    return ConfigRows("sft", ("train",), images, selected.height, make)


def _rationale_image(r: Mapping[str, Any]) -> ImageRef:
    return ImageRef(
        r["dataset"], r["split"], r["key"], r["class_index"], f"rationale {r['rationale_id']}"
    )


def tapo_rows(store: Store, *, catalog: Catalog, questions: Questions) -> ConfigRows:
    """The ``tapo`` config: one row per planned triplet of a seen class (TAPO never trains on
    an unseen class)."""
    triplets = [
        t for t in store.export_triplets().iter_rows(named=True) if t["class_split"] == "seen"
    ]

    def refs(t: Mapping[str, Any]) -> dict[str, ImageRef]:
        owner = f"triplet of anchor {t['anchor_id']}"
        return {
            column: ImageRef(t["dataset"], t[f"{role}_split"], t[f"{role}_key"], index, owner)
            for column, role, index in (
                ("image", "anchor", t["class_index"]),
                ("image_positive", "positive", t["class_index"]),
                ("image_negative", "negative", t["negative_class_index"]),
            )
        }

    def make(config: ConfigRows) -> Iterator[Row]:
        for t in triplets:
            dataset = t["dataset"]
            classes = catalog.annotations(dataset).classes
            question = questions.for_anchor(dataset, t["anchor_id"])
            yield Row(
                split="train",
                values={
                    **refs(t),
                    "prompt": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image", "text": None},
                                text_part(f"{question} {TAPO_SUFFIX}"),
                            ],
                        }
                    ],
                    "answer": t["class_name"],
                    "aliases": list(classes[t["class_index"]].aliases),
                    "label": t["label"],
                    "negative_label": classes[t["negative_class_index"]].label,
                    "dataset": dataset,
                },
                sample_id=t["anchor_id"],
                rationale_id=None,
                dataset=dataset,
                class_name=t["class_name"],
                class_split="seen",
            )

    images = [ref for t in triplets for ref in refs(t).values()]
    return ConfigRows("tapo", ("train",), images, len(triplets), make)


def eval_config_rows(
    datasets: Sequence[str],
    *,
    catalog: Catalog,
    seed: int,
    paper: bool,
    manifests: Path | None,
    per_class: int | None,
) -> ConfigRows:
    """The ``eval`` config: the test images of the seen and unseen classes of ``datasets``,
    with 4 closed-world options in a seeded order, built with :mod:`cotforge.eval_set` from the
    datasets (``paper``: from Fine-R1's manifests). Every row is listed here, so a missing test
    image or an unmappable manifest line fails before anything is written."""
    from cotforge.eval_set import eval_rows, paper_eval_rows

    listed = []
    for dataset in datasets:
        source = catalog.sources[dataset]
        if paper:
            listed.extend(paper_eval_rows(source, manifests, seed=seed))
        else:
            plan = catalog.plans.get(dataset) or {}
            listed.extend(
                eval_rows(
                    source,
                    seed=seed,
                    options=4,
                    split_mode=plan.get("split_mode", "paper"),
                    unseen_fraction=plan.get("unseen_fraction", 0.4),
                    split_seed=plan.get("split_seed", 0),
                    per_class=per_class,
                )
            )

    def ref(row: Any) -> ImageRef:
        record = row.record
        return ImageRef(
            record.dataset, record.split, record.key, record.class_index, "the eval set"
        )

    def make(config: ConfigRows) -> Iterator[Row]:
        for row in listed:
            yield Row(
                split=row.split,
                values={
                    "image": ref(row),
                    "question": row.question,
                    "answer": row.answer,
                    "options": list(row.options),
                    "label": row.label,
                    "dataset": row.dataset,
                },
                sample_id=row.record.image_id,
                rationale_id=None,
                dataset=row.dataset,
                class_name=row.answer,
                class_split=row.split,
            )

    # eval_set checked the test images already; they are listed for the same check as the
    # other configs' all the same, which costs one folder listing.
    return ConfigRows("eval", ("seen", "unseen"), [ref(r) for r in listed], len(listed), make)
