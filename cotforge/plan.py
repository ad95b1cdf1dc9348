"""``cotforge plan``: split a dataset's classes, sample k shots per seen class, build triplets.

The plan is the input of every later stage: generation asks the teacher about its anchors, TAPO
trains on its triplets. It is written in one transaction and replaces the dataset's previous
plan, so re-planning never mixes two plans' anchors; earlier teacher calls stay in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import Progress

from cotforge.data.confusion import ConfusionStrategy, get_strategy
from cotforge.data.sampling import (
    IsUsable,
    KShotResult,
    TripletResult,
    build_triplets,
    decodable,
    select_kshot,
)
from cotforge.errors import ConfigError

if TYPE_CHECKING:
    from cotforge.config import PlanOptions
    from cotforge.data.annotations import ClassSplit
    from cotforge.data.base import ImageRecord, Source
    from cotforge.store import Store


@dataclass(frozen=True)
class PlanSummary:
    """What a plan holds, for the summary table and for callers."""

    run_id: str
    dataset: str
    shots: int
    strategy: str
    seen_classes: int
    unseen_classes: int
    anchors: int
    unseen_anchors: int
    triplets: int
    dropped: int
    skipped_images: int
    short_classes: int
    absent_classes: int

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order."""
        return [
            ("seen classes", self.seen_classes),
            ("unseen classes (held out)", self.unseen_classes),
            ("shots per seen class", self.shots),
            ("anchors planned", self.anchors),
            ("unseen anchors planned (no triplets)", self.unseen_anchors),
            (f"triplets ({self.strategy} negatives)", self.triplets),
            ("anchors without a triplet", self.dropped),
            ("classes with fewer shots", self.short_classes),
            ("seen classes without images here (left out)", self.absent_classes),
            ("images skipped (unreadable)", self.skipped_images),
        ]


def _progress_check(is_usable: IsUsable, progress: Progress, task: int) -> IsUsable:
    """Count every image decoded, so a long plan over slow disks shows it is moving."""

    def check(record: ImageRecord) -> str | None:
        reason = is_usable(record)
        progress.advance(task)
        return reason

    return check


def make_plan(
    source: Source, store: Store, options: PlanOptions, *, console: Console | None = None
) -> PlanSummary:
    """Sample the plan for ``source`` with ``options`` and write it to ``store``."""
    if options.from_split not in source.splits:
        msg = (
            f"--from-split {options.from_split!r} is not a split of {source.title}; "
            f"choose one of {', '.join(source.splits)}"
        )
        raise ConfigError(msg)
    notes = source.annotations
    class_split = notes.split(
        mode=options.split_mode, unseen_fraction=options.unseen_fraction, seed=options.split_seed
    )
    seen = [info for info in notes.classes if class_split[info.index] == "seen"]
    listed = source.verify_files(options.from_split)
    present = {r.class_index for r in listed}
    # A partial copy of a dataset (a subset, a synthetic one) lists images of some classes only;
    # those without any are left out and counted, not an error.
    absent = [info for info in seen if info.index not in present]
    seen = [info for info in seen if info.index in present]
    seen_indexes = {info.index for info in seen}
    pool = [r for r in listed if r.class_index in seen_indexes]
    strategy = _strategy(source, options)

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("checking images", total=None)
        is_usable = _progress_check(decodable(source), progress, task)
        kshot = select_kshot(
            pool,
            shots=options.shots,
            classes=seen_indexes,
            seed=options.seed,
            is_usable=is_usable,
            allow_fewer=options.allow_fewer,
            class_names={info.index: info.name for info in seen},
        )
        unseen = _unseen_kshot(source, listed, seen_indexes, class_split, options, is_usable)
        progress.update(task, description="ranking confusable classes")
        ranking = strategy.rank(seen)
        progress.update(task, description="building triplets")
        triplets = build_triplets(
            kshot.images,
            pool,
            strategy_ranking=ranking,
            strategy=strategy.name,
            seed=options.seed,
            is_usable=is_usable,
        )

    config = options.model_dump(mode="json") | {"root": str(source.root.resolve())}
    with store.transaction():
        run_id = store.start_run("plan", config, {"cotforge": version("cotforge")})
        store.replace_plan(
            source.name,
            images=_image_rows(source, kshot, triplets, unseen),
            samples=_sample_rows(source, kshot, class_split, run_id, options.seed)
            + (_sample_rows(source, unseen, class_split, run_id, options.seed) if unseen else []),
            triplets=[
                {
                    "anchor_id": t.anchor.image_id,
                    "positive_id": t.positive.image_id,
                    "negative_id": t.negative.image_id,
                    "negative_class_index": t.negative_class_index,
                    "negative_label": notes.classes[t.negative_class_index].label,
                    "strategy": t.strategy,
                    "run_id": run_id,
                }
                for t in triplets.triplets
            ],
            skipped=[
                {"image_id": record.image_id, "run_id": run_id, "reason": reason}
                for record, reason in _unique_skips(kshot, triplets)
            ]
            + [
                {"image_id": anchor.image_id, "run_id": run_id, "reason": f"no triplet: {why}"}
                for anchor, why in triplets.dropped
            ],
        )
        store.finish_run(run_id, "ok")
    return PlanSummary(
        run_id=run_id,
        dataset=source.name,
        shots=options.shots,
        strategy=strategy.name,
        seen_classes=len(seen),
        unseen_classes=sum(1 for split in class_split.values() if split == "unseen"),
        anchors=len(kshot.images),
        unseen_anchors=len(unseen.images) if unseen else 0,
        triplets=len(triplets.triplets),
        dropped=len(triplets.dropped),
        skipped_images=len(_unique_skips(kshot, triplets)),
        short_classes=len(kshot.short),
        absent_classes=len(absent),
    )


def _unseen_kshot(
    source: Source,
    listed: list[ImageRecord],
    seen_indexes: set[int],
    class_split: dict[int, ClassSplit],
    options: PlanOptions,
    is_usable: IsUsable,
) -> KShotResult | None:
    """``unseen_shots`` images per unseen class, or None when none are asked for. They are
    anchors for generation only: triplets train TAPO, which must never see an unseen class."""
    if not options.unseen_shots:
        return None
    listed_classes = {r.class_index for r in listed}
    unseen_indexes = {
        index
        for index, split in class_split.items()
        if split == "unseen" and index in listed_classes
    }
    return select_kshot(
        [r for r in listed if r.class_index not in seen_indexes],
        shots=options.unseen_shots,
        classes=unseen_indexes,
        seed=options.seed,
        is_usable=is_usable,
        allow_fewer=options.allow_fewer,
        class_names={i: info.name for i, info in enumerate(source.annotations.classes)},
    )


def _strategy(source: Source, options: PlanOptions) -> ConfusionStrategy:
    """The confusion strategy, given what each one needs from the dataset."""
    if options.strategy == "text":
        return get_strategy("text", super_category=source.annotations.super_category)
    if options.strategy == "image":
        return get_strategy(
            "image",
            source=source,
            split=options.from_split,
            images_per_class=options.shots,
            seed=options.seed,
        )
    return get_strategy(options.strategy)


def _unique_skips(kshot: KShotResult, triplets: TripletResult) -> list[tuple[ImageRecord, str]]:
    """Unreadable images found by either step, each once."""
    found: dict[str, tuple[ImageRecord, str]] = {}
    for record, reason in [*kshot.skipped, *triplets.skipped]:
        found.setdefault(record.image_id, (record, reason))
    return list(found.values())


def _image_rows(
    source: Source, kshot: KShotResult, triplets: TripletResult, unseen: KShotResult | None
) -> list[dict]:
    """Every image the plan refers to: anchors (seen and unseen), positives and negatives."""
    records: dict[str, ImageRecord] = {r.image_id: r for r in kshot.images}
    records.update({r.image_id: r for r in (unseen.images if unseen else [])})
    for t in triplets.triplets:
        records.setdefault(t.positive.image_id, t.positive)
        records.setdefault(t.negative.image_id, t.negative)
    classes = source.annotations.classes
    return [
        {
            "image_id": r.image_id,
            "dataset": r.dataset,
            "split": r.split,
            "key": r.key,
            "class_index": r.class_index,
            "label": classes[r.class_index].label,
            "class_name": classes[r.class_index].name,
        }
        for r in records.values()
    ]


def _sample_rows(
    source: Source,
    kshot: KShotResult,
    class_split: dict[int, ClassSplit],
    run_id: str,
    seed: int,
) -> list[dict]:
    classes = source.annotations.classes
    return [
        {
            "sample_id": record.image_id,
            "run_id": run_id,
            "dataset": source.name,
            "class_index": index,
            "label": classes[index].label,
            "class_name": classes[index].name,
            "class_split": class_split[index],
            "shot": shot,
            "seed": seed,
        }
        for index, chosen in kshot.selected.items()
        for shot, record in enumerate(chosen)
    ]
