"""Per-dataset class annotations: display names, aliases, hierarchy and the seen/unseen split.

The files live in ``annotations/<dataset>/`` at the top of the project (installed wheels carry
them under ``<prefix>/share/cotforge/annotations``):

- ``dataset.json``: ``name``, ``title``, ``super_category`` (the word used in prompts and in
  SS_rel), ``hierarchy_levels`` (names of the ancestor levels above a class, root first),
  ``hierarchy_source`` (official file or how it was derived) and ``provenance``.
- ``classes.jsonl``: one class per line in official label order: ``index`` (0-based official
  order), ``label`` (the dataset's own label string), ``name`` (display name exactly as in the
  Fine-R1 manifests), ``aliases`` (other names that mean this class and no other),
  ``hierarchy`` (ancestor node names, one per level) and ``paper_split`` (``seen``/``unseen``).

Display names follow the paper's manifests because every later step (prompts, scoring,
evaluation) compares text against them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Literal

from cotforge.errors import ConfigError, UnknownDatasetError

ClassSplit = Literal["seen", "unseen"]


@dataclass(frozen=True)
class ClassInfo:
    """One fine-grained class: its official label, display name and place in the hierarchy."""

    index: int
    label: str
    name: str
    aliases: tuple[str, ...] = ()
    hierarchy: tuple[str, ...] = ()
    paper_split: ClassSplit | None = None


@dataclass(frozen=True)
class Annotations:
    """Everything ``annotations/<dataset>/`` says about one dataset's classes."""

    name: str
    title: str
    super_category: str
    hierarchy_levels: tuple[str, ...]
    hierarchy_source: str
    classes: list[ClassInfo] = field(repr=False)

    @cached_property
    def by_label(self) -> dict[str, ClassInfo]:
        """Classes keyed by the dataset's own label string."""
        return {info.label: info for info in self.classes}

    @cached_property
    def by_name(self) -> dict[str, ClassInfo]:
        """Classes keyed by display name."""
        return {info.name: info for info in self.classes}

    def split(
        self,
        *,
        mode: Literal["paper", "random"] = "paper",
        unseen_fraction: float = 0.4,
        seed: int = 0,
    ) -> dict[int, ClassSplit]:
        """Map class index to ``seen``/``unseen``.

        ``paper`` is Fine-R1's split (from its manifests). ``random`` ranks classes by a hash of
        (seed, dataset, label), so it is reproducible from the seed alone and does not depend on
        the order classes are listed in.
        """
        if mode == "paper":
            return {info.index: info.paper_split or "seen" for info in self.classes}
        if mode != "random":
            msg = f"split mode must be 'paper' or 'random'; got {mode!r}"
            raise ConfigError(msg)
        if not 0.0 < unseen_fraction < 1.0:
            msg = f"--unseen-fraction must be between 0 and 1 (exclusive); got {unseen_fraction}"
            raise ConfigError(msg)
        ranked = sorted(self.classes, key=lambda info: _digest(seed, self.name, info.label))
        n_unseen = round(unseen_fraction * len(ranked))
        unseen = {info.index for info in ranked[:n_unseen]}
        return {info.index: "unseen" if info.index in unseen else "seen" for info in self.classes}


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def annotations_dir() -> Path:
    """Where ``annotations/`` is: ``$COTFORGE_ANNOTATIONS``, the source tree, or the install."""
    override = os.environ.get("COTFORGE_ANNOTATIONS")
    if override:
        return Path(override)
    source_tree = Path(__file__).resolve().parents[2] / "annotations"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "cotforge" / "annotations"


def known_datasets() -> list[str]:
    """Dataset names that have an annotations folder."""
    root = annotations_dir()
    return sorted(p.name for p in root.iterdir() if (p / "dataset.json").is_file())


@cache
def load_annotations(name: str) -> Annotations:
    """Read ``annotations/<name>/``; raises :class:`UnknownDatasetError` for an unknown name."""
    folder = annotations_dir() / name
    if not (folder / "dataset.json").is_file():
        msg = f"no annotations for dataset {name!r} in {folder.parent}; known: " + ", ".join(
            known_datasets()
        )
        raise UnknownDatasetError(msg)
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    classes = []
    with (folder / "classes.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                classes.append(
                    ClassInfo(
                        index=row["index"],
                        label=row["label"],
                        name=row["name"],
                        aliases=tuple(row.get("aliases", ())),
                        hierarchy=tuple(row.get("hierarchy", ())),
                        paper_split=row.get("paper_split"),
                    )
                )
    return Annotations(
        name=meta["name"],
        title=meta["title"],
        super_category=meta["super_category"],
        hierarchy_levels=tuple(meta.get("hierarchy_levels", ())),
        hierarchy_source=meta.get("hierarchy_source", ""),
        classes=classes,
    )
