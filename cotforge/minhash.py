"""MinHash signatures and an incremental LSH index: the exact and near-duplicate detectors.

Used by :mod:`cotforge.dedup`, which turns the pairs found here into clusters in the store.

Three detectors, cheapest first:

* exact: a 64-bit hash of the normalised word sequence (:func:`normalize`: casefolded ``\\w+``
  runs, so whitespace, case and punctuation edits do not make a new text);
* near: MinHash over word shingles with LSH banding (:class:`MinHashIndex`); every LSH candidate
  is verified by its estimated Jaccard (the share of equal signature entries) >= ``threshold``
  before it counts, which removes the false positives that banding lets through;
* embedding (optional, :func:`cotforge.dedup.embedding_pairs`): cosine of MiniLM embeddings within
  a group, for rewrites that share few shingles.

Why the defaults (3-word shingles, threshold 0.5, 30 bands of 4 rows out of 128 permutations).
Exact word-shingle Jaccard of the 12 Fine-R1 stage-1 rationales (``tests/data``): against light
edits of themselves (2-5% of the words replaced by other words of the records, one sentence
dropped; 5 edits each), between the two records of each dataset (two classes), and between 600
same-dataset pairs of the test suite's recombinations (sentences of one dataset's two records in
random order with 8% of the words replaced: distinct texts sharing far more vocabulary than real
rationales do):

=======  ==================  ==================  ======================
words    light edits         two classes         same-dataset recombined
         min / mean          mean / max          mean / max
=======  ==================  ==================  ======================
5        0.59 / 0.70         0.01 / 0.02         0.07 / 0.17
3        0.71 / 0.79         0.04 / 0.05         0.15 / 0.29
1        0.83 / 0.90         0.32 / 0.35         0.48 / 0.69
=======  ==================  ==================  ======================

With 5-word shingles a threshold of 0.8 misses nearly every light edit, and single words do not
separate the populations. Three-word shingles leave a wide gap (0.71 against 0.29 at worst) and
0.5 sits in it. The bands lean to recall (:func:`lsh_bands`, ``false_negative_weight=0.8``): a
pair at Jaccard 0.6 becomes a candidate with probability 0.98, one at 0.3 with 0.22, and the
verification (all 128 permutations, standard error <= 0.045) drops the latter. On the planted
pairs of ``tests/test_dedup.py`` and ``benchmarks/bench_verify_dedup.py`` precision and recall
are both 1.0; datasketch's ``MinHashLSH`` at the same threshold, without verification, reaches a
precision of 0.79 on the benchmark's sample.

Speed: signatures are computed for many documents at once with numpy, with no Python loop per
word, shingle or permutation. Words are found and hashed on the UTF-8 bytes (ASCII folded to lower
case with one OR per 8 bytes; words with non-ASCII letters go through ``str.casefold``), shingles
are combined from word hashes, and permutation ``i`` maps a shingle hash ``x`` to
``(a_i * x + b_i) mod 2**32`` with odd ``a_i``: a bijection of the 32-bit hash space, so a true
permutation, computed on a (permutations x shingles) block with ``np.minimum.reduceat`` taking each
document's minimum. A prime modulus would need 64-bit products, which numpy computes about 20x
slower on CPUs without AVX-512; because shingle hashes come out of a full 64-bit mixer, the
estimates stay unbiased (measured: mean error 0.0008, spread 1.00x the binomial ideal over 3,000
random set pairs). Every hash is defined here (MurmurHash3's finaliser, BLAKE2 for group names),
never Python's ``hash()``, so signatures are equal across processes, machines and numpy versions
and a saved index stays valid.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

DuplicateKind = Literal["exact", "near", "embedding"]

_WORD = re.compile(r"\w+")
# ----------------------------------------------------------------------------------------------
# Hashing primitives. numpy wraps uint64 array arithmetic modulo 2**64 without warnings.
# ----------------------------------------------------------------------------------------------

_U64_MAX = (1 << 64) - 1
_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT_33 = np.uint64(33)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_FOLD_ASCII = np.uint64(0x2020202020202020)
_ALL_ONES = np.uint64(_U64_MAX)

#: Characters of text hashed per batch: big enough that numpy's per-call cost vanishes, small
#: enough that every temporary is reused from the allocator instead of freshly mapped memory.
_BATCH_CHARS = 500_000
#: Entries of one (permutations x shingles) block: a few MiB, which stays in the CPU caches.
_BLOCK_ENTRIES = 1 << 20
#: Candidate pairs (and documents) handled per step of LSH: temporaries of a few MiB.
_LSH_STEP = 1 << 12
#: Cosine similarities computed per step of embedding dedup (16 MiB of float32).
_SIMILARITY_ENTRIES = 1 << 22
#: Earlier documents of a bucket that a document is paired with. All pairs of a bucket of k
#: near-copies are k**2/2 candidates: a store of 100k rationales in 12 families of near-copies
#: filled 24 GiB and was killed. A document linked to the ones just before it in each bucket
#: still joins their cluster, which is what dedup reports.
BUCKET_NEIGHBOURS = 8


def _fmix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection in which every input bit flips each output bit
    with probability ~1/2. Returns a new array."""
    x = x ^ (x >> _SHIFT_33)
    x *= _FMIX_1
    x ^= x >> _SHIFT_33
    x *= _FMIX_2
    x ^= x >> _SHIFT_33
    return x


def _splitmix64(seed: int, count: int) -> np.ndarray:
    """``count`` pseudo-random uint64 from ``seed``, defined here rather than by numpy's generators,
    whose streams may change between numpy versions (which would invalidate saved signatures)."""
    state = (seed * 0x9E3779B97F4A7C15) & _U64_MAX
    steps = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN) + np.uint64(state)
    return _fmix(_fmix(steps))


def _hash_spans(
    buffer: bytes, starts: np.ndarray, lengths: np.ndarray, *, fold: bool
) -> np.ndarray:
    """64-bit hashes of the byte spans ``buffer[s:s+n]``, 8 bytes at a time for all spans at once.

    ``buffer`` needs 8 readable bytes after the last span. ``fold`` sets bit 0x20 of every byte:
    on the bytes an ASCII word can hold that lowercases letters, keeps digits and maps ``_`` to
    0x7f, one to one, so ASCII casefolding is free.
    """
    words = np.ndarray((len(buffer) - 7,), dtype="<u8", buffer=buffer, strides=(1,))

    def chunk(at: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        """The 8 bytes from ``at``, those past the span's end (``remaining`` bytes left) zeroed."""
        value = words[at]
        if fold:
            value |= _FOLD_ASCII
        return value & (_ALL_ONES >> ((8 - np.minimum(remaining, 8)) * 8).astype(np.uint64))

    hashes = _fmix((lengths.astype(np.uint64) * _GOLDEN) ^ chunk(starts, lengths))
    offset = 8
    longer = np.flatnonzero(lengths > offset)
    while longer.size:
        hashes[longer] = _fmix(
            hashes[longer] ^ chunk(starts[longer] + offset, lengths[longer] - offset)
        )
        offset += 8
        longer = longer[lengths[longer] > offset]
    return hashes


def _hash_words(words: Sequence[str]) -> np.ndarray:
    """Hashes of casefolded words, equal to the ones the byte-level path gives the same words."""
    encoded = [word.encode("utf-8", "surrogatepass") for word in words]
    hashes = np.empty(len(encoded), dtype=np.uint64)
    for ascii_only in (True, False):
        pick = [i for i, data in enumerate(encoded) if data.isascii() == ascii_only]
        if pick:
            parts = [encoded[i] for i in pick]
            lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
            starts = np.cumsum(lengths) - lengths
            buffer = b"".join(parts) + bytes(8)
            hashes[pick] = _hash_spans(buffer, starts, lengths, fold=ascii_only)
    return hashes


@functools.cache
def _is_word_character(codepoint: int) -> bool:
    """What ``\\w`` matches outside ASCII: letters and digits of any script."""
    return chr(codepoint).isalnum()


def _clear_unicode_separators(data: np.ndarray, word: np.ndarray) -> None:
    """Set ``word`` to False on the bytes of non-ASCII characters that are not word characters
    (curly quotes, dashes, symbols), so that they separate words as ASCII punctuation does.
    ``data`` is valid UTF-8 followed by at least 3 padding bytes."""
    lead = np.flatnonzero(data >= 0xC0)
    if not lead.size:
        return
    first = data[lead].astype(np.uint32)
    size = 2 + (first >= 0xE0).astype(np.int64) + (first >= 0xF0)
    tail = [data[lead + k].astype(np.uint32) & 0x3F for k in (1, 2, 3)]
    codepoint = np.where(
        size == 2,
        (first & 0x1F) << 6 | tail[0],
        np.where(
            size == 3,
            (first & 0x0F) << 12 | tail[0] << 6 | tail[1],
            (first & 0x07) << 18 | tail[0] << 12 | tail[1] << 6 | tail[2],
        ),
    )
    distinct, inverse = np.unique(codepoint, return_inverse=True)
    is_word = np.fromiter(map(_is_word_character, distinct.tolist()), dtype=bool)
    separator = ~is_word[inverse]
    for k in range(4):
        covered = separator & (size > k)
        word[lead[covered] + k] = False


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the words of ``texts`` in order (those of :func:`normalize`), and how many words
    each text has. The texts are joined into one UTF-8 buffer and split on the bytes."""
    encoded = [text.encode("utf-8", "surrogatepass") for text in texts]
    buffer = b" " + b" ".join(encoded) + b" " + bytes(8)
    padded = np.frombuffer(buffer, dtype=np.uint8)
    data = padded[:-8]
    lower = data | np.uint8(0x20)
    word = (
        ((lower - np.uint8(ord("a"))) < 26)
        | ((data - np.uint8(ord("0"))) < 10)
        | (data == ord("_"))
        | (data >= 0x80)
    )
    _clear_unicode_separators(padded, word)
    edges = np.flatnonzero(word[1:] != word[:-1]) + 1  # the buffer starts and ends with a space
    starts, ends = edges[0::2], edges[1::2]
    hashes = _hash_spans(buffer, starts, ends - starts, fold=True)

    high = np.flatnonzero(data >= 0x80)
    high = high[word[high]]
    if high.size:  # words with non-ASCII letters: casefold them exactly, in Python
        unicode_words = np.unique(np.searchsorted(starts, high, side="right") - 1)
        hashes[unicode_words] = _hash_words(
            [
                buffer[s:e].decode("utf-8", "surrogatepass").casefold()
                for s, e in zip(
                    starts[unicode_words].tolist(), ends[unicode_words].tolist(), strict=True
                )
            ]
        )
    sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    text_starts = 1 + np.cumsum(sizes + 1) - (sizes + 1)
    first_word = np.searchsorted(starts, text_starts)
    counts = np.diff(np.append(first_word, len(starts)))
    return hashes, counts


def _segment_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _exact_keys(hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One uint64 per text: the sum of its word hashes times an odd weight per position, mixed.
    Equal word sequences give equal keys; one changed word always changes the key (an odd weight
    is invertible modulo 2**64), and a collision among 100,000 texts is a 1-in-3-billion event."""
    first = _segment_starts(counts)
    position = (np.arange(len(hashes)) - np.repeat(first, counts)).astype(np.uint64)
    weighted = np.append(hashes * (position * np.uint64(2) + np.uint64(1)) * _GOLDEN, np.uint64(0))
    totals = np.add.reduceat(weighted, first) if len(first) else weighted[:0]
    totals[counts == 0] = 0  # reduceat returns the element itself for an empty segment
    return _fmix(totals ^ (counts.astype(np.uint64) * _FMIX_1))


def _shingle_hashes(
    hashes: np.ndarray, counts: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """uint32 hashes of every run of ``size`` consecutive words within a text, and how many each
    text has. A text with fewer words than ``size`` (but at least one) gets one shingle of all its
    words, so short texts can still match each other."""
    weights = _splitmix64(size, size) | np.uint64(1)
    total = len(hashes)
    windows = max(total - size + 1, 0)
    combined = np.zeros(windows, dtype=np.uint64)
    for k in range(size):
        combined += hashes[k : k + windows] * weights[k]
    inside = np.ones(windows, dtype=bool)
    ends = np.cumsum(counts)
    for k in range(1, size):  # a window starting k words before a text's end leaves the text
        crossing = ends - k
        inside[crossing[(crossing >= 0) & (crossing < windows)]] = False
    shingles = (_fmix(combined[inside]) >> np.uint64(32)).astype(np.uint32)
    shingle_counts = np.maximum(counts - size + 1, 0)

    short = np.flatnonzero((counts > 0) & (counts < size))
    if short.size:
        first = _segment_starts(counts)[short]
        combined = np.zeros(short.size, dtype=np.uint64)
        for k in range(size - 1):
            present = counts[short] > k
            combined[present] += hashes[first[present] + k] * weights[k]
        values = (_fmix(combined) >> np.uint64(32)).astype(np.uint32)
        shingles = np.insert(shingles, _segment_starts(shingle_counts)[short], values)
        shingle_counts[short] = 1
    return shingles, shingle_counts


def _minhash(
    shingles: np.ndarray,
    counts: np.ndarray,
    multipliers: np.ndarray,
    offsets: np.ndarray,
) -> np.ndarray:
    """MinHash signatures (texts x permutations, uint32) of texts given as consecutive runs of
    ``shingles``. The shingles are cut into blocks; each block is permuted by every permutation
    at once (a permutations x shingles array) and ``np.minimum.reduceat`` takes the minimum of
    each text's part of the block. A text without shingles keeps the all-ones signature."""
    permutations = len(multipliers)
    signatures = np.full((len(counts), permutations), np.iinfo(np.uint32).max, dtype=np.uint32)
    texts = np.flatnonzero(counts > 0)
    starts = _segment_starts(counts)[texts]
    block = max(_BLOCK_ENTRIES // permutations, 1)
    work = np.empty((permutations, block), dtype=np.uint32)
    for low in range(0, len(shingles), block):
        high = min(low + block, len(shingles))
        first = int(np.searchsorted(starts, low, side="right")) - 1
        last = int(np.searchsorted(starts, high, side="left"))
        part = work[:, : high - low]
        np.multiply(multipliers, shingles[low:high], out=part)
        np.add(part, offsets, out=part)
        minima = np.minimum.reduceat(part, np.maximum(starts[first:last], low) - low, axis=1)
        rows = texts[first:last]
        signatures[rows] = np.minimum(signatures[rows], minima.T)
    return signatures


# ----------------------------------------------------------------------------------------------
# Public helpers
# ----------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The text exact dedup compares: its words casefolded, joined by single spaces.

    Words are maximal runs of ``\\w`` characters (letters and digits of any script, and ``_``),
    so whitespace, case and punctuation edits leave the normalised text unchanged. Near dedup
    shingles the same words.

    >>> normalize("The  Wing-tips,\\n  CURVED!")
    'the wing tips curved'
    """
    return " ".join(word.casefold() for word in _WORD.findall(text))


def exact_keys(texts: Sequence[str]) -> list[str]:
    """A 16-hex-digit key per text, equal exactly when the normalised texts are equal; for
    ``GROUP BY`` in the store. Computed in bulk like the index does.

    >>> a, b, c = exact_keys(["A  wing.", "a WING", "a tail"])
    >>> a == b, a == c
    (True, False)
    """
    return [f"{key:016x}" for key in _fingerprint(texts, None)[0].tolist()]


def lsh_bands(
    threshold: float, *, num_perm: int = 128, false_negative_weight: float = 0.8
) -> tuple[int, int]:
    """The (bands, rows) with ``bands * rows <= num_perm`` that minimise the weighted area of
    missed pairs above ``threshold`` and of candidate pairs below it, as datasketch does; the
    default weight leans to recall because every candidate is verified afterwards.

    >>> lsh_bands(0.5)
    (30, 4)
    >>> lsh_bands(0.5, false_negative_weight=0.5)  # datasketch's default weighting
    (25, 5)
    """
    if not 0.0 < threshold < 1.0:
        msg = f"threshold must be between 0 and 1 (exclusive), got {threshold!r}"
        raise ValueError(msg)
    if num_perm < 2:
        msg = f"num_perm must be at least 2, got {num_perm!r}"
        raise ValueError(msg)
    if not 0.0 <= false_negative_weight <= 1.0:
        msg = f"false_negative_weight must be between 0 and 1, got {false_negative_weight!r}"
        raise ValueError(msg)
    return _best_bands(threshold, num_perm, false_negative_weight)


@functools.cache
def _best_bands(threshold: float, num_perm: int, false_negative_weight: float) -> tuple[int, int]:
    below = np.linspace(0.0, threshold, 401)
    above = np.linspace(threshold, 1.0, 401)
    best = (np.inf, 1, 1)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = np.trapezoid(1 - (1 - below**rows) ** bands, below)
            false_negative = np.trapezoid((1 - above**rows) ** bands, above)
            error = (1 - false_negative_weight) * false_positive
            error += false_negative_weight * false_negative
            if error < best[0] - 1e-12:
                best = (float(error), bands, rows)
    return best[1], best[2]


# ----------------------------------------------------------------------------------------------
# Pairs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DuplicatePair:
    """Two documents found to be duplicates. ``first`` was added (or listed) before ``second``;
    ``similarity`` is 1.0 for exact pairs, the estimated Jaccard of the word shingles for near
    pairs and the cosine of the embeddings for embedding pairs."""

    first: str
    second: str
    kind: DuplicateKind
    similarity: float


# ----------------------------------------------------------------------------------------------
# The MinHash index
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MinHashParams:
    """Everything that decides a signature or a bucket; saved with the index, because signatures
    made with other values cannot be compared."""

    num_perm: int = 128
    shingle_size: int = 3
    threshold: float = 0.5
    bands: int = 30
    rows: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "num_perm": self.num_perm >= 2,
            "shingle_size": self.shingle_size >= 1,
            "threshold": 0.0 < self.threshold < 1.0,
            "bands": self.bands >= 1,
            "rows": self.rows >= 1 and self.bands * self.rows <= self.num_perm,
            "seed": 0 <= self.seed <= _U64_MAX,
        }
        for name, ok in checks.items():
            if not ok:
                msg = (
                    f"invalid MinHash {name}={getattr(self, name)!r} in {self}: need num_perm >= 2,"
                    " shingle_size >= 1, 0 < threshold < 1, bands * rows <= num_perm, seed >= 0"
                )
                raise ValueError(msg)


def _batches(texts: Sequence[str]) -> Iterable[tuple[int, int]]:
    """(start, end) slices of ``texts`` holding about ``_BATCH_CHARS`` characters each."""
    start, size = 0, 0
    for end, text in enumerate(texts, start=1):
        size += len(text)
        if size >= _BATCH_CHARS:
            yield start, end
            start, size = end, 0
    if start < len(texts):
        yield start, len(texts)


@functools.cache
def _permutations(seed: int, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """The (multipliers, offsets) of the permutations, as (num_perm x 1) columns; odd
    multipliers make each ``(a * x + b) mod 2**32`` a bijection."""
    coefficients = _splitmix64(seed, 2 * num_perm).astype(np.uint32)
    multipliers = (coefficients[:num_perm] | np.uint32(1))[:, None]
    offsets = coefficients[num_perm:][:, None]
    multipliers.flags.writeable = offsets.flags.writeable = False
    return multipliers, offsets


def _fingerprint(
    texts: Sequence[str], params: MinHashParams | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact keys, MinHash signatures (no columns when ``params`` is None) and word counts."""
    num_perm = 0 if params is None else params.num_perm
    keys, counts = [np.empty(0, np.uint64)], [np.empty(0, np.int64)]
    signatures = [np.empty((0, num_perm), np.uint32)]
    for start, end in _batches(texts):
        hashes, word_counts = _word_hashes(texts[start:end])
        keys.append(_exact_keys(hashes, word_counts))
        counts.append(word_counts)
        if params is None:
            signatures.append(np.empty((end - start, 0), np.uint32))
        else:
            shingles, shingle_counts = _shingle_hashes(hashes, word_counts, params.shingle_size)
            permutations = _permutations(params.seed, num_perm)
            signatures.append(_minhash(shingles, shingle_counts, *permutations))
    return np.concatenate(keys), np.concatenate(signatures), np.concatenate(counts)


def minhash_signatures(
    texts: Sequence[str],
    *,
    num_perm: int = 128,
    shingle_size: int = 3,
    seed: int = 0,
) -> np.ndarray:
    """MinHash signatures of ``texts`` as a (texts x ``num_perm``) uint32 array. The share of
    equal entries of two rows estimates the Jaccard similarity of the two texts' sets of
    ``shingle_size``-word shingles. Equal inputs give equal arrays in every process.

    >>> s = minhash_signatures(["a b c d", "a b c d e", "w x y z"], num_perm=64)
    >>> bool((s[0] == s[1]).mean() > 0.3), bool((s[0] == s[2]).any())
    (True, False)
    """
    params = MinHashParams(num_perm=num_perm, shingle_size=shingle_size, bands=1, rows=1, seed=seed)
    return _fingerprint(texts, params)[1]


def _group_keys(groups: Sequence[str] | None, count: int) -> np.ndarray:
    """uint64 per document from its group name (BLAKE2, stable everywhere); 0 without groups."""
    if groups is None:
        return np.zeros(count, dtype=np.uint64)
    named = {
        name: int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        for name in set(groups)
    }
    return np.fromiter((named[name] for name in groups), dtype=np.uint64, count=count)


def _pairs_sharing_keys(keys: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """(n, 2) array of the pairs of ``docs`` whose ``keys`` are equal, each document with the
    :data:`BUCKET_NEIGHBOURS` before it; ``keys`` sorted. Step ``gap`` pairs each position with
    the one ``gap`` further on while the key stays the same, so the work is proportional to the
    pairs found."""
    same = keys[1:] == keys[:-1]
    found = []
    at = np.flatnonzero(same)
    gap = 1
    while at.size and gap <= BUCKET_NEIGHBOURS:
        found.append(np.stack([docs[at], docs[at + gap]], axis=1))
        at = at[at + gap < len(same)]
        at = at[same[at + gap]]
        gap += 1
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def _pairs_across(
    old_keys: np.ndarray, old_docs: np.ndarray, new_keys: np.ndarray, new_docs: np.ndarray
) -> np.ndarray:
    """(n, 2) array of (old, new) doc pairs with equal keys, each new document with the last
    :data:`BUCKET_NEIGHBOURS` old ones of its bucket; ``old_keys`` sorted."""
    high = np.searchsorted(old_keys, new_keys, side="right")
    count = np.minimum(high - np.searchsorted(old_keys, new_keys, side="left"), BUCKET_NEIGHBOURS)
    low = high - count
    total = int(count.sum())
    if not total:
        return np.empty((0, 2), dtype=np.int64)
    rank = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return np.stack([old_docs[np.repeat(low, count) + rank], np.repeat(new_docs, count)], axis=1)


def _append(stored: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``stored`` followed by ``new``; no copy when nothing is stored yet (the first, big add)."""
    return new if not len(stored) else np.concatenate([stored, new])


@dataclass(frozen=True)
class IndexRows:
    """Documents of a :class:`MinHashIndex` as columns, in the order they were added: what the
    store keeps per document (:meth:`MinHashIndex.rows`, :meth:`MinHashIndex.from_rows`)."""

    ids: Sequence[str]
    keys: np.ndarray
    """uint64: the exact key mixed with the group key (equal keys are exact copies)."""
    groups: np.ndarray
    """uint64: the group key (see :func:`_group_keys`)."""
    in_lsh: np.ndarray
    """bool: whether the document is in the LSH buckets (an exact copy of an earlier one is
    not)."""
    signatures: np.ndarray
    """(documents, num_perm) uint32."""


class MinHashIndex:
    """Exact and near-duplicate detection over a growing collection of documents.

    The index keeps, per document, its id, group, exact key and MinHash signature, plus the LSH
    buckets (sorted band keys) of the documents that are not exact copies of an earlier one.
    :meth:`add` compares new documents with each other and with the stored ones without
    recomputing any stored signature; :meth:`rows` / :meth:`from_rows` give and take its
    documents as columns (the store keeps one row per document).

    >>> index = MinHashIndex()
    >>> text = "The bill is long and curved, the crown is red and the wings are barred. " * 3
    >>> index.add(["r1", "r2"], [text, text.upper()])
    [DuplicatePair(first='r1', second='r2', kind='exact', similarity=1.0)]
    >>> [pair.kind for pair in index.add(["r3"], [text.replace("long", "short")])]
    ['near']
    """

    def __init__(
        self,
        *,
        num_perm: int = 128,
        shingle_size: int = 3,
        threshold: float = 0.5,
        bands: int | None = None,
        rows: int | None = None,
        seed: int = 0,
    ) -> None:
        """``bands``/``rows`` default to :func:`lsh_bands` for ``threshold``; give both or none."""
        if (bands is None) != (rows is None):
            msg = f"give both bands and rows or neither, got bands={bands!r}, rows={rows!r}"
            raise ValueError(msg)
        if bands is None or rows is None:
            bands, rows = lsh_bands(threshold, num_perm=num_perm)
        self._setup(MinHashParams(num_perm, shingle_size, threshold, bands, rows, seed))

    def _setup(self, params: MinHashParams) -> None:
        self.params = params
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        self._first_with_key: dict[int, int] = {}
        self._signatures = np.empty((0, params.num_perm), dtype=np.uint32)
        self._keys = np.empty(0, dtype=np.uint64)  # exact key mixed with the group key
        self._groups = np.empty(0, dtype=np.uint64)
        self._in_lsh = np.empty(0, dtype=bool)
        self._bucket_keys = [np.empty(0, dtype=np.uint64) for _ in range(params.bands)]
        self._bucket_docs = [np.empty(0, dtype=np.int64) for _ in range(params.bands)]

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every document id, in the order added."""
        return tuple(self._ids)

    def signatures(self, ids: Sequence[str]) -> np.ndarray:
        """The stored signatures of ``ids`` (ids x num_perm, uint32)."""
        return self._signatures[[self._index_of(doc_id) for doc_id in ids]]

    def similarity(self, first: str, second: str) -> float:
        """Estimated Jaccard similarity of two stored documents' shingle sets."""
        a, b = self._index_of(first), self._index_of(second)
        return float((self._signatures[a] == self._signatures[b]).mean())

    def _index_of(self, doc_id: str) -> int:
        if doc_id not in self._position:
            msg = f"{doc_id!r} is not in the index; add it first"
            raise KeyError(msg)
        return self._position[doc_id]

    def add(
        self, ids: Sequence[str], texts: Sequence[str], *, groups: Sequence[str] | None = None
    ) -> list[DuplicatePair]:
        """Add documents; return the duplicate pairs they form, among themselves and with the
        stored ones (stored-stored pairs were returned when those were added), ordered by their
        later document. Each call copies the stored arrays once, so add in batches.

        With ``groups`` (one name per document, e.g. the class) a document is compared only with
        documents of the same group; documents added without groups form one group of their own.
        A document that is an exact copy of an earlier one gets one exact pair with the earliest
        copy and is left out of LSH, so its near pairs are those of that earliest copy.
        """
        ids, texts = list(ids), list(texts)
        if len(texts) != len(ids) or (groups is not None and len(groups) != len(ids)):
            msg = (
                f"ids, texts and groups must have one entry per document; got {len(ids)} ids, "
                f"{len(texts)} texts, {'no' if groups is None else len(groups)} groups"
            )
            raise ValueError(msg)
        clashes = [doc_id for doc_id in ids if doc_id in self._position]
        if len(set(ids)) != len(ids) or clashes:
            repeated = clashes[:3] or [d for d, n in Counter(ids).items() if n > 1][:3]
            msg = f"document ids must be new and unique; repeated: {repeated}"
            raise ValueError(msg)

        start = len(self._ids)
        exact, signatures, counts = _fingerprint(texts, self.params)
        group_keys = _group_keys(groups, len(ids))
        keys = _fmix(exact ^ _fmix(group_keys + _GOLDEN))
        pairs: list[tuple[int, int, DuplicateKind, float]] = []
        in_lsh = counts > 0
        for offset, key in enumerate(keys.tolist()):
            earliest = self._first_with_key.setdefault(key, start + offset)
            if earliest != start + offset:
                pairs.append((earliest, start + offset, "exact", 1.0))
                in_lsh[offset] = False

        self._ids.extend(ids)
        self._position.update((doc_id, start + i) for i, doc_id in enumerate(ids))
        self._signatures = _append(self._signatures, signatures)
        self._keys = _append(self._keys, keys)
        self._groups = _append(self._groups, group_keys)
        self._in_lsh = _append(self._in_lsh, in_lsh)
        candidates = self._insert_into_buckets(start + np.flatnonzero(in_lsh))
        pairs.extend(self._verify(candidates))
        pairs.sort(key=lambda pair: (pair[1], pair[0]))
        return [
            DuplicatePair(self._ids[a], self._ids[b], kind, similarity)
            for a, b, kind, similarity in pairs
        ]

    def _band_keys(self, docs: np.ndarray) -> np.ndarray:
        """(docs x bands) uint64 bucket keys: each band's rows and the group, hashed together."""
        bands, rows = self.params.bands, self.params.rows
        keys = np.empty((len(docs), bands), dtype=np.uint64)
        salt = np.arange(1, bands + 1, dtype=np.uint64) * _GOLDEN
        for low in range(0, len(docs), _LSH_STEP):
            part = docs[low : low + _LSH_STEP]
            values = self._signatures[part, : bands * rows].reshape(len(part), bands, rows)
            key = self._groups[part, None] + salt
            for row in range(rows):
                key = key * _FMIX_1 + values[:, :, row]
            keys[low : low + _LSH_STEP] = _fmix(key)
        return keys

    def _insert_into_buckets(self, docs: np.ndarray) -> np.ndarray:
        """Add ``docs`` to the LSH buckets; return the candidate pairs (earlier, later) they
        form with each other and with the documents already there, each pair once."""
        keys = self._band_keys(docs)
        found = []
        for band in range(self.params.bands):
            order = np.argsort(keys[:, band], kind="stable")  # a bucket's documents in order
            new_keys, new_docs = keys[order, band], docs[order]
            found.append(
                _pairs_across(self._bucket_keys[band], self._bucket_docs[band], new_keys, new_docs)
            )
            found.append(_pairs_sharing_keys(new_keys, new_docs))
            merged_keys = np.concatenate([self._bucket_keys[band], new_keys])
            merged_docs = np.concatenate([self._bucket_docs[band], new_docs])
            merged = np.argsort(merged_keys, kind="stable")  # two sorted runs: a linear merge
            self._bucket_keys[band] = merged_keys[merged]
            self._bucket_docs[band] = merged_docs[merged]
        pairs = np.concatenate(found)
        if not len(pairs):
            return pairs
        low, high = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
        codes = np.sort(low * len(self._ids) + high)  # np.unique is ~30x slower here
        codes = codes[np.append(True, codes[1:] != codes[:-1])]
        return np.stack([codes // len(self._ids), codes % len(self._ids)], axis=1)

    def _verify(self, candidates: np.ndarray) -> list[tuple[int, int, DuplicateKind, float]]:
        """Keep the candidates of one group whose estimated Jaccard reaches the threshold."""
        candidates = candidates[self._groups[candidates[:, 0]] == self._groups[candidates[:, 1]]]
        verified = []
        for low in range(0, len(candidates), _LSH_STEP):
            part = candidates[low : low + _LSH_STEP]
            equal = self._signatures[part[:, 0]] == self._signatures[part[:, 1]]
            similarity = equal.sum(axis=1) / self.params.num_perm
            keep = np.flatnonzero(similarity >= self.params.threshold)
            verified.extend(
                (a, b, "near", s)
                for a, b, s in zip(
                    part[keep, 0].tolist(),
                    part[keep, 1].tolist(),
                    similarity[keep].tolist(),
                    strict=True,
                )
            )
        return verified

    def rows(self, start: int = 0) -> IndexRows:
        """The documents from position ``start`` on, as the store keeps them: a rerun of dedup
        appends the new ones instead of rewriting the whole index."""
        return IndexRows(
            ids=self._ids[start:],
            keys=self._keys[start:],
            groups=self._groups[start:],
            in_lsh=self._in_lsh[start:],
            signatures=self._signatures[start:],
        )

    @classmethod
    def from_rows(cls, params: MinHashParams, rows: IndexRows) -> MinHashIndex:
        """The index of ``rows`` (every document, in the order added), with its LSH buckets
        rebuilt from the signatures: well under a second for 100,000 documents.

        Raises ValueError when the columns do not fit each other or ``params``.
        """
        count = len(rows.ids)
        if rows.signatures.shape != (count, params.num_perm) or any(
            len(column) != count for column in (rows.keys, rows.groups, rows.in_lsh)
        ):
            msg = (
                f"{count} ids, {len(rows.keys)} keys, {len(rows.groups)} groups, "
                f"{len(rows.in_lsh)} LSH flags and signatures of shape {rows.signatures.shape} "
                f"do not make an index of {params.num_perm} permutations"
            )
            raise ValueError(msg)
        if len(set(rows.ids)) != count:
            msg = "the ids of an index must be unique"
            raise ValueError(msg)
        index = cls.__new__(cls)
        index._setup(params)
        index._ids = list(rows.ids)
        index._position = {doc_id: i for i, doc_id in enumerate(index._ids)}
        index._signatures = np.ascontiguousarray(rows.signatures, dtype=np.uint32)
        index._keys = np.asarray(rows.keys, dtype=np.uint64)
        index._groups = np.asarray(rows.groups, dtype=np.uint64)
        index._in_lsh = np.asarray(rows.in_lsh, dtype=bool)
        for i, key in enumerate(index._keys.tolist()):
            index._first_with_key.setdefault(key, i)
        docs = np.flatnonzero(index._in_lsh)
        keys = index._band_keys(docs)
        for band in range(params.bands):
            order = np.argsort(keys[:, band], kind="stable")
            index._bucket_keys[band] = keys[order, band]
            index._bucket_docs[band] = docs[order]
        return index
