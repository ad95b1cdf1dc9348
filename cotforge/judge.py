"""The ``judge`` check: a second teacher call that grades whether a comparison is faithful to the
image.

The other checks read text only; none can tell that a comparison describes winglets the aircraft
does not have. The judge shows the teacher the image and the comparison and asks for a one-line
verdict. It goes through the same :class:`~cotforge.teachers.base.Teacher` and store as
generation (purpose ``judge``), so its calls are resumable, counted and priced like any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from cotforge.calls import request_row
from cotforge.data.annotations import load_annotations
from cotforge.data.base import ImageRecord
from cotforge.data.registry import get_source
from cotforge.prompts import Prompt, load_prompt
from cotforge.teachers.base import ImageInput, Teacher, TeacherRequest, TeacherResponse
from cotforge.verify import CheckResult

if TYPE_CHECKING:
    from rich.console import Console

    from cotforge.store import Store

JUDGE_CHECK = "judge"

_VERDICT = re.compile(r"^\W{0,8}verdict\W{0,8}[:=-]\s*\**\s*(unfaithful|faithful)\b", re.I | re.M)
_REASON = re.compile(r"^\W{0,8}reason\W{0,8}[:=-]\s*(.+)$", re.I | re.M)
_MAX_REASON = 300


def judge_request(
    teacher: str,
    prompt: Prompt,
    *,
    super_category: str,
    class_name: str,
    comparison: str,
    image: ImageInput,
    max_tokens: int = 256,
) -> TeacherRequest:
    """The judge call for one comparison; greedy, so asking again gives the same verdict and
    the id (hash of teacher, prompt, text and image) finds it in the store on a rerun."""
    text = prompt.render(
        super_category=super_category, class_name=class_name, comparison=comparison
    )
    params = {"max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    payload = json.dumps(
        [teacher, prompt.name, prompt.digest, text, image.digest, params], ensure_ascii=False
    )
    rid = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
    return TeacherRequest(request_id=rid, prompt=text, images=(image,), **params)


def read_judgement(text: str | None) -> CheckResult:
    """The judge's answer as a check result; an answer without a verdict line fails, since an
    unreadable judgement is no evidence of faithfulness.

    >>> read_judgement("verdict: faithful\\nreason: the twin tail is visible").passed
    True
    >>> r = read_judgement("Verdict: **unfaithful**\\nReason: no winglets in the image")
    >>> r.passed, r.reason
    (False, 'judged unfaithful: no winglets in the image')
    >>> read_judgement("It looks fine to me.").reason
    "the judge's answer has no 'verdict: faithful|unfaithful' line: 'It looks fine to me.'"
    """
    answer = text or ""
    found = _VERDICT.search(answer)
    if found is None:
        shown = " ".join(answer.split())[:_MAX_REASON]
        return CheckResult(
            JUDGE_CHECK,
            False,
            f"the judge's answer has no 'verdict: faithful|unfaithful' line: {shown!r}",
        )
    verdict = found.group(1).lower()
    reason = _REASON.search(answer)
    why = " ".join(reason.group(1).split())[:_MAX_REASON] if reason else "no reason given"
    return CheckResult(JUDGE_CHECK, verdict == "faithful", f"judged {verdict}: {why}")


def judge_failed(error: str) -> CheckResult:
    """The result when the judge call itself failed (after the client's retries)."""
    return CheckResult(JUDGE_CHECK, False, f"the judge call failed: {error}")


def needs_judge(required: Sequence[str]) -> bool:
    """Whether ``judge`` is among the required checks."""
    return JUDGE_CHECK in required


@dataclass
class JudgeSummary:
    """What one :func:`judge_store` call did."""

    run_id: str | None
    judged: int = 0
    faithful: int = 0
    failed_calls: int = 0
    missing_images: int = 0

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order."""
        return [
            ("rationales judged", self.judged),
            ("judged faithful", self.faithful),
            ("judge calls that failed", self.failed_calls),
            ("images not found (judged failed)", self.missing_images),
        ]


def judge_store(
    store: Store,
    teacher: Teacher,
    *,
    required: Sequence[str],
    roots: Mapping[str, Path],
    prompts_dir: Path | None = None,
    console: Console | None = None,
) -> JudgeSummary:
    """Judge the store's rationales that passed every other required check and have no judge
    verdict yet, and record a ``judge`` verdict for each. Resumable like every verb: each
    verdict is written as its call returns, judged rationales are not judged again, and an
    answered call is reused rather than sent again.

    ``roots`` maps a dataset to the folder its image keys are relative to (its plan's root or
    an import's image root); an image that is not there gets a failed verdict saying so.
    """
    todo = store.rationales_to_judge(required=required)
    summary = JudgeSummary(run_id=None)
    if todo.height == 0:
        return summary
    config = {"teacher": teacher.name, "required": list(required), "check": JUDGE_CHECK}
    run_id = store.start_run("verify", config, {"cotforge": version("cotforge")})
    summary.run_id = run_id
    run = _JudgeRun(store, teacher.name, load_prompt("judge", prompts_dir), run_id, required)
    pending: dict[str, tuple[str, str | None, TeacherRequest]] = {}
    for row in todo.iter_rows(named=True):
        image = _stored_image(row, roots)
        if isinstance(image, str):
            summary.missing_images += 1
            run.record(summary, (row["rationale_id"], row["sample_id"], None), judge_failed(image))
            continue
        notes = load_annotations(row["dataset"])
        request = judge_request(
            teacher.name,
            run.prompt,
            super_category=notes.super_category,
            class_name=notes.classes[row["class_index"]].name,
            comparison=row["comparison"] or "",
            image=image,
        )
        pending[request.request_id] = (row["rationale_id"], row["sample_id"], request)
    answered = store.answered(list(pending))

    async def ask() -> None:
        try:
            await teacher.check()
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("judging comparisons", total=len(pending))
                for rid, text in answered.items():
                    run.record(summary, pending[rid], read_judgement(text))
                    progress.advance(task)
                left = [request for rid, (_, _, request) in pending.items() if rid not in answered]
                async for response in teacher.complete(left):
                    result = (
                        read_judgement(response.text)
                        if response.ok
                        else judge_failed(str(response.error))
                    )
                    summary.failed_calls += not response.ok
                    run.record(summary, pending[response.request_id], result, response)
                    progress.advance(task)
        finally:
            await teacher.aclose()

    with store.finishing(run_id):
        asyncio.run(ask())
    return summary


def _stored_image(row: Mapping[str, Any], roots: Mapping[str, Path]) -> ImageInput | str:
    """The image of a stored rationale, or why it cannot be shown."""
    root = roots.get(row["dataset"])
    if root is None:
        return f"no image folder known for {row['dataset']}; pass --root"
    source = get_source(row["dataset"], root)
    record = ImageRecord(row["dataset"], row["split"], row["key"], root / row["key"], 0)
    if not record.path.is_file():
        return f"image {record.path} not found; pass --root with the dataset's folder"
    digest = hashlib.sha256(row["dataset"].encode() + b"\0" + record.path.read_bytes())
    return ImageInput(digest=digest.hexdigest()[:32], load=partial(source.open_image, record))


@dataclass(frozen=True)
class _JudgeRun:
    """What every judgement of one run is written with."""

    store: Store
    model: str
    prompt: Prompt
    run_id: str
    required: Sequence[str]

    def record(
        self,
        summary: JudgeSummary,
        entry: tuple[str, str | None, TeacherRequest | None],
        result: CheckResult,
        response: TeacherResponse | None = None,
    ) -> None:
        """Write one judgement, with its call when it was made now, in one transaction."""
        rationale_id, sample_id, request = entry
        summary.judged += 1
        summary.faithful += result.passed
        verdict = {
            "rationale_id": rationale_id,
            "check_name": result.name,
            "passed": result.passed,
            "required": JUDGE_CHECK in self.required,
            "reason": result.reason,
            "run_id": self.run_id,
        }
        with self.store.transaction():
            if response is not None and request is not None:
                row = request_row(
                    request,
                    response,
                    run_id=self.run_id,
                    sample_id=sample_id,
                    purpose="judge",
                    model=self.model,
                    prompt_hash=self.prompt.digest,
                )
                self.store.add_request_results([row], [])
            self.store.upsert_verdicts([verdict])
