"""How fast ``cotforge review push`` and ``pull`` move records through a real Argilla 2.8.

Builds a store of N curated CUB-200 records (the inputs of ``bench_export.py``: photo-like
512x512 JPEGs in the official layout, ~3 kB tagged rationales from the real Fine-R1 records,
parsed into stages, with passing verdicts), starts the local stack (redis, osmem, Argilla on
free loopback ports), then times, in this order:

- ``cotforge push``: :func:`cotforge.review.push` of the N records with 256-px images (reading
  the store, decoding and shrinking each image, building the records, recording each batch);
- ``plain SDK log``: the baseline in the same run: the same N records, already built (images
  encoded), sent with ``Dataset.records.log`` into a second dataset: the server's own speed;
- responses are then given to every record (bulk upsert as the owner: 85% accept, 10% reject,
  5% needs edit with an edited text), untimed;
- ``cotforge pull``: :func:`cotforge.review.pull` of the N responses (reading them, writing the
  reviews, the curated decisions and the edited versions, verifying those);
- ``plain SDK read``: the baseline: iterating the dataset's records with responses.

    .venv/bin/python benchmarks/bench_review.py [--records 2000]

Needs redis-server and the server venv (``$COTFORGE_ARGILLA_VENV``). The last lines are
``RESULT pull_records_per_s=... target>=500`` and ``RESULT push_records_per_s=... target>=100``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import _answer, _texts, write_images

from cotforge.argilla_stack import start_stack
from cotforge.config import ExportOptions, ReviewOptions
from cotforge.data.annotations import load_annotations
from cotforge.export.rows import Questions
from cotforge.export.run import build_catalog
from cotforge.rationale import parse
from cotforge.review import _image_files, _image_uri, pull, push
from cotforge.review_records import build_record, review_settings, sdk
from cotforge.store import Store

DATASET = "cub"
IMAGE_SIDE = 256


def build_store(path: Path, root: Path, images: list[tuple[str, int]]) -> None:
    """N generated rationales that pass curation, parsed into stages as generation stores them."""
    notes = load_annotations(DATASET)
    texts = _texts()
    rng = random.Random(0)
    with Store.open(path) as db:
        plan = db.start_run("plan", {"dataset": DATASET, "root": str(root)}, {})
        db.finish_run(plan, "ok")
        run = db.start_run("generate", {"dataset": DATASET}, {})
        rows: dict[str, list[dict]] = {n: [] for n in ("images", "requests", "rationales")}
        verdicts = []
        for key, index in images:
            info = notes.classes[index]
            image_id = f"{DATASET}/train/{key}"
            rows["images"].append(
                {"image_id": image_id, "dataset": DATASET, "split": "train", "key": key}
                | {"class_index": index, "label": info.label, "class_name": info.name}
            )
            rid = f"{rng.getrandbits(128):032x}"
            text = _answer(info.name, texts[index % len(texts)])
            parsed = parse(text)
            rows["requests"].append(
                {"request_id": rid, "run_id": run, "sample_id": image_id, "purpose": "rationale"}
                | {"model": "bench:teacher", "prompt_hash": "0" * 16, "status": "ok"}
                | {"response_text": text}
            )
            rows["rationales"].append(
                {"rationale_id": rid, "request_id": rid, "sample_id": image_id}
                | {"analysis": parsed.analysis, "candidates": list(parsed.candidates)}
                | {"comparison": parsed.comparison, "prediction": parsed.prediction}
            )
            verdicts.append(
                {"rationale_id": rid, "check_name": "structure", "passed": True}
                | {"required": True, "run_id": run, "reason": "four stages in order"}
            )
        with db.transaction():
            db.add_images(rows["images"])
            db.add_request_results(rows["requests"], rows["rationales"])
            db.upsert_verdicts(verdicts)
        db.finish_run(run, "ok")


def built_records(store: Path, options: ReviewOptions) -> list:
    """The records cotforge pushes, built up front (images encoded) for the SDK baseline."""
    with Store.open(store, read_only=True) as db:
        rows = list(db.review_candidates(only="accepted").iter_rows(named=True))
        catalog = build_catalog(db, ExportOptions(out=Path(), roots=options.roots))
        questions = Questions(db.question_answers(), catalog)
    files = _image_files(catalog, rows)
    return [
        build_record(
            row,
            question=questions.for_rationale(
                row["dataset"], row["sample_id"], model=row["model"], requested_at=None
            ),
            image_uri=_image_uri(files, catalog, row, IMAGE_SIDE),
        )
        for row in rows
    ]


def give_responses(client, dataset, records: list, texts: dict[str, str]) -> None:
    """A response on every record, as its owner: 85% accept, 10% reject, 5% needs edit."""
    rg = sdk()
    me = client.me.id
    for number, record in enumerate(records):
        if number % 20 == 0:
            values = {
                "decision": "needs_edit",
                "edited_rationale": texts[record.id].replace(
                    "<analysis>\n", "<analysis>\nA reviewer adds one sentence here. ", 1
                ),
            }
        else:
            values = {"decision": "reject" if number % 10 == 1 else "accept"}
        for question, value in values.items():
            record.responses.add(rg.Response(question, value, user_id=me, status="submitted"))
    dataset.records.log(records, batch_size=250)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        cub = work / "CUB_200_2011"
        build_store(work / "store.duckdb", cub, write_images(cub, DATASET, n))
        print(f"inputs: {n:,} JPEGs + store in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        with start_stack(work / "stack", annotators=1) as stack:
            print(f"stack: ready in {time.perf_counter() - started:.1f} s at {stack.url}")
            options = ReviewOptions(
                api_url=stack.url,
                api_key=stack.owner.api_key,
                dataset_name="bench",
                image_side=IMAGE_SIDE,
            )
            results = []
            with Store.open(work / "store.duckdb") as db:
                started = time.perf_counter()
                summary = push(db, options)
                results.append(("cotforge push", summary.sent, time.perf_counter() - started))

            records = built_records(work / "store.duckdb", options)
            rg = sdk()
            client = rg.Argilla(api_url=stack.url, api_key=stack.owner.api_key)
            workspace = client.workspaces("cotforge")
            plain = rg.Dataset(
                name="bench-plain", workspace=workspace, settings=review_settings(), client=client
            ).create()
            started = time.perf_counter()
            plain.records.log(records, batch_size=options.batch_size)
            results.append(("plain SDK log", len(records), time.perf_counter() - started))

            ours = client.datasets(name="bench", workspace=workspace)
            texts = {r.id: r.suggestions["edited_rationale"].value for r in records}
            give_responses(client, ours, records, texts)
            with Store.open(work / "store.duckdb") as db:
                started = time.perf_counter()
                pulled = pull(db, options)
                results.append(("cotforge pull", pulled.responded, time.perf_counter() - started))
            started = time.perf_counter()
            read = sum(1 for _ in ours.records(with_responses=True, with_suggestions=False))
            results.append(("plain SDK read", read, time.perf_counter() - started))

    print(f"{'phase':<16}{'records':>9}{'seconds':>10}{'records/s':>12}")
    for name, count, seconds in results:
        print(f"{name:<16}{count:>9,}{seconds:>10.2f}{count / seconds:>12.0f}")
    push_rate = results[0][1] / results[0][2]
    pull_rate = results[2][1] / results[2][2]
    print(f"push vs plain SDK log: {push_rate / (results[1][1] / results[1][2]):.2f}x")
    print(f"pull vs plain SDK read: {pull_rate / (results[3][1] / results[3][2]):.2f}x")
    print(
        f"pull: {pulled.decisions['accept']} accept, {pulled.decisions['reject']} reject, "
        f"{pulled.decisions['edit']} edit -> {pulled.new_versions} new versions"
    )
    print(f"RESULT pull_records_per_s={pull_rate:.0f} target>=500")
    print(f"RESULT push_records_per_s={push_rate:.0f} target>=100")


if __name__ == "__main__":
    main()
