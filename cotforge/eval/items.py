"""What an evaluation asks: one :class:`EvalItem` per test image, from one of three places.

- ``paper``: Fine-R1's manifests (:func:`cotforge.eval_set.paper_eval_rows`), images found in
  the official layouts under ``--data-root``: the paper's exact questions and options.
- ``test``: the dataset's own test images of the seen and unseen classes
  (:func:`cotforge.eval_set.eval_rows`): the rows ``cotforge export``'s ``eval`` config holds,
  with the hardest distractors of the truth's own group.
- ``export``: an exported dataset folder's ``eval`` config (parquet shards with embedded
  images), so a model can be scored on a machine that has the export but not the datasets.

Images are identified by content digest (request ids hash it) and loaded only when a request
is sent, so planning a 30k-image evaluation holds no pixels.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image

from cotforge.data.registry import SOURCES, canonical_name, get_source
from cotforge.data.sampling import hash_order
from cotforge.errors import ConfigError, DatasetNotFoundError
from cotforge.eval_set import PAPER_IMAGE_ROOTS, EvalRow, eval_rows, paper_eval_rows
from cotforge.teachers.base import ImageInput

if TYPE_CHECKING:
    from cotforge.data.annotations import ClassSplit
    from cotforge.data.base import ImageRecord, Source

RowsSource = Literal["paper", "test", "export"]
EXPORT_EVAL_DIR = Path("data") / "eval"
"""Where ``cotforge export`` writes the eval config's shards inside its output folder."""


@dataclass(frozen=True)
class EvalItem:
    """One test image with its question, truth and closed-world options."""

    image_id: str
    dataset: str
    split: ClassSplit
    question: str
    answer: str
    """The class display name (what scoring compares against)."""
    options: tuple[str, ...]
    """The closed-world choices in the order the rows gave them (the manifests: truth first)."""
    image: ImageInput


def find_root(name: str, *, data_root: Path | None, default_root: Path) -> Path:
    """The folder holding dataset ``name``'s official layout.

    With ``data_root``: that folder itself when it is the dataset's layout, else the folder
    the paper kept the dataset in below it (``fgvc_aircraft``, ``bird_200``, ...), else the
    one named like the dataset (``aircraft``, ``cub``, ...). Without: ``default_root`` (where
    ``cotforge datasets download`` puts it). Raises :class:`DatasetNotFoundError` naming the
    places looked at.
    """
    name = canonical_name(name)
    source_class = SOURCES[name]
    if data_root is None:
        candidates = [default_root]
    else:
        if not data_root.is_dir():
            msg = f"--data-root {data_root} does not exist; pass the folder holding the datasets"
            raise DatasetNotFoundError(msg)
        paper_folder = PAPER_IMAGE_ROOTS[name].rstrip("/")
        candidates = [data_root, data_root / paper_folder, data_root / name]
    for candidate in candidates:
        if candidate.is_dir() and not get_source(name, candidate).missing_files():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    download = f" (or run `cotforge datasets download {name}`)" if data_root is None else ""
    where = (
        "pass --data-root DIR: the folder holding the datasets in their official layouts, "
        f"named as the paper's manifests name them ({', '.join(PAPER_IMAGE_ROOTS.values())}) "
        f"or by dataset name{download}"
    )
    msg = f"{source_class.title}: no official layout found (looked in {looked}); {where}"
    raise DatasetNotFoundError(msg)


def source_items(
    source: Source,
    *,
    rows: Literal["paper", "test"],
    seed: int,
    manifests: Path | None = None,
    per_class: int | None = None,
    split_mode: Literal["paper", "random"] = "paper",
    unseen_fraction: float = 0.4,
    split_seed: int = 0,
) -> list[EvalItem]:
    """The items of one dataset from the paper's manifests (``paper``, options in the
    manifests' order) or from its test images (``test``); ``per_class`` keeps that many
    images per class, chosen by a seeded hash order."""
    if rows == "paper":
        listed = list(paper_eval_rows(source, manifests, seed=seed, keep_order=True))
        if per_class is not None:
            listed = _per_class(listed, per_class, seed=seed)
    else:
        listed = list(
            eval_rows(
                source,
                seed=seed,
                split_mode=split_mode,
                unseen_fraction=unseen_fraction,
                split_seed=split_seed,
                per_class=per_class,
            )
        )
    return [
        EvalItem(
            image_id=row.record.image_id,
            dataset=row.dataset,
            split=row.split,
            question=row.question,
            answer=row.answer,
            options=tuple(row.options),
            image=ImageInput(
                digest=_file_digest(row.record.path),
                load=_loader(source, row.record),
            ),
        )
        for row in listed
    ]


def _per_class(rows: list[EvalRow], count: int, *, seed: int) -> list[EvalRow]:
    groups: dict[tuple[str, int], list[ImageRecord]] = {}
    for row in rows:
        groups.setdefault((row.split, row.record.class_index), []).append(row.record)
    kept = {
        r.image_id for records in groups.values() for r in hash_order(records, seed=seed)[:count]
    }
    return [row for row in rows if row.record.image_id in kept]


def _loader(source: Source, record: ImageRecord) -> Callable[[], Image.Image]:
    """The image as the dataset means it; undecoded when the dataset edits no pixel, so the
    client can send the file's own bytes."""
    if source.edits_pixels:
        return partial(source.open_image, record)
    return partial(Image.open, record.path)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        digest.update(f"unreadable: {err}".encode())
    return digest.hexdigest()[:32]


def export_items(folder: Path, datasets: Sequence[str]) -> list[EvalItem]:
    """The items of ``datasets`` in the ``eval`` config of the export at ``folder``.

    Each shard is read once here for the digests and the text columns; an image's bytes are
    read again, one row group at a time, when its request is sent.
    """
    import pyarrow.parquet as pq

    shards = sorted((folder / EXPORT_EVAL_DIR).glob("*.parquet"))
    if not shards:
        msg = (
            f"{folder} has no eval config ({EXPORT_EVAL_DIR}/*.parquet); export one with "
            f"`cotforge export --configs eval --out {folder}`, or use --source paper or test"
        )
        raise ConfigError(msg)
    wanted = {canonical_name(name) for name in datasets}
    items: list[EvalItem] = []
    for shard in shards:
        split = shard.name.split("-", 1)[0]
        if split not in ("seen", "unseen"):
            continue
        parquet = pq.ParquetFile(shard)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group).to_pylist()
            for index, row in enumerate(table):
                if row["dataset"] not in wanted:
                    continue
                data = row["image"]["bytes"]
                items.append(
                    EvalItem(
                        image_id=row["image"]["path"],
                        dataset=row["dataset"],
                        split=split,
                        question=row["question"],
                        answer=row["answer"],
                        options=tuple(row["options"]),
                        image=ImageInput(
                            digest=hashlib.sha256(data).hexdigest()[:32],
                            load=partial(_export_image, str(shard), group, index),
                        ),
                    )
                )
    missing = wanted - {item.dataset for item in items}
    if missing:
        msg = (
            f"the eval config in {folder} has no rows of {', '.join(sorted(missing))}; export "
            f"them too, or leave them out of --dataset"
        )
        raise ConfigError(msg)
    return items


def _export_image(shard: str, group: int, index: int) -> Image.Image:
    return Image.open(io.BytesIO(_row_group_images(shard, group)[index]))


@lru_cache(maxsize=4)
def _row_group_images(shard: str, group: int) -> tuple[bytes, ...]:
    """The image bytes of one row group: requests go out in row order, so each group is read
    once while its images are sent."""
    import pyarrow.parquet as pq

    column = pq.ParquetFile(shard).read_row_group(group, columns=["image"]).column("image")
    return tuple(value["bytes"] for value in column.to_pylist())


def iter_datasets(names: Sequence[str]) -> Iterator[str]:
    """Canonical names, ``all`` expanded to the six in the paper's order, each once.

    >>> list(iter_datasets(["bird", "all"]))[:3]
    ['cub', 'aircraft', 'cars']
    """
    seen: set[str] = set()
    for name in names:
        for canonical in SOURCES if name == "all" else [canonical_name(name)]:
            if canonical not in seen:
                seen.add(canonical)
                yield canonical
