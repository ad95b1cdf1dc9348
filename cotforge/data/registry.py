"""The six FGVR datasets by name.

Names are the canonical registry names (``aircraft``, ``cub``, ``cars``, ``dogs``, ``flowers``,
``pets``); the super-category words the Fine-R1 manifests use in their file names (``bird``,
``car``, ...) resolve to them, so a path copied from the paper's files works as a name too.
"""

from __future__ import annotations

from pathlib import Path

from cotforge.data.aircraft import AircraftSource
from cotforge.data.annotations import Annotations
from cotforge.data.base import Source
from cotforge.data.cars import CarsSource
from cotforge.data.cub import CubSource
from cotforge.data.dogs import DogsSource
from cotforge.data.flowers import FlowersSource
from cotforge.data.pets import PetsSource
from cotforge.errors import UnknownDatasetError

SOURCES: dict[str, type[Source]] = {
    source.name: source
    for source in (AircraftSource, CubSource, CarsSource, DogsSource, FlowersSource, PetsSource)
}
"""Source classes by canonical name, in the order the paper's tables list the datasets."""

ALIASES: dict[str, str] = {
    "bird": "cub",
    "car": "cars",
    "dog": "dogs",
    "flower": "flowers",
    "pet": "pets",
}
"""The manifests' dataset words (``eval/<word>_{seen,unseen}.jsonl``) -> canonical names."""


def dataset_names() -> list[str]:
    """Canonical dataset names, in the paper's order."""
    return list(SOURCES)


def canonical_name(name: str) -> str:
    """Resolve a name or manifest alias (``bird`` -> ``cub``); raises
    :class:`UnknownDatasetError` listing the valid names."""
    canonical = ALIASES.get(name, name)
    if canonical not in SOURCES:
        msg = f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}"
        raise UnknownDatasetError(msg)
    return canonical


def get_source(name: str, root: Path | str, *, annotations: Annotations | None = None) -> Source:
    """The :class:`Source` for ``name`` (or an alias) reading the official layout under ``root``.

    Nothing is read yet: the layout is checked when images are first listed, so building a
    source for a folder that is still being downloaded is cheap and safe.
    """
    return SOURCES[canonical_name(name)](root, annotations=annotations)
