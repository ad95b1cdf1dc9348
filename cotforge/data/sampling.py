"""Seeded k-shot selection and TAPO triplets, as pure functions over image records.

Every choice orders candidates by a hash of (seed, the record's identity) instead of shuffling a
list, so a choice depends only on the seed and on the candidates it is made among. That makes a
plan reproducible from its seed and STABLE: adding classes, reordering the image list or growing
the pool with other classes' images changes no existing class's shots or triplets.

Unusable images (``is_usable`` returns a reason, e.g. the file is corrupt) are skipped and
reported, never fatal; ``is_usable`` runs only on the candidates actually reached, so planning
4 shots opens about 4 images per class, not the whole dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cotforge.errors import CorruptImageError, PlanError

if TYPE_CHECKING:
    from cotforge.data.base import ImageRecord, Source

IsUsable = Callable[["ImageRecord"], "str | None"]
"""Returns ``None`` for an image that may be used, or the reason it may not."""


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def hash_order(images: Iterable[ImageRecord], *, seed: int) -> list[ImageRecord]:
    """Order images by a hash of (seed, dataset, class index, key): a seeded, order-free shuffle.

    The order of any two images never depends on which other images are present, so filtering or
    extending the input keeps the relative order of what remains.
    """
    return sorted(
        images, key=lambda r: (_digest(seed, r.dataset, r.class_index, r.key), r.image_id)
    )


def decodable(source: Source) -> IsUsable:
    """An ``is_usable`` check that decodes the image with ``source`` (its crops included).

    A :class:`CorruptImageError` becomes the skip reason; anything else is a bug and propagates.
    """

    def check(record: ImageRecord) -> str | None:
        try:
            source.open_image(record)
        except CorruptImageError as err:
            return str(err)
        return None

    return check


class _UsableCache:
    """Runs ``is_usable`` at most once per image and remembers every skip, in the order found."""

    def __init__(self, is_usable: IsUsable | None) -> None:
        self._is_usable = is_usable
        self._verdicts: dict[str, str | None] = {}
        self.skipped: list[tuple[ImageRecord, str]] = []

    def __call__(self, record: ImageRecord) -> bool:
        if self._is_usable is None:
            return True
        if record.image_id not in self._verdicts:
            reason = self._is_usable(record)
            self._verdicts[record.image_id] = reason
            if reason is not None:
                self.skipped.append((record, reason))
        return self._verdicts[record.image_id] is None


def _check_unique(images: Sequence[ImageRecord], what: str) -> None:
    seen: set[str] = set()
    for record in images:
        if record.image_id in seen:
            msg = f"{what} lists {record.image_id} more than once; pass each image once"
            raise ValueError(msg)
        seen.add(record.image_id)


@dataclass(frozen=True)
class KShotResult:
    """The shots chosen per class, plus everything a report needs about what went differently."""

    selected: dict[int, list[ImageRecord]]
    """Class index -> its chosen images in hash order; classes in ascending index order."""
    skipped: list[tuple[ImageRecord, str]] = field(default_factory=list)
    """Images passed over because ``is_usable`` gave a reason, with that reason."""
    short: dict[int, int] = field(default_factory=dict)
    """With ``allow_fewer``: class index -> how many images it got (fewer than ``shots``)."""

    @property
    def images(self) -> list[ImageRecord]:
        """All chosen images, class by class."""
        return [record for chosen in self.selected.values() for record in chosen]


def _class_label(index: int, class_names: Mapping[int, str] | None) -> str:
    if class_names and index in class_names:
        return f"{class_names[index]!r} (class {index})"
    return f"class {index}"


def select_kshot(
    images: Sequence[ImageRecord],
    *,
    shots: int,
    classes: Iterable[int],
    seed: int,
    is_usable: IsUsable | None = None,
    allow_fewer: bool = False,
    class_names: Mapping[int, str] | None = None,
) -> KShotResult:
    """Take ``shots`` usable images of each class in ``classes``, in seeded hash order.

    A class's shots depend only on its own images and the seed. A class with fewer usable images
    than ``shots`` raises :class:`PlanError` naming it (``class_names`` gives the names used in
    that message) unless ``allow_fewer``, which takes what there is and lists it in ``short``.

    >>> from pathlib import Path
    >>> from cotforge.data.base import ImageRecord
    >>> pool = [ImageRecord("toy", "train", f"{c}/{i}.jpg", Path("."), c)
    ...         for c in (0, 1) for i in range(5)]
    >>> result = select_kshot(pool, shots=2, classes=[0, 1], seed=0)
    >>> {c: len(chosen) for c, chosen in result.selected.items()}
    {0: 2, 1: 2}
    """
    if shots < 1:
        msg = f"shots must be at least 1; got {shots}"
        raise ValueError(msg)
    _check_unique(images, "images")
    wanted = sorted(set(classes))
    by_class: dict[int, list[ImageRecord]] = {index: [] for index in wanted}
    for record in images:
        if record.class_index in by_class:
            by_class[record.class_index].append(record)
    usable = _UsableCache(is_usable)
    selected: dict[int, list[ImageRecord]] = {}
    for index in wanted:
        chosen: list[ImageRecord] = []
        for record in hash_order(by_class[index], seed=seed):
            if len(chosen) == shots:
                break
            if usable(record):
                chosen.append(record)
        selected[index] = chosen
    short = {index: len(chosen) for index, chosen in selected.items() if len(chosen) < shots}
    if short and not allow_fewer:
        worst = sorted(short.items(), key=lambda item: (item[1], item[0]))
        listed = ", ".join(
            f"{_class_label(index, class_names)} has {count}" for index, count in worst[:3]
        )
        more = f" and {len(worst) - 3} more classes" if len(worst) > 3 else ""
        fewest = worst[0][1]
        advice = (
            f"use --shots {fewest} or fewer, or --allow-fewer"
            if fewest > 0
            else "fix the dataset files or pass --allow-fewer"
        )
        msg = f"--shots {shots} needs {shots} usable images per class, but {listed}{more}; {advice}"
        raise PlanError(msg)
    return KShotResult(selected=selected, skipped=usable.skipped, short=short)


@dataclass(frozen=True)
class Triplet:
    """One TAPO example: the anchor, a same-class positive and a confusable-class negative."""

    anchor: ImageRecord
    positive: ImageRecord
    negative: ImageRecord
    negative_class_index: int
    strategy: str
    """Name of the confusion strategy whose ranking picked the negative class."""


@dataclass(frozen=True)
class TripletResult:
    """Triplets built, anchors that got none (with why), and unusable images passed over."""

    triplets: list[Triplet]
    dropped: list[tuple[ImageRecord, str]] = field(default_factory=list)
    """Anchors without a triplet and the reason (no positive, or no negative class)."""
    skipped: list[tuple[ImageRecord, str]] = field(default_factory=list)
    """Pool images passed over because ``is_usable`` gave a reason, with that reason."""


def _pick(
    candidates: Iterable[ImageRecord],
    *,
    seed: int,
    role: str,
    anchor: ImageRecord,
    usable: _UsableCache,
) -> ImageRecord | None:
    """The first usable candidate in an order seeded by (seed, role, anchor)."""
    ranked = sorted(
        candidates,
        key=lambda r: (_digest(seed, role, anchor.image_id, r.image_id), r.image_id),
    )
    return next((record for record in ranked if usable(record)), None)


def build_triplets(
    anchors: Sequence[ImageRecord],
    images: Sequence[ImageRecord],
    *,
    strategy_ranking: Mapping[int, Sequence[int]],
    strategy: str,
    seed: int,
    is_usable: IsUsable | None = None,
    positive_exclude_anchors: bool = True,
) -> TripletResult:
    """Give every anchor a positive of its own class and a negative of its most confusable class.

    ``images`` is the pool both come from; pass only seen classes' images so no unseen class
    leaks into training. The positive is another usable image of the anchor's class, preferring
    non-anchors when ``positive_exclude_anchors`` (other anchors only when nothing else is left).
    The negative's class is the first class in ``strategy_ranking[anchor class]`` with a usable
    image in the pool, and the image within it is chosen by a hash of (seed, anchor). An anchor
    with no possible positive or negative is dropped with a reason, never fatal.
    """
    _check_unique(anchors, "anchors")
    _check_unique(images, "images")
    anchor_ids = {record.image_id for record in anchors}
    pool: dict[int, list[ImageRecord]] = {}
    for record in images:
        pool.setdefault(record.class_index, []).append(record)
    usable = _UsableCache(is_usable)
    triplets: list[Triplet] = []
    dropped: list[tuple[ImageRecord, str]] = []
    for anchor in anchors:
        if anchor.class_index not in strategy_ranking:
            msg = (
                f"strategy_ranking has no entry for class {anchor.class_index} of anchor "
                f"{anchor.image_id}; rank the same classes the anchors come from"
            )
            raise ValueError(msg)
        others = [r for r in pool.get(anchor.class_index, []) if r.image_id != anchor.image_id]
        preferred = [r for r in others if r.image_id not in anchor_ids]
        positive = None
        if positive_exclude_anchors:
            positive = _pick(preferred, seed=seed, role="positive", anchor=anchor, usable=usable)
        if positive is None:
            positive = _pick(others, seed=seed, role="positive", anchor=anchor, usable=usable)
        if positive is None:
            dropped.append((anchor, f"class {anchor.class_index} has no other usable image"))
            continue
        negative = None
        for candidate_class in strategy_ranking[anchor.class_index]:
            if candidate_class == anchor.class_index:
                continue
            negative = _pick(
                pool.get(candidate_class, []),
                seed=seed,
                role="negative",
                anchor=anchor,
                usable=usable,
            )
            if negative is not None:
                break
        if negative is None:
            reason = f"no class ranked after class {anchor.class_index} has a usable image"
            dropped.append((anchor, reason))
            continue
        triplets.append(Triplet(anchor, positive, negative, negative.class_index, strategy))
    return TripletResult(triplets=triplets, dropped=dropped, skipped=usable.skipped)
