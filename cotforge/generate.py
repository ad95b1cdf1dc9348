"""``cotforge generate``: label-conditioned rationales from a teacher, resampled until verified.

For the planned anchors of a dataset, in three phases over one teacher:

1. questions: one request for about ten paraphrased student questions (the seed questions of the
   released records stand in when the answer has too few);
2. concepts: per anchor image, captions stressing different aspects, split into visual phrases,
   pruned of those the class's confusable neighbours show too (:mod:`cotforge.concepts`);
3. rationales: the label-conditioned four-stage prompt, every answer parsed and verified with
   :mod:`cotforge.verify`; an anchor whose answer fails a required check is asked again (a new
   attempt, a new request id) until one passes or ``max_attempts`` are spent. Attempts go out in
   waves, so each wave keeps the teacher's whole concurrency busy.

Every request id hashes the teacher, the prompt template's digest, the rendered prompt, the image
digests, the sampling parameters and the attempt. Each answer is written to the store as soon as
it arrives, with its rationale and verdicts in the same transaction (a writer thread batches
what arrives together), so a rerun after a crash or kill -9 reuses every answered request and
sends only the rest; anchors that already have an accepted rationale from the same teacher are
left alone even when the prompts changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cotforge import concepts as concept_lib
from cotforge.batch_writer import BatchWriter
from cotforge.calls import request_row
from cotforge.data.base import ImageRecord
from cotforge.data.confusion import get_strategy
from cotforge.errors import ConfigError
from cotforge.judge import JUDGE_CHECK, judge_failed, judge_request, read_judgement
from cotforge.prompts import Prompt, load_prompt
from cotforge.questions import question_for, seed_questions, usable_questions
from cotforge.rationale import parse
from cotforge.scoring import ClassMatcher
from cotforge.teachers.base import ImageInput, Teacher, TeacherRequest, TeacherResponse
from cotforge.verify import CheckResult, verify_rationale

if TYPE_CHECKING:
    from cotforge.config import GenerateOptions, VerifyOptions
    from cotforge.data.annotations import Annotations, ClassInfo
    from cotforge.data.base import Source
    from cotforge.plan import PlanSummary
    from cotforge.store import Store


# --- what a run works on -------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One planned anchor with what its prompts need."""

    sample_id: str
    info: ClassInfo
    class_split: str
    image: ImageInput
    negative_class_index: int | None


def select_samples(
    planned: Iterable[Mapping[str, Any]],
    source: Source,
    *,
    split: str,
    classes: Sequence[str],
    limit: int | None,
) -> list[Sample]:
    """The planned anchors this run works on: of ``split``, of ``classes`` (names or labels;
    all when empty), the first ``limit`` in sample id order."""
    notes = source.annotations
    wanted: set[int] | None = None
    if classes:
        wanted = {_find_class(name, source).index for name in classes}
    chosen: list[Sample] = []
    for row in planned:
        if split != "all" and row["class_split"] != split:
            continue
        if wanted is not None and row["class_index"] not in wanted:
            continue
        record = _record(source, row)
        chosen.append(
            Sample(
                sample_id=row["sample_id"],
                info=notes.classes[row["class_index"]],
                class_split=row["class_split"],
                image=ImageInput(
                    digest=_file_digest(source.name, record.path),
                    load=_loader(source, record),
                ),
                negative_class_index=row["negative_class_index"],
            )
        )
        if limit is not None and len(chosen) == limit:
            break
    return chosen


def _loader(source: Source, record: ImageRecord) -> Callable[[], Image.Image]:
    """How the teacher gets an image: as the dataset means it, or, when the dataset changes no
    pixel, opened but not decoded, so the client can send the file's bytes as they are."""
    if source.edits_pixels:
        return partial(source.open_image, record)
    return partial(Image.open, record.path)


def _find_class(name: str, source: Source) -> ClassInfo:
    notes = source.annotations
    found = notes.by_name.get(name) or notes.by_label.get(name)
    if found is None:
        lowered = {info.name.lower(): info for info in notes.classes}
        found = lowered.get(name.lower())
    if found is None:
        close = [info.name for info in notes.classes if name.lower() in info.name.lower()][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `cotforge datasets show`"
        msg = f"--classes: {name!r} is not a class of {source.name}{hint}"
        raise ConfigError(msg)
    return found


def _record(source: Source, row: Mapping[str, Any]) -> ImageRecord:
    return ImageRecord(
        source.name, row["split"], row["key"], source.root / row["key"], row["class_index"]
    )


def _file_digest(dataset: str, path: Any) -> str:
    """What identifies an image's content (with its dataset, which decides its preprocessing)."""
    digest = hashlib.sha256(dataset.encode("utf-8") + b"\0")
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        digest.update(f"unreadable: {err}".encode())
    return digest.hexdigest()[:32]


def ensure_plan(
    source: Source, store: Store, options: GenerateOptions, *, console: Console | None = None
) -> PlanSummary | None:
    """Plan the dataset unless its latest plan was made with the same options; returns the new
    plan's summary, or None when the stored plan is used as it is.

    Replanning with equal options would give the same anchors, but reading every image again
    costs minutes on a large dataset. Generating for unseen classes needs unseen anchors: with
    ``split`` unseen or all and no ``unseen_shots``, as many as ``shots`` are planned.
    """
    from cotforge.config import PlanOptions
    from cotforge.plan import make_plan

    wanted = PlanOptions.model_validate(
        {name: getattr(options, name) for name in PlanOptions.model_fields}
    )
    if options.split != "seen" and not wanted.unseen_shots:
        wanted.unseen_shots = options.shots
    latest = store.latest_plan(source.name)
    if latest is not None:
        same = wanted.model_dump(mode="json", exclude={"root", "download", "unseen_shots"})
        enough_unseen = latest.get("unseen_shots", 0) >= wanted.unseen_shots
        if enough_unseen and all(latest.get(key) == value for key, value in same.items()):
            return None
    return make_plan(source, store, wanted, console=console)


def request_id(
    teacher: str,
    prompt: Prompt,
    text: str,
    images: Sequence[str],
    params: Mapping[str, Any],
    attempt: int,
) -> str:
    """The id of one teacher call: equal inputs, equal id, so a rerun finds its answer.

    >>> from cotforge.prompts import load_prompt
    >>> p = load_prompt("questions")
    >>> a = request_id("openai:m", p, "hi", ["d1"], {"temperature": 0.7}, 0)
    >>> a == request_id("openai:m", p, "hi", ["d1"], {"temperature": 0.7}, 0), len(a)
    (True, 32)
    >>> a == request_id("openai:m", p, "hi", ["d1"], {"temperature": 0.7}, 1)
    False
    """
    payload = json.dumps(
        [teacher, prompt.name, prompt.digest, text, list(images), dict(params), attempt],
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


# --- writing as answers arrive ---------------------------------------------------------------


@dataclass
class _Write:
    requests: list[dict[str, Any]]
    rationales: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)


def _write_answers(store: Store, writes: list[_Write]) -> None:
    """Finished requests with their rationales and verdicts, in one transaction."""
    with store.transaction():
        store.add_request_results(
            [row for w in writes for row in w.requests],
            [row for w in writes for row in w.rationales],
        )
        verdicts = [row for w in writes for row in w.verdicts]
        if verdicts:
            store.upsert_verdicts(verdicts)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class GenerateSummary:
    """What one run did, for the closing table and for callers."""

    run_id: str
    teacher: str
    samples: int = 0
    verified_before: int = 0
    verified: int = 0
    failed: int = 0
    requests_sent: int = 0
    requests_reused: int = 0
    request_errors: int = 0
    retried_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order."""
        rows: list[tuple[str, object]] = [
            ("teacher", self.teacher),
            ("samples", self.samples),
            ("verified earlier (left alone)", self.verified_before),
            ("verified in this run", self.verified),
            ("failed after every attempt", self.failed),
            ("requests sent", self.requests_sent),
            ("answers reused from the store", self.requests_reused),
            ("requests that failed for good", self.request_errors),
            ("requests retried after a fault", self.retried_requests),
            ("prompt tokens", self.prompt_tokens),
            ("completion tokens", self.completion_tokens),
            ("cost (USD)", f"{self.cost_usd:.4f}"),
            ("wall time (s)", f"{self.wall_s:.1f}"),
        ]
        rows.extend(
            (f"attempts failing {reason}", count) for reason, count in self.failures.most_common()
        )
        return rows


@dataclass
class _SampleState:
    sample: Sample
    question: str = ""
    concepts: list[str] = field(default_factory=list)
    attempts: int = 0
    done: bool = False


class Generation:
    """One generation run over ``samples`` with ``teacher``, writing to ``store``.

    Build it, then ``await run()``; the summary is filled in as it goes, so an interrupted run
    still reports what it did.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        source: Source,
        store: Store,
        teacher: Teacher,
        options: GenerateOptions,
        verify_options: VerifyOptions,
        run_id: str,
        console: Console | None = None,
    ) -> None:
        self.source = source
        self.store = store
        self.teacher = teacher
        self.options = options
        self.verify_options = verify_options
        self.console = console or Console(stderr=True)
        self.matcher = ClassMatcher.for_dataset(source.name)
        self.states = [_SampleState(sample) for sample in samples]
        self.summary = GenerateSummary(run_id=run_id, teacher=teacher.name, samples=len(samples))
        self.prompts = {
            name: load_prompt(name, options.prompts_dir)
            for name in ("questions", "concepts", "rationale", "judge")
        }
        self._recorder: BatchWriter[_Write] | None = None
        self._ranking_cache: dict[int, list[int]] | None = None
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = time.perf_counter()

    # -- phases ----------------------------------------------------------------------------

    async def run(self) -> GenerateSummary:
        """Questions, concepts, then waves of rationale attempts; returns the summary."""
        required = self.verify_options.required
        earlier = self.store.accepted_samples(model=self.teacher.name, required=required)
        for state in self.states:
            if state.sample.sample_id in earlier:
                state.done = True
                self.summary.verified_before += 1
        self._recorder = BatchWriter(
            partial(_write_answers, self.store), what="writing to the store"
        )
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"),
        )
        try:
            with Progress(*columns, console=self.console, transient=False) as progress:
                self._progress = progress
                open_states = [s for s in self.states if not s.done]
                questions = await self._questions(open_states)
                for state in open_states:
                    state.question = question_for(state.sample.sample_id, questions)
                if self.options.concepts:
                    await self._concepts(open_states)
                await self._rationales(open_states)
        finally:
            self.summary.wall_s = time.perf_counter() - self._started
            self._recorder.close()
        return self.summary

    async def _questions(self, open_states: Sequence[_SampleState]) -> list[str]:
        notes = self.source.annotations
        seeds = seed_questions(notes.super_category)
        if not open_states:
            return list(seeds)
        prompt = self.prompts["questions"]
        text = prompt.render(
            count=self.options.questions,
            super_category=notes.super_category,
            level_hint=_level_hint(notes.hierarchy_levels, notes.super_category),
            examples=seeds,
        )
        request = self._request(prompt, text, images=(), attempt=0, temperature=0.9)
        self._begin("questions", 1)
        answers = await self._ask([request], purpose="questions", sample_ids=[None])
        names = [info.name for info in notes.classes]
        return usable_questions(
            answers.get(request.request_id), super_category=notes.super_category, class_names=names
        )

    async def _concepts(self, open_states: Sequence[_SampleState]) -> None:
        notes = self.source.annotations
        prompt = self.prompts["concepts"]
        text = prompt.render(super_category=notes.super_category, aspects=concept_lib.ASPECTS)
        requests = [
            self._request(prompt, text, images=(s.sample.image,), attempt=0, temperature=0.3)
            for s in open_states
        ]
        self._begin("concepts", len(requests))
        answers = await self._ask(
            requests, purpose="concepts", sample_ids=[s.sample.sample_id for s in open_states]
        )
        parsed = {
            s.sample.sample_id: concept_lib.parse_captions(answers.get(r.request_id))
            for s, r in zip(open_states, requests, strict=True)
        }
        by_class: dict[int, list[list[concept_lib.Concept]]] = {}
        for state in open_states:
            by_class.setdefault(state.sample.info.index, []).append(parsed[state.sample.sample_id])
        ranking = self._ranking()
        for state in open_states:
            neighbours = concept_lib.neighbour_concepts(
                state.sample.info.index,
                ranking=ranking,
                concepts_by_class=by_class,
                neighbours=self.options.neighbours,
            )
            state.concepts = concept_lib.discriminative(parsed[state.sample.sample_id], neighbours)

    async def _rationales(self, open_states: Sequence[_SampleState]) -> None:
        prompt = self.prompts["rationale"]
        self._begin("rationales", len(self.states), completed=self.summary.verified_before)
        for attempt in range(self.options.max_attempts):
            wave = [s for s in open_states if not s.done and s.attempts == attempt]
            if not wave:
                break
            pending: dict[str, tuple[_SampleState, TeacherRequest]] = {}
            for state in wave:
                text = prompt.render(**self._rationale_variables(state))
                request = self._request(prompt, text, images=(state.sample.image,), attempt=attempt)
                pending[request.request_id] = (state, request)
            to_judge: list[tuple[_SampleState, str, str]] = []
            stored = self._stored_answers(list(pending))
            for rid, answer in stored.items():
                state, request = pending[rid]
                self._take(state, request, answer, response=None, to_judge=to_judge)
            to_send = [request for rid, (_, request) in pending.items() if rid not in stored]
            async for response in self._complete(to_send):
                state, request = pending[response.request_id]
                self._take(state, request, response.text, response=response, to_judge=to_judge)
            if to_judge:
                await self._judge(to_judge)

    # -- one rationale answer --------------------------------------------------------------

    def _take(
        self,
        state: _SampleState,
        request: TeacherRequest,
        text: str | None,
        *,
        response: TeacherResponse | None,
        to_judge: list[tuple[_SampleState, str, str]],
    ) -> None:
        """Verify one answer (fresh, or from the store when ``response`` is None) and record it
        with its verdicts; settle the sample, or queue it for the judge when that is on and
        every other required check passed."""
        attempt = state.attempts
        state.attempts += 1
        write = _Write(requests=[])
        passed = False
        if response is not None:
            row = self._request_row(request, state.sample.sample_id, "rationale", response, attempt)
            write.requests.append(row)
        if response is not None and not response.ok:
            self.summary.failures["teacher error"] += 1
        else:
            results = self._verify(state.sample, text or "")
            passed = self._text_checks_pass(results)
            if response is not None:  # a reused answer's rationale is in the store already
                write.rationales.append(_rationale_row(request.request_id, state.sample, text))
            write.verdicts.extend(self._verdict_rows(request.request_id, results))
            required = self.verify_options.required
            self.summary.failures.update(
                r.name for r in results if not r.passed and r.name in required
            )
        assert self._recorder is not None
        self._recorder.put(write)
        if passed and self.options.judge:
            to_judge.append((state, request.request_id, parse(text or "").comparison or ""))
        else:
            self._settle(state, passed=passed)

    def _text_checks_pass(self, results: Sequence[CheckResult]) -> bool:
        """Every required check but the judge ran and passed."""
        passed = {r.name for r in results if r.passed}
        return all(name in passed for name in self.verify_options.required if name != JUDGE_CHECK)

    async def _judge(self, to_judge: Sequence[tuple[_SampleState, str, str]]) -> None:
        """Ask the judge about each comparison, record its verdict, and settle the samples."""
        notes = self.source.annotations
        prompt = load_prompt("judge", self.options.prompts_dir)
        pending: dict[str, tuple[_SampleState, str, TeacherRequest]] = {}
        for state, rationale_id, comparison in to_judge:
            request = judge_request(
                self.teacher.name,
                prompt,
                super_category=notes.super_category,
                class_name=state.sample.info.name,
                comparison=comparison,
                image=state.sample.image,
            )
            pending[request.request_id] = (state, rationale_id, request)
        stored = self._stored_answers(list(pending))
        for rid, answer in stored.items():
            state, rationale_id, _ = pending[rid]
            self._settle_judged(state, rationale_id, read_judgement(answer), write=_Write([]))
        to_send = [request for rid, (_, _, request) in pending.items() if rid not in stored]
        async for response in self._complete(to_send):
            state, rationale_id, request = pending[response.request_id]
            row = self._request_row(request, state.sample.sample_id, "judge", response, 0)
            result = (
                read_judgement(response.text) if response.ok else judge_failed(str(response.error))
            )
            self._settle_judged(state, rationale_id, result, write=_Write([row]))

    def _settle_judged(
        self, state: _SampleState, rationale_id: str, result: CheckResult, *, write: _Write
    ) -> None:
        write.verdicts.extend(self._verdict_rows(rationale_id, [result]))
        assert self._recorder is not None
        self._recorder.put(write)
        required = JUDGE_CHECK in self.verify_options.required
        if required and not result.passed:
            self.summary.failures[JUDGE_CHECK] += 1
        self._settle(state, passed=result.passed or not required)

    def _settle(self, state: _SampleState, *, passed: bool) -> None:
        """Mark the sample verified, or failed once its attempts are spent."""
        if passed:
            state.done = True
            self.summary.verified += 1
            self._advance()
        elif state.attempts >= self.options.max_attempts:
            state.done = True
            self.summary.failed += 1
            self._advance()

    def _verify(self, sample: Sample, text: str) -> list[CheckResult]:
        try:
            return verify_rationale(
                parse(text), truth=sample.info, matcher=self.matcher, options=self.verify_options
            )
        except Exception as err:  # one unreadable answer must not stop the run
            reason = f"the checks could not read this answer ({type(err).__name__}: {err})"
            return [CheckResult(name, False, reason) for name in self.verify_options.required]

    def _verdict_rows(self, rid: str, results: Sequence[CheckResult]) -> list[dict[str, Any]]:
        required = set(self.verify_options.required)
        return [
            {
                "rationale_id": rid,
                "check_name": r.name,
                "passed": r.passed,
                "required": r.name in required,
                "reason": r.reason,
                "run_id": self.summary.run_id,
            }
            for r in results
        ]

    # -- requests --------------------------------------------------------------------------

    def _rationale_variables(self, state: _SampleState) -> dict[str, Any]:
        return rationale_variables(
            self.source.annotations,
            state.sample,
            question=state.question,
            concepts=state.concepts,
            ranking=self._ranking(),
        )

    def _ranking(self) -> dict[int, list[int]]:
        if self._ranking_cache is None:
            self._ranking_cache = class_ranking(s.sample for s in self.states)
        return self._ranking_cache

    def _request(
        self,
        prompt: Prompt,
        text: str,
        *,
        images: tuple[ImageInput, ...],
        attempt: int,
        temperature: float | None = None,
    ) -> TeacherRequest:
        o = self.options
        params = {
            "max_tokens": o.max_tokens,
            "temperature": o.temperature if temperature is None else temperature,
            "top_p": o.top_p,
            "seed": o.seed * 1000 + attempt,
        }
        rid = request_id(
            self.teacher.name, prompt, text, [i.digest for i in images], params, attempt
        )
        return TeacherRequest(request_id=rid, prompt=text, images=images, **params)

    def _stored_answers(self, request_ids: Sequence[str]) -> dict[str, str | None]:
        """Those of ``request_ids`` answered in an earlier run (or earlier in this one)."""
        assert self._recorder is not None
        self._recorder.flush()
        answers = self.store.answered(request_ids)
        self.summary.requests_reused += len(answers)
        return answers

    async def _ask(
        self,
        requests: Sequence[TeacherRequest],
        *,
        purpose: str,
        sample_ids: Sequence[str | None],
    ) -> dict[str, str | None]:
        """Answers to ``requests`` (from the store, else from the teacher), by request id;
        failed ones are absent."""
        of = {r.request_id: (r, sid) for r, sid in zip(requests, sample_ids, strict=True)}
        answers = self._stored_answers(list(of))
        self._advance(len(answers))
        todo = [r for r in requests if r.request_id not in answers]
        async for response in self._complete(todo):
            request, sample_id = of[response.request_id]
            row = self._request_row(request, sample_id, purpose, response, 0)
            assert self._recorder is not None
            self._recorder.put(_Write(requests=[row]))
            if response.ok:
                answers[response.request_id] = response.text
            self._advance()
        return answers

    async def _complete(self, requests: Sequence[TeacherRequest]) -> AsyncIterator[TeacherResponse]:
        if not requests:
            return
        async for response in self.teacher.complete(requests):
            self._count(response)
            yield response

    def _count(self, response: TeacherResponse) -> None:
        s = self.summary
        s.requests_sent += 1
        s.request_errors += not response.ok
        s.retried_requests += bool(response.retry_log)
        s.prompt_tokens += response.prompt_tokens or 0
        s.completion_tokens += response.completion_tokens or 0
        s.cost_usd += self._cost(response)

    def _cost(self, response: TeacherResponse) -> float:
        o = self.options
        return (
            (response.prompt_tokens or 0) * o.price_input_per_million
            + (response.completion_tokens or 0) * o.price_output_per_million
        ) / 1e6

    def _request_row(
        self,
        request: TeacherRequest,
        sample_id: str | None,
        purpose: str,
        response: TeacherResponse,
        attempt: int,
    ) -> dict[str, Any]:
        return request_row(
            request,
            response,
            run_id=self.summary.run_id,
            sample_id=sample_id,
            purpose=purpose,
            model=self.teacher.name,
            prompt_hash=self.prompts[purpose].digest,
            attempt=attempt,
            cost_usd=self._cost(response),
        )

    # -- progress --------------------------------------------------------------------------

    def _begin(self, phase: str, total: int, completed: int = 0) -> None:
        assert self._progress is not None
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(phase, total=total, completed=completed, figures="")

    def _advance(self, steps: int = 1) -> None:
        if self._progress is None or self._task is None:
            return
        s = self.summary
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        decided = s.verified + s.failed
        rate = f"{s.verified / decided:.0%}" if decided else "-"
        figures = (
            f"{s.requests_sent / elapsed:.1f} req/s  pass {rate}  "
            f"{s.prompt_tokens + s.completion_tokens:,} tok  ${s.cost_usd:.4f}"
        )
        self._progress.update(self._task, advance=steps, figures=figures)


def class_ranking(samples: Iterable[Sample]) -> dict[int, list[int]]:
    """The planned classes' confusable neighbours by the class hierarchy, most confusable first
    (the ranking that prunes shared concepts and names the confusable classes)."""
    planned = {sample.info.index: sample.info for sample in samples}
    return get_strategy("hierarchy").rank(list(planned.values()))


def rationale_variables(
    notes: Annotations,
    sample: Sample,
    *,
    question: str,
    concepts: Sequence[str],
    ranking: Mapping[int, Sequence[int]],
) -> dict[str, Any]:
    """What the rationale prompt is rendered with for one sample."""
    info = sample.info
    hierarchy = ", ".join(
        f"{level} {node}"
        for level, node in zip(notes.hierarchy_levels, info.hierarchy, strict=False)
        if node and node != info.name
    )
    return {
        "super_category": notes.super_category,
        "question": question,
        "class_name": info.name,
        "hierarchy": hierarchy,
        "concepts": list(concepts),
        "confusable": confusable_names(notes, sample, ranking),
    }


def confusable_names(
    notes: Annotations, sample: Sample, ranking: Mapping[int, Sequence[int]], *, limit: int = 3
) -> list[str]:
    """A few classes the anchor is easily confused with: its triplet's negative first, then its
    nearest classes in the ranking (candidates the teacher may compare)."""
    indexes: list[int] = []
    if sample.negative_class_index is not None:
        indexes.append(sample.negative_class_index)
    for other in ranking.get(sample.info.index, ())[:limit]:
        if other not in indexes:
            indexes.append(other)
    return [notes.classes[i].name for i in indexes[:limit]]


def preview(
    samples: Sequence[Sample],
    *,
    source: Source,
    spec: str,
    options: GenerateOptions,
    console: Console,
) -> None:
    """What ``--dry-run`` prints: the samples a run would work on and its first prompts, as the
    teacher would read them (the concepts come from the teacher, so none are shown)."""
    from rich.rule import Rule

    from cotforge.report_tables import summary_table

    notes = source.annotations
    splits = Counter(sample.class_split for sample in samples)
    rows: list[tuple[str, object]] = [
        ("teacher", spec),
        ("samples", len(samples)),
        *((f"{split} samples", count) for split, count in sorted(splits.items())),
        ("classes", len({sample.info.index for sample in samples})),
        ("rationale attempts per sample, at most", options.max_attempts),
        ("teacher requests, at most", 1 + len(samples) * (options.max_attempts + options.concepts)),
    ]
    console.print(summary_table(f"generate --dry-run ({source.name})", rows))
    first = samples[0]
    question = question_for(first.sample_id, seed_questions(notes.super_category))
    prompts_dir = options.prompts_dir
    if options.concepts:
        concepts_text = load_prompt("concepts", prompts_dir).render(
            super_category=notes.super_category, aspects=concept_lib.ASPECTS
        )
        console.print(Rule(f"concepts prompt, {first.sample_id}"))
        console.print(concepts_text, markup=False, highlight=False, soft_wrap=True)
    variables = rationale_variables(
        notes, first, question=question, concepts=[], ranking=class_ranking(samples)
    )
    console.print(Rule(f"rationale prompt, {first.sample_id} (without concepts)"))
    console.print(
        load_prompt("rationale", prompts_dir).render(**variables),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _rationale_row(rid: str, sample: Sample, text: str | None) -> dict[str, Any]:
    """The rationale of one answer; its text stays on the request (stored once)."""
    parsed = parse(text or "")
    return {
        "rationale_id": rid,
        "request_id": rid,
        "sample_id": sample.sample_id,
        "raw_text": None,
        "analysis": parsed.analysis,
        "candidates": list(parsed.candidates),
        "comparison": parsed.comparison,
        "prediction": parsed.prediction,
    }


def _level_hint(levels: Sequence[str], super_category: str) -> str:
    """How fine the question asks, e.g. "the exact variant, not only its manufacturer"."""
    if levels:
        return f"the exact kind, not only its {' or '.join(levels)}"
    return f"the exact kind of {super_category}"


def run_generation(
    samples: Sequence[Sample],
    *,
    source: Source,
    store: Store,
    teacher: Teacher,
    options: GenerateOptions,
    verify_options: VerifyOptions,
    console: Console | None = None,
) -> GenerateSummary:
    """Run one generation over ``samples`` as a ``generate`` run of the store, and close the
    teacher. The run is marked ok, interrupted (Ctrl-C) or failed, and the summary holds what
    was done either way."""
    if JUDGE_CHECK in verify_options.required and not options.judge:
        msg = "the judge check is required ([verify] required) but not run; pass --judge"
        raise ConfigError(msg)
    config = options.model_dump(mode="json") | {"root": str(source.root)}
    run_id = store.start_run("generate", config, _versions())
    generation = Generation(
        samples,
        source=source,
        store=store,
        teacher=teacher,
        options=options,
        verify_options=verify_options,
        run_id=run_id,
        console=console,
    )

    async def go() -> GenerateSummary:
        try:
            await teacher.check()
            return await generation.run()
        finally:
            await teacher.aclose()

    with store.finishing(run_id):
        summary = asyncio.run(go())
    return summary


def _versions() -> dict[str, str]:
    return {"cotforge": version("cotforge")}
