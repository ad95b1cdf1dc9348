"""Dedup on planted duplicates made from the 12 real Fine-R1 rationales in tests/data.

Distinct documents recombine the sentences of one dataset's two records (with 8% of the words
replaced), so they share far more vocabulary than real rationales do; near duplicates are light
edits (2-5% of the words replaced, one sentence dropped); exact duplicates change case and
whitespace only. The ground truth is known by construction.
"""

from __future__ import annotations

import dataclasses
import doctest
import io
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rich.console import Console

from cotforge import dedup, minhash
from cotforge.config import DedupOptions
from cotforge.dedup import (
    Cluster,
    ClusterMember,
    cluster,
    duplicate_rows,
    embedding_pairs,
    run_dedup,
)
from cotforge.errors import MissingExtraError
from cotforge.minhash import (
    BUCKET_NEIGHBOURS,
    DuplicatePair,
    MinHashIndex,
    MinHashParams,
    exact_keys,
    lsh_bands,
    minhash_signatures,
    normalize,
)
from cotforge.store import Store

SAMPLE = Path(__file__).parent / "data" / "fine_r1_stage1_sample.json"
_SENTENCE = re.compile(r"(?<=[.!?:])\s+|\n+")
_WORD_SPLIT = re.compile(r"(\w+)")


def load_records() -> list[tuple[str, str]]:
    """(dataset, rationale) for the 12 real records; the dataset is the image's top folder."""
    rows = json.loads(SAMPLE.read_text())
    return [
        (row["images"][0].split("/")[0], message["content"])
        for row in rows
        for message in row["messages"]
        if message["role"] == "assistant"
    ]


RECORDS = load_records()
VOCABULARY = sorted({w for _, text in RECORDS for w in re.findall(r"\w+", text)})


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text) if s.strip()]


def substitute(text: str, share: float, rng: random.Random) -> str:
    """``text`` with ``share`` of its words replaced by other words of the records."""
    parts = _WORD_SPLIT.split(text)
    words = range(1, len(parts), 2)
    for i in rng.sample(words, round(share * len(words))):
        parts[i] = rng.choice(VOCABULARY)
    return "".join(parts)


def light_edit(text: str, rng: random.Random) -> str:
    """2-5% of the words replaced and one sentence dropped."""
    kept = sentences(text)
    del kept[rng.randrange(len(kept))]
    return substitute("\n".join(kept), rng.uniform(0.02, 0.05), rng)


def reformat(text: str, rng: random.Random) -> str:
    """The same words with other case and whitespace."""
    return "\n\n ".join(w.upper() if rng.random() < 0.5 else w for w in text.split()) + "  "


def recombine(pool: list[str], rng: random.Random) -> str:
    """Sentences of ``pool`` in random order, 8% of their words replaced, 1.5-5k characters."""
    target, size, parts = rng.uniform(1500, 5000), 0, []
    for sentence in rng.sample(pool, len(pool)):
        if size >= target:
            break
        parts.append(substitute(sentence, 0.08, rng))
        size += len(parts[-1]) + 1
    return "\n".join(parts)


@dataclass
class Planted:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    truth: set[frozenset[str]] = field(default_factory=set)

    def add(self, doc_id: str, text: str, group: str, copy_of: str | None = None) -> None:
        self.ids.append(doc_id)
        self.texts.append(text)
        self.groups.append(group)
        if copy_of is not None:
            self.truth.add(frozenset((copy_of, doc_id)))


def build_planted(
    *, seed: int = 0, distinct_per_group: int = 30, edits: int = 60, exact: int = 12
) -> Planted:
    """The 12 records, ``distinct_per_group`` recombinations per dataset, then ``edits`` light
    edits and ``exact`` reformatted copies of distinct base documents, shuffled."""
    rng = random.Random(seed)
    base = Planted()
    for n, (group, text) in enumerate(RECORDS):
        base.add(f"record-{n}", text, group)
    pools: dict[str, list[str]] = {}
    for group, text in RECORDS:
        pools.setdefault(group, []).extend(sentences(text))
    for group, pool in pools.items():
        for n in range(distinct_per_group):
            base.add(f"{group}-{n}", recombine(pool, rng), group)
    planted = Planted(list(base.ids), list(base.texts), list(base.groups))
    originals = rng.sample(range(len(base.ids)), edits + exact)
    for n, i in enumerate(originals):
        near = n < edits
        text = light_edit(base.texts[i], rng) if near else reformat(base.texts[i], rng)
        planted.add(f"{'near' if near else 'exact'}-{n}", text, base.groups[i], base.ids[i])
    order = rng.sample(range(len(planted.ids)), len(planted.ids))
    planted.ids = [planted.ids[i] for i in order]
    planted.texts = [planted.texts[i] for i in order]
    planted.groups = [planted.groups[i] for i in order]
    return planted


def shingle_jaccard(a: str, b: str, size: int) -> float:
    """Exact Jaccard of two texts' ``size``-word shingle sets, in plain Python (the reference)."""

    def shingles(text: str) -> set[tuple[str, ...]]:
        words = normalize(text).split()
        return {tuple(words[i : i + size]) for i in range(max(len(words) - size + 1, 1))}

    first, second = shingles(a), shingles(b)
    return len(first & second) / len(first | second)


def pair_set(pairs: list[DuplicatePair]) -> set[frozenset[str]]:
    return {frozenset((p.first, p.second)) for p in pairs}


def precision_recall(found: set[frozenset[str]], truth: set[frozenset[str]]) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return build_planted()


# ----------------------------------------------------------------------------------------------
# Normalisation and words
# ----------------------------------------------------------------------------------------------


def test_docstring_examples_run() -> None:
    outcome = doctest.testmod(dedup)
    assert outcome.attempted > 0 and outcome.failed == 0


TRICKY = [
    "Hello, World! \ufb01ne Stra\u00dfe KELVIN \u212aelvin \u00c9COLE \u00e9cole na\u00efve",
    "dash\u2014dash \u201cquoted\u201d it\u2019s 42_x __init__",
    "\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3 \u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",
    "\u0130stanbul \u01c5ungla \u65e5\u672c\u8a9e\u3001\u53e5\u8aad\u70b9\u3002 x\ud800y",
    "supercalifragilisticexpialidocious-antidisestablishmentarianism 0123456789abcdefg",
    "",
    "!!! ... ---",
    "a",
]


@pytest.mark.parametrize("text", TRICKY + [text for _, text in RECORDS[:3]])
def test_bulk_word_hashing_matches_normalize(text: str) -> None:
    """The byte-level path splits and casefolds exactly as ``normalize`` (\\w runs, casefold),
    also for non-ASCII letters, Unicode punctuation, ligatures and lone surrogates."""
    hashes, counts = minhash._word_hashes(["a b", text, "c"])
    words = normalize(text).split()
    assert counts.tolist() == [2, len(words), 1]
    assert hashes[2 : 2 + len(words)].tolist() == minhash._hash_words(words).tolist()


def test_normalize_ignores_case_whitespace_and_punctuation() -> None:
    assert normalize("The  WING-tips,\n curved!") == normalize("the wing tips curved")
    assert normalize("Stra\u00dfe \u201cX\u201d") == "strasse x"


def test_exact_keys_equal_only_for_equal_normalised_text() -> None:
    rng = random.Random(3)
    text = RECORDS[0][1]
    keys = exact_keys([text, reformat(text, rng), text.replace("delta", "swept"), ""])
    assert keys[0] == keys[1]
    assert len({keys[0], keys[2], keys[3]}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{16}", key) for key in keys)


# ----------------------------------------------------------------------------------------------
# Signatures
# ----------------------------------------------------------------------------------------------


def test_signature_agreement_estimates_shingle_jaccard() -> None:
    rng = random.Random(5)
    texts = [text for _, text in RECORDS]
    edited = [light_edit(t, rng) for t in texts]
    signatures = minhash_signatures(texts + edited)
    errors = []
    for i in range(len(texts)):
        for j, other in ((len(texts) + i, edited[i]), ((i + 1) % len(texts), texts[(i + 1) % 12])):
            estimate = float((signatures[i] == signatures[j]).mean())
            errors.append(estimate - shingle_jaccard(texts[i], other, 3))
    # 128 permutations: standard error <= 0.045; allow 3.5 of them
    assert max(abs(e) for e in errors) < 0.16
    assert abs(float(np.mean(errors))) < 0.04


def test_signatures_are_deterministic_across_processes() -> None:
    """No Python ``hash()`` (randomised per process): a fresh interpreter gives equal arrays."""
    texts = [text for _, text in RECORDS[:4]]
    here = minhash_signatures(texts, seed=7)
    code = (
        "import json, sys; from cotforge.minhash import minhash_signatures;"
        "texts = json.load(sys.stdin);"
        "print(json.dumps(minhash_signatures(texts, seed=7).tolist()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert np.array_equal(np.array(json.loads(result.stdout), dtype=np.uint32), here)
    assert not np.array_equal(minhash_signatures(texts, seed=8), here)


def test_signature_of_text_without_words_matches_nothing() -> None:
    signatures = minhash_signatures(["", "...", "one two", "one two three four"])
    assert (signatures[0] == np.iinfo(np.uint32).max).all()
    assert (signatures[2] != signatures[0]).all()


def test_batches_split_long_inputs_without_changing_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = [text for _, text in RECORDS]
    whole = minhash_signatures(texts)
    monkeypatch.setattr(minhash, "_BATCH_CHARS", 5000)
    monkeypatch.setattr(minhash, "_BLOCK_ENTRIES", 128 * 100)  # blocks cut inside documents
    assert np.array_equal(minhash_signatures(texts), whole)


# ----------------------------------------------------------------------------------------------
# LSH parameters
# ----------------------------------------------------------------------------------------------


def test_lsh_bands_match_datasketch_weighting_and_lean_to_recall() -> None:
    assert lsh_bands(0.8, false_negative_weight=0.5) == (9, 13)  # datasketch's choice
    bands, rows = lsh_bands(0.5)
    assert bands * rows <= 128
    hit = 1 - (1 - 0.6**rows) ** bands
    assert hit > 0.98  # a pair at Jaccard 0.6 almost always becomes a candidate


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": 0.0}, "threshold"),
        ({"bands": 40, "rows": 4}, "bands \\* rows <= num_perm"),
        ({"bands": 4}, "both bands and rows"),
        ({"shingle_size": 0}, "shingle_size"),
        ({"num_perm": 1}, "num_perm"),
    ],
)
def test_index_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MinHashIndex(**options)


# ----------------------------------------------------------------------------------------------
# Planted duplicates
# ----------------------------------------------------------------------------------------------


def test_defaults_find_planted_duplicates(planted: Planted) -> None:
    pairs = MinHashIndex().add(planted.ids, planted.texts)
    precision, recall = precision_recall(pair_set(pairs), planted.truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    exact = {frozenset((p.first, p.second)) for p in pairs if p.kind == "exact"}
    assert exact == {pair for pair in planted.truth if any(i.startswith("exact") for i in pair)}


def test_defaults_are_needed_five_word_shingles_at_0_8_miss_light_edits(planted: Planted) -> None:
    """The measurement behind the defaults: the common 5-gram/0.8 setting misses most edits."""
    pairs = MinHashIndex(shingle_size=5, threshold=0.8).add(planted.ids, planted.texts)
    near_truth = {pair for pair in planted.truth if any(i.startswith("near") for i in pair)}
    assert len(pair_set(pairs) & near_truth) < 0.5 * len(near_truth)


def test_planted_populations_are_separated_as_the_docstring_says(planted: Planted) -> None:
    text_of = dict(zip(planted.ids, planted.texts, strict=True))
    near = [
        shingle_jaccard(*(text_of[i] for i in sorted(pair)), 3)
        for pair in planted.truth
        if any(i.startswith("near") for i in pair)
    ]
    rng = random.Random(0)
    group_of = dict(zip(planted.ids, planted.groups, strict=True))
    bases = [i for i in planted.ids if not i.startswith(("near", "exact"))]
    distinct = []
    while len(distinct) < 200:
        a, b = rng.sample(bases, 2)
        if group_of[a] == group_of[b] and frozenset((a, b)) not in planted.truth:
            distinct.append(shingle_jaccard(text_of[a], text_of[b], 3))
    assert min(near) > 0.6 > 0.4 > max(distinct)


def test_group_restriction() -> None:
    text = RECORDS[0][1]
    index = MinHashIndex()
    pairs = index.add(
        ["a", "b", "c"], [text, text, light_edit(text, random.Random(1))], groups=["x", "y", "x"]
    )
    assert pair_set(pairs) == {frozenset(("a", "c"))}
    # without groups, and in a later call, the same texts do match
    later = index.add(["d"], [text])
    assert later == []  # d has no group: a group of its own
    assert pair_set(MinHashIndex().add(["a", "b"], [text, text])) == {frozenset(("a", "b"))}


def test_grouped_results_never_cross_groups(planted: Planted) -> None:
    pairs = MinHashIndex().add(planted.ids, planted.texts, groups=planted.groups)
    group_of = dict(zip(planted.ids, planted.groups, strict=True))
    assert all(group_of[p.first] == group_of[p.second] for p in pairs)
    assert pair_set(pairs) == pair_set(MinHashIndex().add(planted.ids, planted.texts))


def test_incremental_adds_equal_one_batch(planted: Planted) -> None:
    whole = MinHashIndex().add(planted.ids, planted.texts, groups=planted.groups)
    index = MinHashIndex()
    pieces: list[DuplicatePair] = []
    for low, high in ((0, 50), (50, 51), (51, 200), (200, len(planted.ids))):
        pieces += index.add(
            planted.ids[low:high], planted.texts[low:high], groups=planted.groups[low:high]
        )
    assert sorted(pieces, key=repr) == sorted(whole, key=repr)
    assert cluster(planted.ids, pieces) == cluster(planted.ids, whole)


def test_rows_round_trip_and_append(planted: Planted) -> None:
    half = len(planted.ids) // 2
    original = MinHashIndex(threshold=0.6, seed=3)
    original.add(planted.ids[:half], planted.texts[:half], groups=planted.groups[:half])
    loaded = MinHashIndex.from_rows(original.params, original.rows())
    assert loaded.params == original.params
    assert loaded.ids == original.ids
    assert np.array_equal(loaded.signatures(loaded.ids), original.signatures(original.ids))
    rest = (planted.ids[half:], planted.texts[half:])
    assert loaded.add(*rest, groups=planted.groups[half:]) == original.add(
        *rest, groups=planted.groups[half:]
    )
    tail = original.rows(half)
    assert list(tail.ids) == planted.ids[half:]
    assert tail.signatures.shape == (len(planted.ids) - half, original.params.num_perm)


def test_from_rows_rejects_columns_that_do_not_fit(planted: Planted) -> None:
    index = MinHashIndex()
    index.add(planted.ids[:10], planted.texts[:10])
    rows = index.rows()
    with pytest.raises(ValueError, match="do not make an index of 128 permutations"):
        MinHashIndex.from_rows(index.params, dataclasses.replace(rows, keys=rows.keys[:5]))
    with pytest.raises(ValueError, match="do not make an index of 64 permutations"):
        MinHashIndex.from_rows(MinHashParams(num_perm=64, bands=16), rows)
    with pytest.raises(ValueError, match="unique"):
        MinHashIndex.from_rows(index.params, dataclasses.replace(rows, ids=["a"] * 10))


def test_a_bucket_of_thousands_of_near_copies_stays_linear() -> None:
    """2,000 light edits of one rationale share their buckets: all pairs would be 2 million
    candidates per band; each is paired with its few predecessors in each band's bucket, and
    all form one cluster."""
    rng = random.Random(5)
    text = RECORDS[0][1]
    ids = [f"c{n:04d}" for n in range(2000)]
    texts = [light_edit(text, rng) for _ in ids]
    index = MinHashIndex()
    pairs = index.add(ids[:1500], texts[:1500])
    pairs += index.add(ids[1500:], texts[1500:])
    assert len(pairs) <= len(ids) * BUCKET_NEIGHBOURS * index.params.bands < len(ids) ** 2 / 2
    clusters = cluster(ids, pairs)
    assert [len(c.members) for c in clusters] == [len(ids)]


def test_index_defaults_and_empty_adds() -> None:
    index = MinHashIndex()
    assert index.params == MinHashParams() == MinHashParams(bands=30, rows=4)
    assert index.add([], []) == []
    assert index.add(["a"], ["one two three four"]) == []
    assert index.add([], []) == [] and len(index) == 1


def test_add_rejects_repeated_or_mismatched_ids() -> None:
    index = MinHashIndex()
    index.add(["a"], ["some text here"])
    with pytest.raises(ValueError, match=r"new and unique.*'a'"):
        index.add(["a"], ["other"])
    with pytest.raises(ValueError, match=r"new and unique.*'b'"):
        index.add(["b", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="2 ids, 1 texts"):
        index.add(["c", "d"], ["x"])
    with pytest.raises(ValueError, match="1 groups"):
        index.add(["c", "d"], ["x", "y"], groups=["g"])
    assert index.ids == ("a",)


def test_exact_copies_join_the_near_pairs_of_their_first_copy() -> None:
    rng = random.Random(2)
    text = RECORDS[4][1]
    pairs = MinHashIndex().add(["a", "b", "c"], [text, reformat(text, rng), light_edit(text, rng)])
    assert [(p.first, p.second, p.kind) for p in pairs] == [("a", "b", "exact"), ("a", "c", "near")]
    assert pairs[1].similarity >= 0.5


# ----------------------------------------------------------------------------------------------
# Clusters
# ----------------------------------------------------------------------------------------------


def test_cluster_keeps_the_best_ranked_and_flags_the_rest() -> None:
    checks = {"a": 3, "b": 5, "c": 5, "d": 1, "e": 4}
    created = {"a": 1, "b": 4, "c": 2, "d": 0, "e": 3}
    pairs = [
        DuplicatePair("a", "b", "near", 0.7),
        DuplicatePair("b", "c", "near", 0.9),
        DuplicatePair("d", "e", "exact", 1.0),
    ]
    clusters = cluster(
        ["a", "b", "c", "d", "e", "f"], pairs, rank_key=lambda i: (-checks[i], created[i])
    )
    assert clusters == [
        Cluster(
            "c",
            (
                ClusterMember("c", "near", 0.9, kept=True),
                ClusterMember("b", "near", 0.9, kept=False),
                ClusterMember("a", "near", 0.7, kept=False),
            ),
        ),
        Cluster(
            "e",
            (
                ClusterMember("e", "exact", 1.0, kept=True),
                ClusterMember("d", "exact", 1.0, kept=False),
            ),
        ),
    ]
    assert clusters[0].kept == "c" and clusters[0].flagged == ("b", "a")
    # without a rank the earliest in ids is kept
    assert [c.kept for c in cluster(["a", "b", "c", "d", "e"], pairs)] == ["a", "d"]


def test_cluster_prefers_exact_links_and_rejects_unknown_ids() -> None:
    pairs = [DuplicatePair("a", "b", "near", 0.9), DuplicatePair("b", "c", "exact", 1.0)]
    (group,) = cluster(["a", "b", "c"], pairs)
    assert [(m.id, m.kind) for m in group.members] == [
        ("a", "near"),
        ("b", "exact"),
        ("c", "exact"),
    ]
    with pytest.raises(ValueError, match="'z', which is not in ids"):
        cluster(["a", "b"], [DuplicatePair("a", "z", "near", 0.9)])
    with pytest.raises(ValueError, match="unique"):
        cluster(["a", "a"], [])


def test_duplicate_rows_fit_the_store_table() -> None:
    (group,) = cluster(["a", "b"], [DuplicatePair("a", "b", "near", 0.75)])
    assert duplicate_rows([group], run_id="run-1") == [
        {
            "rationale_id": "a",
            "cluster_id": "a",
            "kind": "near",
            "similarity": 0.75,
            "kept": True,
            "run_id": "run-1",
        },
        {
            "rationale_id": "b",
            "cluster_id": "a",
            "kind": "near",
            "similarity": 0.75,
            "kept": False,
            "run_id": "run-1",
        },
    ]


def test_planted_clusters_keep_one_per_family(planted: Planted) -> None:
    pairs = MinHashIndex().add(planted.ids, planted.texts, groups=planted.groups)
    clusters = cluster(planted.ids, pairs, rank_key=lambda i: (i.startswith(("near", "exact")), i))
    assert len(clusters) == len(planted.truth)  # every original has exactly one copy
    assert all(not c.kept.startswith(("near", "exact")) and len(c.members) == 2 for c in clusters)


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------


def test_embedding_dedup_names_the_extra_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError, match=r'pip install "cotforge\[embeddings\]"'):
        embedding_pairs(["a", "b"], ["one text", "another"])


def test_embedding_pairs_validate_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        embedding_pairs(["a"], ["x"], threshold=1.5, model=object())
    with pytest.raises(ValueError, match="2 ids, 1 texts"):
        embedding_pairs(["a", "b"], ["x"], model=object())


@pytest.fixture(scope="module")
def minilm() -> object:
    return dedup.load_embedding_model(device="cpu")


@pytest.mark.slow
def test_embedding_near_duplicates_with_minilm(minilm: object) -> None:
    rng = random.Random(4)
    chosen = (0, 1, 4, 5, 8, 9)  # two classes of three datasets
    texts = [RECORDS[i][1] for i in chosen]
    groups = [RECORDS[i][0] for i in chosen]
    ids = [f"r{i}" for i in chosen]
    edits = [light_edit(RECORDS[i][1], rng) for i in (0, 4, 9)]
    pairs = embedding_pairs(
        [*ids, "e0", "e4", "e9"],
        texts + edits,
        groups=[*groups, RECORDS[0][0], RECORDS[4][0], RECORDS[9][0]],
        threshold=0.9,  # edits score 0.95-1.0, the two classes of a dataset 0.7 at most
        model=minilm,
    )
    assert pair_set(pairs) == {frozenset(p) for p in (("r0", "e0"), ("r4", "e4"), ("r9", "e9"))}
    assert all(p.kind == "embedding" and 0.9 <= p.similarity <= 1.0 for p in pairs)
    # one group per document: nothing is compared, nothing is found
    assert (
        embedding_pairs(["r0", "e0"], [texts[0], edits[0]], groups=["x", "y"], model=minilm) == []
    )


@pytest.mark.slow
def test_embedding_pairs_of_a_big_family_stay_linear(minilm: object) -> None:
    """30 light edits of one rationale and one other text: 435 pairs in all, but each edit
    keeps its closest earlier ones only, and they still make one cluster."""
    rng = random.Random(6)
    texts = [light_edit(RECORDS[2][1], rng) for _ in range(30)] + [RECORDS[3][1]]
    ids = [f"e{n:02d}" for n in range(len(texts))]
    pairs = embedding_pairs(ids, texts, threshold=0.9, model=minilm)
    assert 29 <= len(pairs) <= 29 * BUCKET_NEIGHBOURS
    later_counts = Counter(pair.second for pair in pairs)
    assert max(later_counts.values()) == BUCKET_NEIGHBOURS
    assert all(ids.index(pair.first) < ids.index(pair.second) for pair in pairs)
    clusters = cluster(ids, pairs)
    assert [sorted(m.id for m in c.members) for c in clusters] == [ids[:30]]


# --- dedup over the store ----------------------------------------------------------------------


def _store_with(path: Path, planted: Planted, upto: int) -> Store:
    """A store holding the first ``upto`` planted documents as imported rationales."""
    store = Store.open(path)
    rows = [
        {
            "rationale_id": doc_id,
            "request_id": None,
            "sample_id": f"{group}/import/{doc_id}.jpg",
            "raw_text": text,
        }
        for doc_id, text, group in list(
            zip(planted.ids, planted.texts, planted.groups, strict=True)
        )[:upto]
    ]
    images = [
        {
            "image_id": row["sample_id"],
            "dataset": row["sample_id"].split("/")[0],
            "split": "import",
            "key": f"{row['rationale_id']}.jpg",
            "class_index": 0,
            "label": "x",
            "class_name": "x",
        }
        for row in rows
    ]
    store.add_images(images)
    store.add_rationales(rows)
    return store


def _flagged_pairs(store: Store) -> set[frozenset[str]]:
    rows = store.table("duplicates").filter(~pl.col("kept"))
    return {frozenset((r["cluster_id"], r["rationale_id"])) for r in rows.iter_rows(named=True)}


def test_run_dedup_flags_planted_copies_and_is_incremental(tmp_path: Path, planted) -> None:
    half = len(planted.ids) // 2
    options = DedupOptions()
    with _store_with(tmp_path / "s.duckdb", planted, half) as store:
        first = run_dedup(store, options)
        assert first.indexed == first.total == half
    with _store_with(tmp_path / "s.duckdb", planted, len(planted.ids)) as store:
        second = run_dedup(store, options)
        assert second.indexed == len(planted.ids) - half
        assert second.total == len(planted.ids)
        # every planted copy is linked to its original, directly or through its cluster
        clusters = store.table("duplicates")
        cluster_of = dict(zip(clusters["rationale_id"], clusters["cluster_id"], strict=True))
        for pair in planted.truth:
            a, b = tuple(pair)
            assert cluster_of[a] == cluster_of[b]
        assert store.stats()["duplicates"] == len(planted.truth) == second.flagged
        again = run_dedup(store, options)
        assert (again.indexed, again.clusters, again.flagged) == (0, 0, second.flagged)


def test_run_dedup_keeps_the_best_verified_member(tmp_path: Path) -> None:
    text = RECORDS[0][1]
    copy = light_edit(text, random.Random(3))
    planted = Planted()
    planted.add("older", text, "aircraft")
    planted.add("better", copy, "aircraft", "older")
    with _store_with(tmp_path / "s.duckdb", planted, 2) as store:
        store.upsert_verdicts(
            [
                {"rationale_id": "older", "check_name": "correct", "passed": False,
                 "required": True, "run_id": "verify-1"},
                {"rationale_id": "better", "check_name": "correct", "passed": True,
                 "required": True, "run_id": "verify-1"},
            ]
        )  # fmt: skip
        run_dedup(store, DedupOptions())
        rows = store.table("duplicates").sort("rationale_id")
        assert rows.select("rationale_id", "cluster_id", "kept").rows() == [
            ("better", "better", True),
            ("older", "better", False),
        ]


def test_the_index_is_stored_per_document_and_appended(tmp_path: Path, planted) -> None:
    with _store_with(tmp_path / "s.duckdb", planted, 20) as store:
        run_dedup(store, DedupOptions())
        rows = store.table("dedup_signatures")
        assert rows.height == 20
        assert rows["signature"].bin.size().unique().to_list() == [128 * 4]
        first = rows.sort("position")
    with _store_with(tmp_path / "s.duckdb", planted, 30) as store:
        second = run_dedup(store, DedupOptions())
        assert second.indexed == 10
        grown = store.table("dedup_signatures").sort("position")
        assert grown.height == 30
        assert grown.head(20).equals(first)  # the stored ones are not rewritten
        assert store.table("dedup_index")["documents"].to_list() == [30]


def test_an_unreadable_index_is_rebuilt_with_a_warning(tmp_path: Path, planted) -> None:
    with _store_with(tmp_path / "s.duckdb", planted, 20) as store:
        first = run_dedup(store, DedupOptions())
        clusters = store.table("duplicates").sort("rationale_id")
        store._con.execute("UPDATE dedup_signatures SET signature = 'short'::BLOB")
        out = io.StringIO()
        again = run_dedup(store, DedupOptions(), console=Console(file=out, width=200))
        assert "cannot be read" in out.getvalue() and "rebuilding" in out.getvalue()
        assert again.indexed == 20 and again.total == first.total
        assert store.table("duplicates").drop("run_id", "decided_at", strict=False).sort(
            "rationale_id"
        ).equals(clusters.drop("run_id", "decided_at", strict=False))
        assert store.load_dedup_index(dedup._index_name(DedupOptions())) is not None


def test_changed_minhash_settings_start_a_fresh_index(tmp_path: Path, planted) -> None:
    with _store_with(tmp_path / "s.duckdb", planted, 20) as store:
        run_dedup(store, DedupOptions())
        fresh = run_dedup(store, DedupOptions(shingle_size=4))
        assert fresh.indexed == 20
        assert store.table("dedup_index").height == 2
