"""The evaluation set: official test images of seen and unseen classes, with closed-world options.

Two ways to build it, both yielding :class:`EvalRow`:

- :func:`eval_rows` builds the rows from the dataset itself: every official TEST image of the
  seen and the unseen classes (under any class split), a paraphrased question, and ``options``
  closed-world choices: the truth plus its nearest classes by a confusion strategy.
- :func:`paper_eval_rows` reads Fine-R1's released manifests, so a model can be scored on exactly
  the paper's questions and options, mapped onto the images of the user's official download.

Either way the options come in a seeded order per image. The released manifests always list the
truth first, which rewards a model that picks the first option; a per-image order drawn from a
hash of (seed, image id) puts the truth everywhere equally often and is the same on every rerun.

Distractors never cross the seen/unseen boundary in :func:`eval_rows`: they are ranked among the
classes of the truth's own group. The paper's manifests mix them (about half of their distractors
come from the other group), which gives a fine-tuned model a shortcut on the seen set: a name it
was never trained to answer can be ruled out by unfamiliarity alone, without looking at the image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cotforge.data.annotations import annotations_dir
from cotforge.data.confusion import get_strategy
from cotforge.data.registry import ALIASES
from cotforge.data.sampling import hash_order
from cotforge.errors import ConfigError, DatasetNotFoundError, PlanError
from cotforge.questions import question_for, seed_questions

if TYPE_CHECKING:
    from cotforge.data.annotations import ClassInfo, ClassSplit
    from cotforge.data.base import ImageRecord, Source
    from cotforge.data.confusion import ConfusionStrategy

TEST_SPLIT = "test"
"""The official split every evaluation image comes from; all six datasets ship one."""

GROUPS: tuple[ClassSplit, ...] = ("seen", "unseen")
"""The eval config's splits, in output order."""

PAPER_IMAGE_ROOTS: dict[str, str] = {
    "aircraft": "fgvc_aircraft/",
    "cub": "bird_200/",
    "cars": "stanford-cars/",
    "dogs": "dogs_120/",
    "flowers": "flower102/",
    "pets": "oxford-pet/",
}
"""The folder each dataset sat in on the paper's machine. Below it the manifests' paths are the
official layout's keys (``fgvc_aircraft/data/images/0116175.jpg`` is ``data/images/0116175.jpg``
under an FGVC-Aircraft root), so removing this prefix is the whole mapping."""

_MANIFEST_FIELDS = frozenset({"image_path", "question", "options", "ground_truth"})
_SHOWN_PROBLEMS = 3


@dataclass(frozen=True)
class EvalRow:
    """One evaluation image with its question, answer and closed-world options."""

    record: ImageRecord
    split: Literal["seen", "unseen"]
    """Whether the image's class is a training (seen) class or a held-out (unseen) one."""
    question: str
    answer: str
    """The class display name, the string scoring compares answers against."""
    options: list[str]
    """Closed-world choices: the answer exactly once, in a seeded per-image order."""
    label: str
    """The dataset's own label of the class (``727-200``, ``001.Black_footed_Albatross``)."""
    dataset: str


class ManifestMappingError(DatasetNotFoundError):
    """Images of the paper's manifests that the official layout under the root cannot supply.

    ``problems`` lists every one as ``(manifest image path, reason)``, so a caller can show or
    store them all; the message names the first few.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def shuffle_options(names: Sequence[str], *, seed: int, image_id: str) -> list[str]:
    """``names`` in an order drawn from a hash of (seed, image id, name).

    Each image gets its own order, the same on every run with the same seed, and an option's
    place never depends on which other options are present.

    >>> shuffle_options(["A", "B", "C", "D"], seed=0, image_id="pets/test/images/x.jpg")
    ['C', 'A', 'B', 'D']
    >>> sorted(shuffle_options(["A", "B"], seed=1, image_id="x")) == ["A", "B"]
    True
    """
    return sorted(names, key=lambda name: (_digest(seed, image_id, name), name))


def eval_rows(
    source: Source,
    *,
    seed: int,
    options: int = 4,
    split_mode: Literal["paper", "random"] = "paper",
    unseen_fraction: float = 0.4,
    split_seed: int = 0,
    per_class: int | None = None,
    strategy: ConfusionStrategy | None = None,
) -> Iterator[EvalRow]:
    """The official test images of the seen and unseen classes as evaluation rows.

    The class split is ``source.annotations.split(mode=split_mode, ...)``, so the rows match the
    plan that trained the model when given the same split options. Each image gets a question
    (a seed paraphrase of its super-category, chosen by its image id), its class's display name as
    the answer, and ``options`` choices: the truth plus the ``options - 1`` classes ranked nearest
    to it by ``strategy`` (default ``hierarchy``) among the classes of the SAME group, shuffled by
    :func:`shuffle_options`. Every image of a class therefore gets the same distractors, the
    hardest the strategy knows, in its own order. ``per_class`` keeps that many images per class,
    chosen in :func:`~cotforge.data.sampling.hash_order` with ``seed``.

    Rows come ordered by (seen before unseen, class index, key). Everything that can fail is
    checked when the function is called, before the first row: every listed test image must exist
    (:meth:`Source.verify_files`), so a half-extracted download never yields a partial set.
    Raises :class:`ConfigError` for bad options and :class:`PlanError` when a group has too few
    classes for ``options`` choices.
    """
    if options < 2:
        msg = f"options must be at least 2 (the answer and one distractor); got {options}"
        raise ConfigError(msg)
    if per_class is not None and per_class < 1:
        msg = f"per_class must be at least 1, or None for every test image; got {per_class}"
        raise ConfigError(msg)
    annotations = source.annotations
    class_split = annotations.split(
        mode=split_mode, unseen_fraction=unseen_fraction, seed=split_seed
    )
    members: dict[ClassSplit, list[ClassInfo]] = {group: [] for group in GROUPS}
    for info in annotations.classes:
        members[class_split[info.index]].append(info)
    for group, infos in members.items():
        if len(infos) < options:
            advice = (
                f"ask for at most {len(infos)} options" if len(infos) >= 2 else "change the split"
            )
            msg = (
                f"{source.title}: the {group} group has {len(infos)} classes, too few for "
                f"{options} options per question (distractors stay within the group); {advice}"
            )
            raise PlanError(msg)
    ranker = strategy or get_strategy("hierarchy")
    choices: dict[int, list[str]] = {}
    for infos in members.values():
        ranking = ranker.rank(infos)
        for info in infos:
            nearest = ranking[info.index][: options - 1]
            choices[info.index] = [info.name, *(annotations.classes[i].name for i in nearest)]
    by_class: dict[int, list[ImageRecord]] = {}
    for record in source.verify_files(TEST_SPLIT):
        by_class.setdefault(record.class_index, []).append(record)
    return _class_rows(source, members, choices, by_class, seed=seed, per_class=per_class)


def _class_rows(
    source: Source,
    members: dict[ClassSplit, list[ClassInfo]],
    choices: dict[int, list[str]],
    by_class: dict[int, list[ImageRecord]],
    *,
    seed: int,
    per_class: int | None,
) -> Iterator[EvalRow]:
    """The rows of :func:`eval_rows`, made lazily once everything that can fail has been checked."""
    questions = seed_questions(source.annotations.super_category)
    for group in GROUPS:
        for info in members[group]:
            records = by_class.get(info.index, [])
            if per_class is not None:
                records = hash_order(records, seed=seed)[:per_class]
            for record in sorted(records, key=lambda r: r.key):
                yield EvalRow(
                    record=record,
                    split=group,
                    question=question_for(record.image_id, questions),
                    answer=info.name,
                    options=shuffle_options(
                        choices[info.index], seed=seed, image_id=record.image_id
                    ),
                    label=info.label,
                    dataset=source.name,
                )


def default_manifest_dir() -> Path:
    """Where the paper's manifests ship with the project: ``annotations/fine_r1_eval``."""
    return annotations_dir() / "fine_r1_eval"


def manifest_word(dataset: str) -> str:
    """The word the manifests' file names use for a canonical dataset name.

    >>> manifest_word("cub"), manifest_word("aircraft")
    ('bird', 'aircraft')
    """
    return next((word for word, name in ALIASES.items() if name == dataset), dataset)


def official_key(dataset: str, image_path: str) -> str | None:
    """The official layout key of a manifest's ``image_path``, or ``None`` when the path is not
    under the folder the paper kept ``dataset`` in.

    >>> official_key("cars", "stanford-cars/cars_test/00001.jpg")
    'cars_test/00001.jpg'
    >>> official_key("cars", "bird_200/images/a.jpg") is None
    True
    """
    prefix = PAPER_IMAGE_ROOTS[dataset]
    key = image_path.removeprefix(prefix)
    return key if key != image_path and key else None


@dataclass(frozen=True)
class _ManifestLine:
    split: ClassSplit
    image_path: str
    question: str
    options: list[str]
    ground_truth: str


def _read_manifest(path: Path, split: ClassSplit) -> Iterator[_ManifestLine]:
    """The lines of one manifest file; a malformed line is a :class:`ConfigError` at file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = (
            f"Fine-R1 manifest {path} does not exist; pass the folder that holds the paper's "
            f"<dataset>_{{seen,unseen}}.jsonl files (default: {default_manifest_dir()})"
        )
        raise ConfigError(msg) from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            msg = f"{path}:{number} is not a JSON object ({err.msg}); restore the original file"
            raise ConfigError(msg) from None
        if not isinstance(row, dict) or set(row) != _MANIFEST_FIELDS:
            fields = sorted(row) if isinstance(row, dict) else type(row).__name__
            msg = (
                f"{path}:{number} has fields {fields}; a Fine-R1 manifest line has exactly "
                f"{sorted(_MANIFEST_FIELDS)}"
            )
            raise ConfigError(msg)
        texts = [row["image_path"], row["question"], row["ground_truth"]]
        options = row["options"]
        if not isinstance(options, list) or not all(isinstance(t, str) for t in texts + options):
            msg = (
                f"{path}:{number} has a field that is not text (options must be a list of class "
                f"names); restore the original file"
            )
            raise ConfigError(msg)
        yield _ManifestLine(split, row["image_path"], row["question"], options, row["ground_truth"])


def _resolve(
    line: _ManifestLine, by_key: dict[str, ImageRecord], taken: set[str], source: Source
) -> ImageRecord | str:
    """The official record a manifest line shows, or the reason it cannot become a row."""
    key = official_key(source.name, line.image_path)
    if key is None:
        return f"not under {PAPER_IMAGE_ROOTS[source.name]}, the paper's {source.title} folder"
    record = by_key.get(key)
    if record is None:
        return f"{key} is not an image of the official {TEST_SPLIT} split"
    if key in taken:
        return "listed more than once in the manifests"
    taken.add(key)
    official = source.classes[record.class_index].name
    if official != line.ground_truth:
        return f"the manifest says {line.ground_truth!r}, the official label is {official!r}"
    if line.options.count(line.ground_truth) != 1 or len(set(line.options)) != len(line.options):
        return f"options {line.options} do not hold the answer once among distinct names"
    return record


def paper_eval_rows(
    source: Source,
    manifest_dir: Path | None = None,
    *,
    seed: int = 0,
    keep_order: bool = False,
) -> Iterator[EvalRow]:
    """Fine-R1's evaluation rows for ``source``, on the images of the official layout.

    Reads ``<word>_seen.jsonl`` and ``<word>_unseen.jsonl`` from ``manifest_dir`` (default
    :func:`default_manifest_dir`; ``word`` is the manifests' name for the dataset, e.g. ``bird``
    for ``cub``) and maps each ``image_path`` onto the official key (:func:`official_key`). The
    manifests' question and answer are kept; the options are shuffled per image with ``seed``
    (:func:`shuffle_options`) unless ``keep_order``, which keeps the manifests' truth-first order
    for reproducing the paper's numbers as published.

    The whole mapping is checked when the function is called, before any row is handed out, so
    a caller never writes a partial set: an image missing on disk raises the source's
    :class:`DatasetNotFoundError`, and lines that do not map (path outside the paper's folder,
    not an official test image, listed twice, a ground truth that disagrees with the official
    label, bad options) raise :class:`ManifestMappingError` listing every one. Rows come ordered
    by (split, class index, key), like :func:`eval_rows`.
    """
    folder = Path(manifest_dir) if manifest_dir is not None else default_manifest_dir()
    word = manifest_word(source.name)
    files = [folder / f"{word}_{group}.jsonl" for group in GROUPS]
    lines = [
        line
        for path, group in zip(files, GROUPS, strict=True)
        for line in _read_manifest(path, group)
    ]
    by_key = {record.key: record for record in source.verify_files(TEST_SPLIT)}

    rows: list[EvalRow] = []
    problems: list[tuple[str, str]] = []
    taken: set[str] = set()
    for line in lines:
        record = _resolve(line, by_key, taken, source)
        if isinstance(record, str):
            problems.append((line.image_path, record))
            continue
        options = (
            list(line.options)
            if keep_order
            else shuffle_options(line.options, seed=seed, image_id=record.image_id)
        )
        rows.append(
            EvalRow(
                record=record,
                split=line.split,
                question=line.question,
                answer=line.ground_truth,
                options=options,
                label=source.classes[record.class_index].label,
                dataset=source.name,
            )
        )
    if problems:
        shown = "; ".join(f"{path}: {reason}" for path, reason in problems[:_SHOWN_PROBLEMS])
        more = (
            f"; and {len(problems) - _SHOWN_PROBLEMS} more"
            if len(problems) > _SHOWN_PROBLEMS
            else ""
        )
        msg = (
            f"{source.title}: {len(problems)} of the {len(lines)} images in "
            f"{', '.join(str(path) for path in files)} do not map onto the official layout under "
            f"{source.root} ({shown}{more}); point the root at the complete official "
            f"{source.title} download ({source.download_hint})"
        )
        raise ManifestMappingError(msg, problems)
    return iter(sorted(rows, key=lambda row: (row.split, row.record.class_index, row.record.key)))
