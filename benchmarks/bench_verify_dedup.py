"""How fast the post-generation stages run on 100,000 rationales, and how well they decide.

One section per stage; each builds its own inputs, prints its own table and one ``RESULT`` line,
and the RESULT lines come last, in section order.

verify: the 12 real records with 3% of their words replaced (headings and tags kept), as many
as ``--docs``; the baseline is parsing alone (``rationale.parse``) in one process, the measured
step parsing plus every check (no judge, no store) through ``verify_many`` on every core, as
``cotforge verify`` runs them, worker start included; the same in one process is shown too,
and ``verify_store`` over a DuckDB store holding the same rationales (reading them and writing
their verdicts as well).

dedup: 100,000 synthetic rationales of 1.5-5k characters made from the 12 real Fine-R1 stage-1
rationales in ``tests/data``: the records are cut into sentences, each sentence gets 30 variants
with 8% of its words replaced by other words of the records, and a document strings random
variants together until it reaches a random length. 10% of the documents are planted light
edits of another document (2-5% of the words replaced, one sentence dropped) and 1% are exact
copies with the case and whitespace changed; those 11,000 (original, copy) pairs are the ground
truth. Measured: ``MinHashIndex.add`` (signatures, LSH, verification) plus ``cluster``, wall
time and peak RSS, and precision/recall of the clusters over the planted pairs.

Baseline, in the same run: datasketch's ``MinHash`` (128 permutations, ``update_batch``) and
``MinHashLSH`` at the same threshold on the same 3-word shingles, on a 10,000-document sample
made of whole families (an original with its copies), extrapolated to docs/s; cotforge is also
run on the same sample. datasketch is not a cotforge dependency (``pip install datasketch``);
without it the baseline row is skipped.

    .venv/bin/python benchmarks/bench_verify_dedup.py [--docs 100000] [--baseline-docs 10000]

The last lines are ``RESULT verify_rationales_per_s=<n> target>=5000`` and
``RESULT dedup_seconds_100k=<seconds> target<10``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from measure import peak_rss_mib, print_table, reset_peak_rss

from cotforge.dedup import cluster
from cotforge.minhash import MinHashIndex, normalize
from cotforge.scoring import ClassMatcher, extract_answer
from cotforge.store import Store

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "fine_r1_stage1_sample.json"
_SENTENCE = re.compile(r"(?<=[.!?:])\s+|\n+")
_WORD_SPLIT = re.compile(r"(\w+)")


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _records() -> list[str]:
    """The assistant messages of the real sample: the rationales the synthetic ones come from."""
    rows = json.loads(SAMPLE.read_text())
    return [m["content"] for row in rows for m in row["messages"] if m["role"] == "assistant"]


def _print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(f"\n{title}")
    print_table(header, rows)


# ----------------------------------------------------------------------------------------------
# dedup
# ----------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    families: list[int]  # documents of one family: an original and its planted copies
    truth: set[tuple[str, str]]  # (original, copy), sorted by id


def _substitute(text: str, share: float, vocabulary: Sequence[str], rng: random.Random) -> str:
    """``text`` with ``share`` of its words replaced by random words of ``vocabulary``."""
    parts = _WORD_SPLIT.split(text)
    words = range(1, len(parts), 2)
    for i in rng.sample(words, round(share * len(words))):
        parts[i] = rng.choice(vocabulary)
    return "".join(parts)


def light_edit(text: str, vocabulary: Sequence[str], rng: random.Random) -> str:
    """One sentence dropped and 2-5% of the words replaced: a teacher's near-identical answer."""
    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    del sentences[rng.randrange(len(sentences))]
    return _substitute("\n".join(sentences), rng.uniform(0.02, 0.05), vocabulary, rng)


def exact_copy(text: str, rng: random.Random) -> str:
    """The same words with other case and whitespace: what exact dedup must still call equal."""
    words = text.split()
    return "  ".join(w.upper() if rng.random() < 0.3 else w for w in words) + " \n"


def build_corpus(docs: int, *, seed: int = 0) -> Corpus:
    """``docs`` documents: 89% distinct, 10% light edits and 1% exact copies of distinct ones."""
    rng = random.Random(seed)
    records = _records()
    vocabulary = sorted({w for r in records for w in re.findall(r"\w+", r)})
    variants = [
        [_substitute(sentence, 0.08, vocabulary, rng) for _ in range(30)]
        for record in records
        for sentence in _SENTENCE.split(record)
        if sentence.strip()
    ]
    edits, exacts = docs // 10, docs // 100
    originals = docs - edits - exacts
    texts, families = [], []
    for family in range(originals):
        target, size, parts = rng.uniform(1500, 5000), 0, []
        while size < target:
            sentence = rng.choice(rng.choice(variants))
            parts.append(sentence)
            size += len(sentence) + 1
        texts.append("\n".join(parts))
        families.append(family)
    copied = rng.sample(range(originals), edits + exacts)
    for n, original in enumerate(copied):
        if n < edits:
            texts.append(light_edit(texts[original], vocabulary, rng))
        else:
            texts.append(exact_copy(texts[original], rng))
        families.append(original)
    order = list(range(docs))
    rng.shuffle(order)
    ids = [f"rat-{i:07d}" for i in range(docs)]
    texts = [texts[i] for i in order]
    families = [families[i] for i in order]
    first_of: dict[int, str] = {}
    truth = set()
    for doc_id, family in zip(ids, families, strict=True):
        if family in first_of:
            truth.add((first_of[family], doc_id))
        else:
            first_of[family] = doc_id
    return Corpus(ids, texts, families, truth)


def sample_families(corpus: Corpus, docs: int, *, seed: int = 1) -> Corpus:
    """About ``docs`` documents of ``corpus`` made of whole families, so their planted pairs are
    all inside the sample."""
    sizes = Counter(corpus.families)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    keep_families: set[int] = set()
    count = 0
    for family in order:
        if count >= docs:
            break
        keep_families.add(family)
        count += sizes[family]
    keep = [i for i, family in enumerate(corpus.families) if family in keep_families]
    ids = [corpus.ids[i] for i in keep]
    inside = set(ids)
    return Corpus(
        ids,
        [corpus.texts[i] for i in keep],
        [corpus.families[i] for i in keep],
        {pair for pair in corpus.truth if pair[0] in inside},
    )


def precision_recall(
    found: set[tuple[str, str]], truth: set[tuple[str, str]]
) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


def clustered_pairs(clusters: Iterable[Iterable[str]]) -> set[tuple[str, str]]:
    """Every pair of documents that share a cluster (given as its member ids), as sorted
    tuples."""
    pairs = set()
    for group in clusters:
        members = sorted(group)
        pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    return pairs


def run_cotforge(corpus: Corpus) -> dict[str, float]:
    reset_peak_rss()
    started = time.perf_counter()
    index = MinHashIndex()
    pairs = index.add(corpus.ids, corpus.texts)
    clusters = cluster(corpus.ids, pairs)
    seconds = time.perf_counter() - started
    precision, recall = precision_recall(
        clustered_pairs([member.id for member in group.members] for group in clusters),
        corpus.truth,
    )
    return {
        "docs": len(corpus.ids),
        "seconds": seconds,
        "rss": peak_rss_mib(),
        "precision": precision,
        "recall": recall,
    }


def run_store_dedup(corpus: Corpus) -> dict[str, float]:
    """``run_dedup`` (what ``cotforge dedup`` runs) on a store holding the corpus: reading the
    texts from DuckDB, hashing, clustering, writing the clusters and saving the index."""
    from cotforge.config import DedupOptions
    from cotforge.dedup import run_dedup

    image = {"image_id": "cub/train/0.jpg", "dataset": "cub", "split": "train", "key": "0.jpg",
             "class_index": 0, "label": "1", "class_name": "Black-footed Albatross"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "d.duckdb") as store:
        store.add_images([image])
        store.add_rationales(
            [
                {"rationale_id": doc_id, "sample_id": image["image_id"], "raw_text": text}
                for doc_id, text in zip(corpus.ids, corpus.texts, strict=True)
            ]
        )
        reset_peak_rss()
        started = time.perf_counter()
        run_dedup(store, DedupOptions())
        seconds = time.perf_counter() - started
        rss = peak_rss_mib()
        rows = store.table("duplicates")
    members: dict[str, list[str]] = {}
    for cluster_id, rationale_id in zip(rows["cluster_id"], rows["rationale_id"], strict=True):
        members.setdefault(cluster_id, []).append(rationale_id)
    precision, recall = precision_recall(clustered_pairs(members.values()), corpus.truth)
    return {
        "docs": len(corpus.ids),
        "seconds": seconds,
        "rss": rss,
        "precision": precision,
        "recall": recall,
    }


def run_datasketch(corpus: Corpus, *, threshold: float, shingle_size: int) -> dict[str, float]:
    """datasketch on the same shingles: normalised words joined in runs of ``shingle_size``."""
    from datasketch import MinHash, MinHashLSH

    reset_peak_rss()
    started = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    found: list[tuple[str, str]] = []
    for doc_id, text in zip(corpus.ids, corpus.texts, strict=True):
        words = normalize(text).split()
        shingles = {
            " ".join(words[i : i + shingle_size])
            for i in range(max(len(words) - shingle_size + 1, 1))
        }
        signature = MinHash(num_perm=128)
        signature.update_batch([s.encode() for s in shingles])
        found.extend((other, doc_id) for other in lsh.query(signature))
        lsh.insert(doc_id, signature)
    seconds = time.perf_counter() - started
    precision, recall = precision_recall({tuple(sorted(p)) for p in found}, corpus.truth)
    return {
        "docs": len(corpus.ids),
        "seconds": seconds,
        "rss": peak_rss_mib(),
        "precision": precision,
        "recall": recall,
    }


def dedup_section(args: argparse.Namespace) -> str:
    """Run the dedup benchmark, print its table, return its RESULT line."""
    started = time.perf_counter()
    corpus = build_corpus(args.docs)
    sample = sample_families(corpus, args.baseline_docs)
    built = time.perf_counter() - started
    chars = sum(map(len, corpus.texts))
    params = MinHashIndex().params
    print(
        f"dedup corpus: {len(corpus.ids):,} rationales, {chars / len(corpus.ids):,.0f} characters "
        f"on average, {len(corpus.truth):,} planted pairs (built in {built:.0f} s); sample of "
        f"{len(sample.ids):,} with {len(sample.truth):,} pairs. Defaults: {params}"
    )
    ours = run_cotforge(corpus)
    ours_sample = run_cotforge(sample)
    through_store = run_store_dedup(corpus)
    try:
        import datasketch  # noqa: F401
    except ImportError:
        baseline = None
    else:
        baseline = run_datasketch(
            sample, threshold=params.threshold, shingle_size=params.shingle_size
        )

    def rate(result: dict[str, float]) -> float:
        return result["docs"] / result["seconds"]

    rows = []
    if baseline is not None:
        rows.append(("datasketch MinHash + MinHashLSH (sample)", baseline, 1.0))
        extrapolated = dict(
            baseline, docs=len(corpus.ids), seconds=len(corpus.ids) / rate(baseline)
        )
        rows.append((f"datasketch, extrapolated to {len(corpus.ids):,}", extrapolated, 1.0))
    for name, result in (
        ("cotforge MinHashIndex.add + cluster (sample)", ours_sample),
        ("cotforge MinHashIndex.add + cluster", ours),
        ("cotforge run_dedup on a store (cotforge dedup)", through_store),
    ):
        rows.append((name, result, rate(result) / rate(baseline) if baseline else float("nan")))
    _print_table(
        "dedup (x = docs/s relative to datasketch on the sample; extrapolated rows are docs/s "
        "times the document count, no RSS)",
        ["what", "docs", "seconds", "docs/s", "peak RSS MiB", "precision", "recall", "x"],
        [
            (
                name,
                f"{result['docs']:,}",
                f"{result['seconds']:.2f}",
                f"{rate(result):,.0f}",
                "-" if "extrapolated" in name else f"{result['rss']:.0f}",
                f"{result['precision']:.3f}",
                f"{result['recall']:.3f}",
                f"{ratio:.1f}",
            )
            for name, result, ratio in rows
        ],
    )
    print(
        "peak RSS includes the corpus held in memory "
        f"({chars / 2**20:.0f} MiB of text as Python strings); the store row also reads the "
        "texts from DuckDB and writes the clusters and the index"
    )
    scale = 100_000 / len(corpus.ids)
    return f"RESULT dedup_seconds_100k={ours['seconds'] * scale:.2f} target<10"


# ----------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------

_DATASET_OF_FOLDER = {
    "fgvc-aircraft-2013b-train": "aircraft",
    "stanford_cars_train": "cars",
    "dogs_120": "dogs",
    "bird_200": "cub",
    "oxford-pet-train": "pets",
    "flower102_train": "flowers",
}


def verify_corpus(docs: int, *, seed: int = 2) -> list[tuple[str, str, str]]:
    """``docs`` (dataset, label, text) triples: the 12 real records with 3% of their words
    replaced (stage headings and tags kept), so every text is new yet shaped like real data."""
    rng = random.Random(seed)
    rows = json.loads(SAMPLE.read_text())
    records = []
    for row in rows:
        text = next(m["content"] for m in row["messages"] if m["role"] == "assistant")
        dataset = _DATASET_OF_FOLDER[row["images"][0].split("/")[0]]
        records.append((dataset, extract_answer(text) or "", text))
    vocabulary = sorted({w for _, _, text in records for w in _WORD_SPLIT.findall(text)})
    out = []
    for n in range(docs):
        dataset, label, text = records[n % len(records)]
        head, sep, answer = text.rpartition("</think>")
        out.append((dataset, label, _substitute(head, 0.03, vocabulary, rng) + sep + answer))
    return out


def verify_section(args: argparse.Namespace) -> str:
    """Parse-only throughput in one process (the baseline) against parse + every check, in one
    process and on every core as ``cotforge verify`` runs them (``verify_many``), no store."""
    from cotforge.process_map import available_cores
    from cotforge.rationale import parse
    from cotforge.verify import accepted, verify_many, verify_store

    corpus = verify_corpus(args.docs)
    matchers = {dataset: ClassMatcher.for_dataset(dataset) for dataset, _, _ in corpus}
    index = {(d, label): matchers[d].find(label)[0].index for d, label, _ in corpus}
    records = [(text, dataset, index[dataset, label]) for dataset, label, text in corpus]
    cores = available_cores()

    def measure(step: str, run: Callable[[], int | None]) -> dict[str, object]:
        reset_peak_rss()
        started, cpu = time.perf_counter(), time.process_time()
        passed = run()
        seconds = time.perf_counter() - started
        return {
            "step": step,
            "seconds": seconds,
            "cpu": time.process_time() - cpu,
            "rss": peak_rss_mib(),
            "passed": passed,
        }

    def parse_only() -> None:
        for text, _, _ in records:
            parse(text)

    def verify(workers: int) -> int:
        return sum(accepted(checks) for checks in verify_many(records, workers=workers))

    rows = [
        measure("parse only, 1 process (baseline)", parse_only),
        measure("parse + 7 checks, 1 process", lambda: verify(1)),
        measure(f"parse + 7 checks, {cores} processes (verify_many)", lambda: verify(cores)),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder, _verify_store(corpus, matchers, folder) as store:
        rows.append(
            measure(
                f"verify_store, {cores} processes (DuckDB read + verdict writes)",
                lambda: verify_store(store).accepted,
            )
        )
    baseline = rows[0]["seconds"]
    _print_table(
        f"verify: {len(corpus):,} rationales of 2.4-4.6k characters (real records, 3% of words "
        f"replaced), without judge, {cores} cores",
        ["step", "rationales", "seconds", "rationales/s", "CPU seconds (this process)",
         "peak RSS MiB (this process)", "x parse-only"],
        [
            [row["step"], f"{len(corpus):,}", f"{row['seconds']:.2f}",
             f"{len(corpus) / row['seconds']:,.0f}", f"{row['cpu']:.2f}", f"{row['rss']:,.0f}",
             f"{baseline / row['seconds']:.2f}"]
            for row in rows
        ],
    )  # fmt: skip
    print(
        f"accepted {rows[1]['passed']:,} of {len(corpus):,} in one process, "
        f"{rows[2]['passed']:,} on {cores}, {rows[3]['passed']:,} from the store; the "
        f"{cores}-process times include starting the workers; in one process, CPU seconds well "
        "below seconds mean other processes had the core. The store row also reads the texts "
        "from DuckDB and writes 7 verdicts per rationale, which this process does while the "
        "workers check; its peak RSS also counts the corpus this benchmark holds"
    )
    rate = len(corpus) / rows[2]["seconds"]
    return f"RESULT verify_rationales_per_s={rate:.0f} target>=5000"


@contextmanager
def _verify_store(
    corpus: Sequence[tuple[str, str, str]], matchers: dict[str, ClassMatcher], folder: str
) -> Iterator[Store]:
    """A store holding ``corpus``, each rationale on its own image row."""
    with Store.open(Path(folder) / "verify.duckdb") as store:
        _fill_store(store, corpus, matchers)
        yield store


def _fill_store(
    store: Store, corpus: Sequence[tuple[str, str, str]], matchers: dict[str, ClassMatcher]
) -> None:
    """Write the images and rationales of ``corpus`` (the rows are freed on return, so they do
    not count in the peak RSS of what is measured next)."""
    images, rationales = [], []
    for n, (dataset, label, text) in enumerate(corpus):
        info = matchers[dataset].find(label)[0]
        image_id = f"{dataset}/train/{n}.jpg"
        images.append(
            {
                "image_id": image_id,
                "dataset": dataset,
                "split": "train",
                "key": f"{n}.jpg",
                "class_index": info.index,
                "label": info.label,
                "class_name": info.name,
            }
        )
        rationales.append({"rationale_id": f"r{n:07d}", "sample_id": image_id, "raw_text": text})
    store.add_images(images)
    store.add_rationales(rationales)


SECTIONS: dict[str, Callable[[argparse.Namespace], str]] = {
    "verify": verify_section,
    "dedup": dedup_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="rationales to deduplicate")
    parser.add_argument(
        "--baseline-docs", type=int, default=10_000, help="sample size for datasketch"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=sorted(SECTIONS),
        default=list(SECTIONS),
        help="which stages to run",
    )
    args = parser.parse_args()
    results = [SECTIONS[name](args) for name in args.sections]
    print()
    for line in results:
        print(line)


if __name__ == "__main__":
    main()
