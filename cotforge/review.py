"""``cotforge review push / pull / status``: human review of rationales in Argilla 2.8.

- :func:`push` sends the store's review candidates (:meth:`Store.review_candidates`) as records
  whose id is the rationale id, in batches: a second push updates records whose content changed
  and skips the rest (``review_pushes`` keeps a hash of what each record was built from), and a
  push the server dropped resumes after the last batch the server confirmed, since each batch
  is recorded only once the server has it.
- :func:`pull` reads every annotator's submitted responses into the store's ``reviews`` (one row
  per reviewer: disagreements stay), adds the decision the curation policy makes of them as the
  reviewer ``cotforge:<policy>`` (dated just after the latest response, so an export, which acts
  on the latest review, takes it), and turns a curated edit into a new rationale version
  (``parent_id`` = what it edits) verified like any other. Everything one pull writes is one
  transaction, and a response is re-dated only when it changed, so pulling twice changes
  nothing.
- :func:`status` counts progress per dataset and class, and agreement between reviewers.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cotforge.config import ExportOptions, VerifyOptions
from cotforge.data.base import ImageRecord
from cotforge.errors import CorruptImageError, ReviewError
from cotforge.export.images import ImageFiles, ImageRef, ordered_map
from cotforge.export.rows import Catalog, Questions
from cotforge.export.run import build_catalog
from cotforge.rationale import parse
from cotforge.review_client import (
    Connection,
    connect,
    dataset_key,
    open_or_create_dataset,
    require_dataset,
    server_errors,
    usernames,
)
from cotforge.review_curation import Agreement, agreement, curate
from cotforge.review_records import (
    STORE_DECISION,
    build_record,
    content_hash,
    image_data_uri,
)
from cotforge.store import utcnow
from cotforge.verify import accepted, verify_many

if TYPE_CHECKING:
    import argilla as rg
    import polars as pl
    from rich.console import Console

    from cotforge.config import ReviewOptions
    from cotforge.store import Store

ENCODE_WORKERS = 4
_POLICY_DELAY = timedelta(milliseconds=1)


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _run_config(options: ReviewOptions, verb: str) -> dict[str, Any]:
    """The options a run records: never the API key."""
    return options.model_dump(mode="json", exclude={"api_key"}) | {"verb": verb}


# --- push -----------------------------------------------------------------------------------


@dataclass
class PushSummary:
    """What one push did, for the closing table."""

    url: str
    dataset: str
    candidates: int
    run_id: str | None = None
    sent: int = 0
    unchanged: int = 0
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, object]]:
        return [
            ("Argilla dataset", f"{self.dataset} at {self.url}"),
            ("review candidates", self.candidates),
            ("records sent (new or changed)", self.sent),
            ("records unchanged since the last push", self.unchanged),
            ("records/s", f"{self.sent / max(self.seconds, 1e-9):.1f}"),
        ]


@dataclass(frozen=True)
class _Item:
    row: dict[str, Any]
    question: str
    hash: str


def push(store: Store, options: ReviewOptions, *, console: Console | None = None) -> PushSummary:
    """Push the review candidates to Argilla; see the module docstring."""
    started = time.perf_counter()
    connection = connect(options)
    rows = store.review_candidates(only=options.only, run_id=options.run_id)
    if rows.height == 0:
        scope = f" of run {options.run_id}" if options.run_id else ""
        msg = (
            f"nothing to push: the store has no {options.only} rationales{scope}; run "
            f"`cotforge generate` / `verify` first, or pass --only all"
        )
        raise ReviewError(msg)
    catalog = build_catalog(store, ExportOptions(out=Path(), roots=options.roots))
    questions = Questions(store.question_answers(), catalog)
    key = dataset_key(options)
    pushed = dict(store.review_pushes(key).select("rationale_id", "content_hash").iter_rows())
    summary = PushSummary(connection.url, key, rows.height)
    items = []
    for row in rows.iter_rows(named=True):
        question = questions.for_rationale(
            row["dataset"], row["sample_id"], model=row["model"], requested_at=row["requested_at"]
        )
        items.append(
            _Item(row, question, content_hash(row, question, image_side=options.image_side))
        )
    files = _image_files(catalog, [item.row for item in items])
    dataset, created = open_or_create_dataset(connection, options)
    if created:
        pushed = {}  # a dataset deleted in Argilla and made anew holds none of the old pushes
    todo = [item for item in items if pushed.get(item.row["rationale_id"]) != item.hash]
    summary.unchanged = len(items) - len(todo)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    run_id = store.start_run("review", _run_config(options, "push"), _versions())
    summary.run_id = run_id
    try:
        with store.finishing(run_id), _progress(console) as progress:
            task = progress.add_task(f"pushing to {key}", total=len(todo))
            # one batch is encoded while the one before it is being sent
            with ThreadPoolExecutor(1, thread_name_prefix="cotforge-push") as sender:
                sending: tuple[Future[None], Sequence[_Item]] | None = None
                for batch in _chunks(todo, options.batch_size):
                    uris = ordered_map(
                        lambda item: _image_uri(files, catalog, item.row, options.image_side),
                        batch,
                        workers=ENCODE_WORKERS,
                    )
                    records = [
                        build_record(item.row, question=item.question, image_uri=uri)
                        for item, uri in zip(batch, uris, strict=True)
                    ]
                    if sending is not None:
                        _confirm(store, *sending, key=key, run_id=run_id, summary=summary)
                        progress.advance(task, len(sending[1]))
                    sending = sender.submit(_upsert, connection, dataset, records), batch
                if sending is not None:
                    _confirm(store, *sending, key=key, run_id=run_id, summary=summary)
                    progress.advance(task, len(sending[1]))
    except ReviewError as err:
        msg = (
            f"{err}. {summary.sent} of {len(todo)} records were pushed and recorded; run "
            f"`cotforge review push` again to send the rest"
        )
        raise ReviewError(msg) from err
    summary.seconds = time.perf_counter() - started
    return summary


def _confirm(
    store: Store,
    sent: Future[None],
    batch: Sequence[_Item],
    *,
    key: str,
    run_id: str,
    summary: PushSummary,
) -> None:
    """Wait for the server to confirm ``batch``, then record it as pushed."""
    with server_errors(summary.url, f"pushing records ({summary.sent} sent)"):
        sent.result()
    store.record_review_pushes(
        [
            {
                "rationale_id": item.row["rationale_id"],
                "dataset_name": key,
                "content_hash": item.hash,
                "run_id": run_id,
            }
            for item in batch
        ]
    )
    summary.sent += len(batch)


def _versions() -> dict[str, str]:
    return {"cotforge": version("cotforge"), "argilla": version("argilla")}


def _chunks(items: Sequence[_Item], size: int) -> Iterator[Sequence[_Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _image_files(catalog: Catalog, rows: Sequence[Mapping[str, Any]]) -> ImageFiles:
    """The image files of ``rows``, checked present before anything is sent."""
    unrooted = sorted({row["dataset"] for row in rows} & catalog.unrooted)
    if unrooted:
        msg = (
            f"no folder is known for dataset {unrooted[0]} (it has no plan or import); "
            f"pass --root {unrooted[0]}=FOLDER"
        )
        raise ReviewError(msg)
    files = ImageFiles(catalog.sources, catalog.import_roots)
    files.check_present(_ref(row) for row in rows)
    return files


def _ref(row: Mapping[str, Any]) -> ImageRef:
    return ImageRef(
        row["dataset"],
        row["split"],
        row["key"],
        row["class_index"],
        f"rationale {row['rationale_id']}",
    )


def _image_uri(files: ImageFiles, catalog: Catalog, row: Mapping[str, Any], side: int) -> str:
    """The record's image as the dataset means it (e.g. aircraft without its banner), shrunk."""
    ref = _ref(row)
    path = files.path(ref)
    source = catalog.sources[ref.dataset]
    try:
        if source.edits_pixels:
            record = ImageRecord(ref.dataset, ref.split, ref.key, path, ref.class_index)
            return image_data_uri(source.open_image(record), side=side)
        with Image.open(path) as image:
            # a JPEG decodes at 1/2, 1/4 or 1/8 scale when that is still at least ``side``
            image.draft("RGB", (side, side))
            return image_data_uri(image, side=side)
    except (CorruptImageError, UnidentifiedImageError, OSError) as err:
        msg = f"image {ref.image_id} of {ref.owner} cannot be read ({err}); replace the file"
        raise ReviewError(msg) from err


def _upsert(connection: Connection, dataset: rg.Dataset, records: list[rg.Record]) -> None:
    """One bulk upsert, the request ``records.log`` sends per batch, minus two costs of the
    SDK's call: the server answers with every record it stored, images included, which the SDK
    asks for compressed (a quarter of the server's time went to gzip) and parses back into
    models that a push never reads."""
    for record in records:
        record.dataset = dataset
    response = connection.client.api.records.http_client.put(
        f"/api/v1/datasets/{dataset.id}/records/bulk",
        json={"items": [record.api_model().model_dump() for record in records]},
        headers={"Accept-Encoding": "identity"},
    )
    response.raise_for_status()


# --- pull -----------------------------------------------------------------------------------


@dataclass
class PullSummary:
    """What one pull found and wrote, for the closing table."""

    url: str
    dataset: str
    policy: str
    run_id: str | None = None
    records: int = 0
    responded: int = 0
    responses: int = 0
    reviews_written: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    new_versions: int = 0
    new_versions_accepted: int = 0
    deleted: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = [
            ("Argilla dataset", f"{self.dataset} at {self.url}"),
            ("records on the server", self.records),
            ("records with submitted responses", self.responded),
            ("submitted responses", self.responses),
        ]
        rows += [
            (f"decided {name} ({self.policy})", self.decisions[name])
            for name in ("accept", "edit", "reject")
        ]
        rows += [
            ("review rows written (new or changed)", self.reviews_written),
            ("new edited versions", self.new_versions),
            ("of those, passing verification", self.new_versions_accepted),
            ("records/s", f"{self.records / max(self.seconds, 1e-9):.1f}"),
        ]
        return rows

    def notes(self) -> list[str]:
        """Warnings about records the pull could not use, each saying what to do."""
        notes = []
        if self.deleted:
            notes.append(
                f"{len(self.deleted)} pushed records are no longer in Argilla (deleted in the "
                f"UI?), e.g. {self.deleted[0]}; their reviews in the store are kept, and the next "
                f"`cotforge review push` sends them again"
            )
        if self.unknown:
            notes.append(
                f"{len(self.unknown)} records with responses are not rationales of this store, "
                f"e.g. {self.unknown[0]} (pushed from another store?); their responses were left "
                f"out"
            )
        return notes


@dataclass(frozen=True)
class _Response:
    decision: str
    problems: tuple[str, ...]
    edited: str | None
    notes: str | None


def pull(
    store: Store,
    options: ReviewOptions,
    *,
    verify_options: VerifyOptions | None = None,
    console: Console | None = None,
) -> PullSummary:
    """Pull submitted responses into the store; see the module docstring."""
    started = time.perf_counter()
    connection = connect(options)
    dataset = require_dataset(connection, options)
    names = usernames(connection)
    key = dataset_key(options)
    summary = PullSummary(connection.url, key, options.policy)
    on_server, responded = _read_responses(connection, dataset, names, summary, console)
    pushed = set(store.review_pushes(key)["rationale_id"].to_list())
    summary.deleted = sorted(pushed - on_server)
    chains = _chains(store.version_chains(sorted(responded)))
    summary.unknown = sorted(set(responded) - set(chains))
    summary.responded = len(responded)
    summary.responses = sum(len(by_user) for by_user in responded.values())
    writer = _PullWriter(store, options, verify_options or VerifyOptions(), chains)
    for record_id in sorted(set(responded) & set(chains)):
        writer.add(record_id, responded[record_id])
    summary.decisions = writer.decisions
    if writer.reviews or writer.rationales or summary.deleted:
        with store.transaction():
            run_id = store.start_run("review", _run_config(options, "pull"), _versions())
            writer.verify_new(run_id)
            store.upsert_reviews(writer.reviews)
            store.add_rationales(writer.rationales)
            store.upsert_verdicts(writer.verdicts)
            store.forget_review_pushes(key, summary.deleted)
            store.finish_run(run_id, "ok")
        summary.run_id = run_id
    summary.reviews_written = len(writer.reviews)
    summary.new_versions = len(writer.rationales)
    summary.new_versions_accepted = writer.accepted
    summary.seconds = time.perf_counter() - started
    return summary


def _read_responses(
    connection: Connection,
    dataset: rg.Dataset,
    names: Mapping[str, str],
    summary: PullSummary,
    console: Console | None,
) -> tuple[set[str], dict[str, dict[str, _Response]]]:
    """Every record id on the server, and each record's submitted responses by username."""
    on_server: set[str] = set()
    responded: dict[str, dict[str, _Response]] = {}
    with server_errors(connection.url, "reading responses"), _progress(console) as progress:
        task = progress.add_task(f"pulling from {summary.dataset}", total=None)
        for record in dataset.records(with_responses=True, with_suggestions=False, batch_size=500):
            on_server.add(str(record.id))
            by_user = _submitted(record, names)
            if by_user:
                responded[str(record.id)] = by_user
            progress.advance(task)
    summary.records = len(on_server)
    return on_server, responded


def _submitted(record: rg.Record, names: Mapping[str, str]) -> dict[str, _Response]:
    """A record's submitted responses by username (drafts and discards are not decisions)."""
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    for response in record.responses:
        if str(getattr(response.status, "value", response.status)) == "submitted":
            values[str(response.user_id)][response.question_name] = response.value
    found = {}
    for user_id, answers in values.items():
        if "decision" not in answers:
            continue
        edited = answers.get("edited_rationale")
        found[names.get(user_id, user_id)] = _Response(
            decision=STORE_DECISION[answers["decision"]],
            problems=tuple(sorted(answers.get("problems") or ())),
            edited=edited if isinstance(edited, str) and edited.strip() else None,
            notes=answers.get("notes") or None,
        )
    return found


@dataclass
class _Version:
    rationale_id: str
    version: int
    sample_id: str
    text: str | None
    dataset: str | None
    class_index: int | None


def _chains(frame: pl.DataFrame) -> dict[str, list[_Version]]:
    """Each root's versions, oldest first."""
    chains: dict[str, list[_Version]] = defaultdict(list)
    for row in frame.iter_rows(named=True):
        chains[row["root_id"]].append(
            _Version(
                row["rationale_id"],
                row["version"],
                row["sample_id"],
                row["text"],
                row["dataset"],
                row["class_index"],
            )
        )
    return dict(chains)


class _PullWriter:
    """Collects what a pull writes: reviewer rows, curated rows, new versions and verdicts.

    A reviewer's row is written only when its content changed (then dated now), so a second
    pull of unchanged responses writes nothing.
    """

    def __init__(
        self,
        store: Store,
        options: ReviewOptions,
        verify_options: VerifyOptions,
        chains: dict[str, list[_Version]],
    ) -> None:
        self.options = options
        self.verify_options = verify_options
        self.chains = chains
        self.curator = f"cotforge:{options.policy}"
        ids = [v.rationale_id for chain in chains.values() for v in chain]
        stored = store.table("reviews", where={"rationale_id": ids})
        self.stored = {(r["rationale_id"], r["reviewer"]): r for r in stored.iter_rows(named=True)}
        self.now = utcnow()
        self.reviews: list[dict[str, Any]] = []
        self.rationales: list[dict[str, Any]] = []
        self.new_versions: list[_Version] = []
        self.verdicts: list[dict[str, Any]] = []
        self.decisions: Counter[str] = Counter()
        self.accepted = 0

    def add(self, root: str, by_user: Mapping[str, _Response]) -> None:
        chain = self.chains[root]
        original = chain[0]
        rows = {
            reviewer: self._row(
                root,
                reviewer,
                response.decision,
                response.problems,
                response.edited if response.edited != original.text else None,
                response.notes,
            )
            for reviewer, response in by_user.items()
        }
        decision = curate([row["decision"] for row in rows.values()], policy=self.options.policy)
        self.decisions[decision] += 1
        edits = sorted(
            (row["submitted_at"], reviewer, row["edited_text"])
            for reviewer, row in rows.items()
            if row["decision"] == "edit" and row["edited_text"]
        )
        text = edits[-1][2] if decision == "edit" and edits else None
        at = max(row["submitted_at"] for row in rows.values()) + _POLICY_DELAY
        problems = tuple(sorted({p for row in rows.values() for p in row["problems"] or ()}))
        votes = "; ".join(f"{r}: {row['decision']}" for r, row in sorted(rows.items()))
        self._row(root, self.curator, decision, problems, text, votes, at=at)
        latest = chain[-1]
        if text is not None and text != latest.text:
            latest = self._new_version(root, latest, text)
        if latest.rationale_id != root:
            mirrored = "accept" if decision == "edit" else decision
            note = f"the reviewers' decision on {root}, which this version edits ({votes})"
            self._row(latest.rationale_id, self.curator, mirrored, problems, None, note, at=at)

    def _row(
        self,
        rationale_id: str,
        reviewer: str,
        decision: str,
        problems: Sequence[str],
        edited: str | None,
        notes: str | None,
        *,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """The review row, queued for writing when it differs from the stored one."""
        row = {
            "rationale_id": rationale_id,
            "reviewer": reviewer,
            "decision": decision,
            "problems": list(problems),
            "edited_text": edited,
            "notes": notes,
        }
        old = self.stored.get((rationale_id, reviewer))
        same = old is not None and all(old[k] == v for k, v in row.items())
        if same and (at is None or old["submitted_at"] == at):
            return {**row, "submitted_at": old["submitted_at"]}
        row["submitted_at"] = at or self.now
        self.reviews.append(row)
        return row

    def _new_version(self, root: str, latest: _Version, text: str) -> _Version:
        new = _Version(
            f"{root}@v{latest.version + 1}",
            latest.version + 1,
            latest.sample_id,
            text,
            latest.dataset,
            latest.class_index,
        )
        parsed = parse(text)
        self.rationales.append(
            {
                "rationale_id": new.rationale_id,
                "request_id": None,
                "sample_id": new.sample_id,
                "version": new.version,
                "parent_id": latest.rationale_id,
                "raw_text": text,
                "analysis": parsed.analysis,
                "candidates": list(parsed.candidates),
                "comparison": parsed.comparison,
                "prediction": parsed.prediction,
            }
        )
        self.new_versions.append(new)
        return new

    def verify_new(self, run_id: str) -> None:
        """Verify every new version (as ``cotforge verify`` does) and stamp the run."""
        required = set(self.verify_options.required)
        checked = verify_many(
            ((v.text, v.dataset, v.class_index) for v in self.new_versions),
            options=self.verify_options,
        )
        for rationale, results in zip(self.rationales, checked, strict=True):
            rationale["run_id"] = run_id
            self.accepted += accepted(results, self.verify_options)
            self.verdicts.extend(
                {
                    "rationale_id": rationale["rationale_id"],
                    "check_name": r.name,
                    "passed": r.passed,
                    "required": r.name in required,
                    "reason": r.reason,
                    "run_id": run_id,
                }
                for r in results
            )


# --- status ---------------------------------------------------------------------------------


@dataclass
class ClassProgress:
    """Review progress of one class of one dataset."""

    dataset: str
    class_name: str
    records: int = 0
    reviewed: int = 0
    complete: int = 0
    decisions: Counter[str] = field(default_factory=Counter)


@dataclass
class ReviewStatus:
    """Progress per dataset and class, and agreement between reviewers."""

    url: str
    dataset: str
    classes: list[ClassProgress]
    agreement: Agreement
    reviewers: Counter[str]


def status(options: ReviewOptions, *, console: Console | None = None) -> ReviewStatus:
    """Read the dataset's records and responses and count progress and agreement."""
    connection = connect(options)
    dataset = require_dataset(connection, options)
    names = usernames(connection)
    progress: dict[tuple[str, str], ClassProgress] = {}
    decided: list[list[str]] = []
    reviewers: Counter[str] = Counter()
    with server_errors(connection.url, "reading records"), _progress(console) as bar:
        task = bar.add_task(f"reading {dataset_key(options)}", total=None)
        for record in dataset.records(with_responses=True, with_suggestions=False, batch_size=500):
            metadata = record.metadata or {}
            where = (str(metadata.get("dataset", "?")), str(metadata.get("class", "?")))
            entry = progress.setdefault(where, ClassProgress(*where))
            entry.records += 1
            by_user = _submitted(record, names)
            entry.reviewed += bool(by_user)
            entry.complete += str(getattr(record.status, "value", record.status)) == "completed"
            entry.decisions.update(r.decision for r in by_user.values())
            reviewers.update(by_user.keys())
            decided.append([r.decision for r in by_user.values()])
            bar.advance(task)
    return ReviewStatus(
        connection.url,
        dataset_key(options),
        [progress[k] for k in sorted(progress)],
        agreement(decided),
        reviewers,
    )
