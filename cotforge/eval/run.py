"""The evaluation loop: plan every question, ask only what the store lacks, score and record
each answer as it arrives, then read the results back from the store.

A question is one (image, mode, option order, trial). Its request id hashes the model, the
prompt template's digest, the rendered prompt, the image digest and the sampling parameters
(and the trial when sampling), so equal questions share one request: with greedy decoding the
open-world trials ask once, and a closed-world trial whose shuffle lands on an order already
asked reuses that answer. Its prediction id hashes the request with the trial, mode, order,
question source and text encoder.

Each answer is written to the store with its predictions in one transaction by a writer
thread, which also embeds open-world answers for SS_rel in batches, so the event loop only
sends and parses. A rerun after a crash or ``kill -9`` finds the predictions it has, scores
stored answers it has no prediction for (a new trial count or text encoder costs no model
call), and sends only the rest. The results are always computed from the store, over exactly
this evaluation's prediction ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cotforge.batch_writer import BatchWriter
from cotforge.calls import request_row
from cotforge.config import GlobalOptions
from cotforge.errors import ConfigError
from cotforge.eval.backends import ModelSpec, build_generator, check_generator, parse_model
from cotforge.eval.items import EvalItem, export_items, find_root, iter_datasets, source_items
from cotforge.eval.metrics import Mode, PromptStyle, judge_output, super_category
from cotforge.eval.paper import paper_row
from cotforge.eval.prompts import option_prompt, render, template_digest
from cotforge.eval.results import EvalResults, RunFigures, aggregate
from cotforge.eval.similarity import RelativeSimilarity, TextEncoder, load_text_encoder
from cotforge.eval_set import shuffle_options
from cotforge.scoring import ClassMatcher
from cotforge.teachers.base import TeacherRequest

if TYPE_CHECKING:
    from cotforge.config import EvalOptions
    from cotforge.eval.zero_shot import ZeroShotModel
    from cotforge.store import Store
    from cotforge.teachers.base import Teacher, TeacherResponse

MANIFEST_ORDER = "manifest"
SHUFFLED_ORDER = "shuffled"


@dataclass(frozen=True)
class Question:
    """One question to one model: an image, a mode, an option order and a trial."""

    prediction_id: str
    key: str
    """The request id (generative models) or the zero-shot key: questions with the same key
    get the same answer, which is computed once."""
    item: EvalItem
    mode: Mode
    order: str | None
    """Closed world: ``manifest`` (the rows' own order, truth first in the paper's
    manifests) or ``shuffled`` (seeded per image and trial). None in the open world."""
    trial: int
    options: tuple[str, ...]
    """The options as shown (empty in the open world)."""
    prompt: str
    request: TeacherRequest | None


def _digest(*parts: object) -> str:
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def plan_questions(
    items: Sequence[EvalItem],
    *,
    model: str,
    style: PromptStyle,
    modes: Sequence[Mode],
    options: EvalOptions,
    text_encoder: str | None,
) -> list[Question]:
    """Every question of the evaluation, in (mode, order, trial, item) order.

    Closed-world questions of the paper's manifests come in two orders: the manifests' own
    (truth first, as the paper scored them) and shuffled per image and trial, which removes
    that bias. Other rows are shuffled only.
    """
    rows = options.rows
    questions = []
    for mode in modes:
        orders: tuple[str | None, ...] = (None,)
        if mode == "closed":
            orders = (MANIFEST_ORDER, SHUFFLED_ORDER) if rows == "paper" else (SHUFFLED_ORDER,)
        for order in orders:
            for trial in range(options.trials):
                for item in items:
                    key, prompt, shown, request = _ask(
                        item, model=model, style=style, mode=mode, order=order, trial=trial,
                        options=options,
                    )  # fmt: skip
                    encoder = text_encoder if mode == "open" else None
                    prediction_id = _digest(key, trial, mode, order, rows, item.image_id, encoder)
                    questions.append(
                        Question(
                            prediction_id, key, item, mode, order, trial, shown, prompt, request
                        )
                    )
    return questions


def _ask(
    item: EvalItem,
    *,
    model: str,
    style: PromptStyle,
    mode: Mode,
    order: str | None,
    trial: int,
    options: EvalOptions,
) -> tuple[str, str, tuple[str, ...], TeacherRequest | None]:
    """(key, prompt, options shown, request) of one question; no request for zero-shot."""
    shown: tuple[str, ...] = ()
    if order == MANIFEST_ORDER:
        shown = item.options
    elif order == SHUFFLED_ORDER:
        seed = options.seed + trial
        shown = tuple(shuffle_options(item.options, seed=seed, image_id=item.image_id))
    word = super_category(item.dataset)
    digest = template_digest(style, mode)
    if style == "zero-shot":
        prompt = "\n".join(option_prompt(name, super_category=word) for name in shown)
        # The choice depends on the image and the set of options, not on their order.
        return _digest(model, digest, item.image.digest, sorted(shown)), prompt, shown, None
    prompt = render(style, mode, question=item.question, options=shown, super_category=word)
    sampling = options.temperature > 0
    params: dict[str, Any] = {
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "seed": options.seed * 1000 + trial if sampling else None,
    }
    # Greedy answers do not depend on the trial, so trials that show the same prompt share one.
    key = _digest(model, style, digest, prompt, item.image.digest, params, trial if sampling else 0)
    return (
        key,
        prompt,
        shown,
        TeacherRequest(request_id=key, prompt=prompt, images=(item.image,), **params),
    )


# --- writing as answers arrive -----------------------------------------------------------------


@dataclass
class _Write:
    requests: list[dict[str, Any]]
    predictions: list[dict[str, Any]]
    similarity: list[tuple[dict[str, Any], str, str, str]] = field(default_factory=list)
    """(prediction row, answer text, truth, super-category word): SS_rel still to compute."""


WRITE_INTERVAL_S = 0.5
"""How long the writer collects answers before it writes them in one transaction. A store
write costs tens of milliseconds whatever its size (and more as the tables grow), so writing
every few answers kept a core busy at 300 answers/s; half a second of answers per transaction
costs a few percent, and a kill loses at most that much work."""


def _write_predictions(
    store: Store, similarity: RelativeSimilarity | None, writes: list[_Write]
) -> None:
    """Eval answers and their predictions in one transaction, after embedding the batch's
    open-world answers for SS_rel (one encoder call for the batch, not one per answer)."""
    pending = [entry for w in writes for entry in w.similarity]
    if pending:
        assert similarity is not None
        scores = similarity.scores([(text, truth, word) for _, text, truth, word in pending])
        for (row, *_), value in zip(pending, scores, strict=True):
            row["ss_rel"] = value
    store.add_eval_results(
        [row for w in writes for row in w.requests],
        [row for w in writes for row in w.predictions],
    )


# --- the run -------------------------------------------------------------------------------------


class Evaluation:
    """One evaluation of one model over ``questions``, writing to ``store``.

    Build it, then :meth:`run_generative` (async) or :meth:`run_zero_shot`; ``figures`` fills
    in as it goes, so an interrupted run still says what it did.
    """

    def __init__(
        self,
        questions: Sequence[Question],
        *,
        store: Store,
        spec: ModelSpec,
        style: PromptStyle,
        rows: str,
        run_id: str,
        encoder: TextEncoder | None,
        console: Console,
    ) -> None:
        self.questions = questions
        self.store = store
        self.spec = spec
        self.style = style
        self.rows = rows
        self.run_id = run_id
        self.encoder = encoder
        self.console = console
        self.figures = RunFigures(run_id=run_id, model=spec.name, questions=len(questions))
        self._recorder: BatchWriter[_Write] | None = None
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = time.perf_counter()

    # -- shared -----------------------------------------------------------------------------------

    def _pending(self) -> dict[str, list[Question]]:
        """Questions without a stored prediction, grouped by the answer they share."""
        ids = [q.prediction_id for q in self.questions]
        stored = set(self.store.predictions(ids)["prediction_id"].to_list())
        self.figures.predictions_before = len(stored)
        groups: dict[str, list[Question]] = {}
        for question in self.questions:
            if question.prediction_id not in stored:
                groups.setdefault(question.key, []).append(question)
        return groups

    def _start(self, total: int) -> None:
        similarity = RelativeSimilarity(self.encoder) if self.encoder is not None else None
        self._recorder = BatchWriter(
            partial(_write_predictions, self.store, similarity),
            what="writing predictions to the store",
            gather_s=WRITE_INTERVAL_S,
            name="cotforge-eval-store",
        )
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(f"eval {self.spec.name}", total=total, figures="")
        self._started = time.perf_counter()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._recorder is not None:
            self._recorder.close()
        self.figures.wall_s = time.perf_counter() - self._started

    def _record(
        self,
        questions: Sequence[Question],
        text: str | None,
        request: dict | None,
        *,
        raw_output: str | None = None,
    ) -> None:
        """Score ``text`` for every question sharing it and queue the writes; ``text`` None
        (a failed request) records the request alone, so a rerun asks again. ``raw_output``
        is stored with each prediction when no request row holds the output (zero-shot)."""
        predictions: list[dict[str, Any]] = []
        similarity = []
        if text is not None:
            for question in questions:
                row, pending = self._prediction(question, text, raw_output)
                predictions.append(row)
                if pending is not None:
                    similarity.append((row, *pending))
        assert self._recorder is not None
        self._recorder.put(_Write([request] if request else [], predictions, similarity))
        self.figures.predictions += len(predictions)
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            rate = f"{self.figures.predictions / elapsed:.1f} q/s"
            self._progress.update(self._task, advance=len(questions), figures=rate)

    def _prediction(
        self, question: Question, text: str, raw_output: str | None
    ) -> tuple[dict[str, Any], tuple[str, str, str] | None]:
        """The prediction row of ``question`` answered by ``text``, and what SS_rel still
        needs (answer, truth, super-category word) in the open world."""
        item = question.item
        matcher = ClassMatcher.for_dataset(item.dataset)
        truth = matcher.annotations.by_name[item.answer]
        judged = judge_output(text, truth, matcher=matcher, mode=question.mode, style=self.style)
        open_world = question.mode == "open"
        row = {
            "prediction_id": question.prediction_id,
            "run_id": self.run_id,
            "request_id": question.request.request_id if question.request else None,
            "model": self.spec.name,
            "dataset": item.dataset,
            "image_id": item.image_id,
            "class_split": item.split,
            "mode": question.mode,
            "rows_source": self.rows,
            "option_order": question.order,
            "trial": question.trial,
            "prompt_style": self.style,
            "prompt_hash": template_digest(self.style, question.mode),
            "prompt": question.prompt,
            "options": list(question.options) if question.options else None,
            "ground_truth": item.answer,
            "raw_output": raw_output,
            "parsed_answer": judged.answer,
            "correct": judged.correct,
            "text_inclusion": judged.text_inclusion,
            "ss_rel": None,
            "text_encoder": self.encoder.name if open_world and self.encoder else None,
            "named": list(judged.named),
            "reason": judged.reason,
        }
        pending = None
        if open_world:
            pending = (judged.similarity_text, item.answer, super_category(item.dataset))
        return row, pending

    # -- generative models ------------------------------------------------------------------------

    async def run_generative(self, teacher: Teacher) -> RunFigures:
        """Ask ``teacher`` every question the store has no prediction for."""
        groups = self._pending()
        self._start(sum(map(len, groups.values())))
        try:
            stored = self.store.answered(list(groups))
            self.figures.answers_reused = len(stored)
            for key, text in stored.items():
                self._record(groups[key], text, None)
            todo = [groups[key][0].request for key in groups if key not in stored]
            requests = {r.request_id: r for r in todo if r is not None}
            async for response in teacher.complete(requests.values()):
                self._answer(groups[response.request_id], requests[response.request_id], response)
        finally:
            self._stop()
        return self.figures

    def _answer(
        self, questions: list[Question], request: TeacherRequest, response: TeacherResponse
    ) -> None:
        figures = self.figures
        figures.requests_sent += 1
        figures.request_errors += not response.ok
        figures.retried_requests += bool(response.retry_log)
        figures.prompt_tokens += response.prompt_tokens or 0
        figures.completion_tokens += response.completion_tokens or 0
        row = request_row(
            request,
            response,
            run_id=self.run_id,
            sample_id=questions[0].item.image_id,
            purpose="eval",
            model=self.spec.name,
            prompt_hash=template_digest(self.style, questions[0].mode),
        )
        self._record(questions, response.text if response.ok else None, row)

    # -- zero-shot CLIP/SigLIP --------------------------------------------------------------------

    def run_zero_shot(self, model: ZeroShotModel, *, batch_size: int) -> RunFigures:
        """Let ``model`` choose among the options of every question without a prediction."""
        groups = self._pending()
        self._start(sum(map(len, groups.values())))
        try:
            by_dataset: dict[str, list[str]] = {}
            for key, questions in groups.items():
                by_dataset.setdefault(questions[0].item.dataset, []).append(key)
            for dataset, keys in by_dataset.items():
                word = super_category(dataset)
                for start in range(0, len(keys), batch_size):
                    batch = keys[start : start + batch_size]
                    self._zero_shot_batch(model, [groups[k] for k in batch], word)
        finally:
            self._stop()
        return self.figures

    def _zero_shot_batch(
        self, model: ZeroShotModel, batch: list[list[Question]], word: str
    ) -> None:
        loaded = []
        for questions in batch:
            try:
                loaded.append((questions, questions[0].item.image.load()))
            except Exception as err:  # an unreadable image fails its questions, not the run
                self.figures.request_errors += 1
                self.console.print(f"{questions[0].item.image_id}: {err}", highlight=False)
        if not loaded:
            return
        choices = model.choose(
            [image for _, image in loaded], [qs[0].options for qs, _ in loaded], word
        )
        for (questions, _), (chosen, raw) in zip(loaded, choices, strict=True):
            self.figures.requests_sent += 1
            self._record(questions, chosen, None, raw_output=raw)


# --- entry point ---------------------------------------------------------------------------------


def run_eval(
    store: Store,
    options: EvalOptions,
    *,
    default_root: Path | None = None,
    console: Console | None = None,
) -> EvalResults:
    """Evaluate ``options.model`` as ``options`` say, record everything in ``store`` (an
    ``eval`` run), and return the results read back from the store.

    ``default_root`` is where a dataset is looked for without ``--data-root`` (the CLI passes
    ``COTFORGE_HOME/datasets``). The run is marked ok, interrupted (Ctrl-C) or failed.
    """
    console = console or Console(stderr=True)
    spec = parse_model(options.model, api_key=os.environ.get(options.api_key_env))
    style: PromptStyle = "zero-shot" if spec.kind == "clip" else options.prompt
    modes, notes = _modes(options.mode, spec)
    published = paper_row(spec.name, override=options.paper_model)
    encoder = load_text_encoder(options.text_encoder) if "open" in modes else None
    roots = locate(options, default_root=default_root)
    # The model next: a server that is down or a model that does not load fails in seconds,
    # before the test images of six datasets are listed and hashed.
    backend = _ready(spec, options)
    if encoder is not None:
        encoder.load()  # type: ignore[attr-defined]
    items = load_items(options, roots)
    questions = plan_questions(
        items,
        model=spec.name,
        style=style,
        modes=modes,
        options=options,
        text_encoder=encoder.name if encoder is not None else None,
    )
    config = options.model_dump(mode="json") | {
        "model_name": spec.name,
        "questions": len(questions),
    }
    run_id = store.start_run("eval", config, {"cotforge": version("cotforge")})
    evaluation = Evaluation(
        questions,
        store=store,
        spec=spec,
        style=style,
        rows=options.rows,
        run_id=run_id,
        encoder=encoder,
        console=console,
    )
    with store.finishing(run_id):
        figures = _run(evaluation, backend, options)
    frame = store.predictions([q.prediction_id for q in questions])
    expected = Counter((q.mode, q.order) for q in questions)
    return aggregate(
        frame,
        figures=figures,
        modes=modes,
        datasets=list(dict.fromkeys(item.dataset for item in items)),
        trials=options.trials,
        paper=published,
        notes=notes,
        expected=dict(expected),
    )


def _ready(spec: ModelSpec, options: EvalOptions) -> Teacher | ZeroShotModel:
    """The model, loaded (in process) or checked (a server), or a one-line error."""
    if spec.kind == "clip":
        from cotforge.eval.zero_shot import ZeroShotModel

        model = ZeroShotModel(spec.target)
        model.load()
        return model
    teacher = build_generator(spec, options)

    async def check() -> None:
        try:
            await check_generator(teacher, spec)
        except BaseException:
            await teacher.aclose()
            raise

    asyncio.run(check())
    return teacher


def _run(
    evaluation: Evaluation, backend: Teacher | ZeroShotModel, options: EvalOptions
) -> RunFigures:
    from cotforge.eval.zero_shot import ZeroShotModel

    if isinstance(backend, ZeroShotModel):
        try:
            return evaluation.run_zero_shot(backend, batch_size=options.batch_size)
        finally:
            backend.close()

    async def go() -> RunFigures:
        try:
            return await evaluation.run_generative(backend)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def _modes(mode: str, spec: ModelSpec) -> tuple[list[Mode], list[str]]:
    modes: list[Mode] = ["closed", "open"] if mode == "both" else [mode]  # type: ignore[list-item]
    if spec.kind != "clip" or "open" not in modes:
        return modes, []
    if mode == "open":
        msg = (
            f"{spec.name} is a zero-shot CLIP/SigLIP model: it can only choose among options; "
            "evaluate it with --mode closed"
        )
        raise ConfigError(msg)
    return ["closed"], [f"{spec.name} chooses among options: the open world was skipped"]


def locate(options: EvalOptions, *, default_root: Path | None) -> dict[str, Path | None]:
    """Each dataset of the evaluation with the folder of its official layout (None for rows
    from an export): the cheap checks (names, folders, layouts), made before anything else."""
    names = list(iter_datasets(options.datasets))
    if not names:
        msg = "--dataset names no dataset; give one or more names, or all"
        raise ConfigError(msg)
    if options.rows == "export":
        if options.export is None:
            msg = "--source export needs --export DIR, the folder `cotforge export` wrote"
            raise ConfigError(msg)
        return dict.fromkeys(names)
    if default_root is None:
        default_root = GlobalOptions().home.expanduser() / "datasets"
    return {
        name: find_root(name, data_root=options.data_root, default_root=default_root / name)
        for name in names
    }


def load_items(options: EvalOptions, roots: dict[str, Path | None]) -> list[EvalItem]:
    """The evaluation's items, dataset by dataset (as :func:`locate` found them), from the
    source ``options`` name; every test image is listed, checked and hashed here."""
    from cotforge.data.registry import get_source

    if options.rows == "export":
        assert options.export is not None
        items = export_items(options.export, list(roots))
    else:
        items = []
        for name, root in roots.items():
            assert root is not None
            items.extend(
                source_items(
                    get_source(name, root),
                    rows=options.rows,
                    seed=options.seed,
                    manifests=options.manifests,
                    per_class=options.per_class,
                    split_mode=options.split_mode,
                    unseen_fraction=options.unseen_fraction,
                    split_seed=options.split_seed,
                )
            )
    _check_answers(items)
    return items


def _check_answers(items: Iterable[EvalItem]) -> None:
    for item in items:
        if item.answer not in ClassMatcher.for_dataset(item.dataset).annotations.by_name:
            msg = (
                f"{item.image_id}: the answer {item.answer!r} is not a class name of "
                f"{item.dataset}; re-export the eval config with this version of cotforge"
            )
            raise ConfigError(msg)
