"""What a reviewer sees in Argilla: the dataset's fields, questions, metadata and guidelines,
and one record per rationale, built from a row of :meth:`Store.review_candidates`.

A record shows the image, the student's question, the true class, the four stages as separate
markdown fields and the verification verdicts; its metadata (dataset, class, teacher, failed
checks, duplicate flag) is filterable in the UI. The record id is the store's rationale id, so
pushing again updates it. The ``edited_rationale`` question is pre-filled (a suggestion) with the
current text, so editing starts from it. The SDK is imported lazily (:func:`sdk`), with a
message naming the ``review`` extra when it is missing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cotforge.errors import MissingExtraError

if TYPE_CHECKING:
    import argilla as rg
    from PIL import Image

DECISIONS = {"accept": "accept", "reject": "reject", "needs_edit": "needs edit"}
"""The ``decision`` labels (value: what the UI shows)."""
STORE_DECISION = {"accept": "accept", "reject": "reject", "needs_edit": "edit"}
"""A ``decision`` label as the store's ``reviews.decision`` writes it."""
PROBLEMS = {
    "wrong_visual_facts": "wrong visual facts",
    "wrong_candidates": "wrong candidates",
    "weak_comparison": "weak comparison",
    "label_leakage": "label leakage",
    "language": "language",
    "other": "other",
}
STAGES = (
    ("analysis", "1. Analysis of visual features"),
    ("candidates", "2. Candidate sub-categories"),
    ("comparison", "3. Comparison of the candidates"),
    ("prediction", "4. Prediction"),
)
METADATA = ("dataset", "class", "teacher", "failed_checks", "duplicate")
RECORD_VERSION = 1
"""Part of every record's content hash: bump it when records are built differently, so the
next push updates every record."""

GUIDELINES = """\
# Reviewing a fine-grained recognition rationale

Each record is one chain of thought a teacher model wrote to answer the student's question about
the image. It will train a student model, so it must be right about *this* image and teach how
to tell the true class from its look-alikes. The true class is shown; the teacher was told it.

Read the four stages against the image:

1. **Analysis**: are the visual facts true of this image (colours, markings, shape, parts)?
   Invented or generic facts are *wrong visual facts*.
2. **Candidates**: are they plausible look-alikes of the same super-category, and is the true
   class among them? Otherwise *wrong candidates*.
3. **Comparison**: does it name the features that separate the candidates and check them in
   the image? Vague or circular reasoning is a *weak comparison*.
4. **Prediction**: does it follow from the comparison? Text that betrays it was told the answer
   ("as labeled", "the given class") is *label leakage*; mixed languages are *language*.

Then choose a **decision**:

- **accept**: correct and useful as it is;
- **needs edit**: fixable: correct the text in *edited rationale* (it starts as the current
  text; keep the `<analysis>`, `<options>`, `<comparison>` and `<prediction>` tags);
- **reject**: wrong about the image or not worth fixing.

Tick every *problem* you saw, whatever the decision, and use *notes* for anything else.
The verification field shows what cotforge's automatic checks found; they can be wrong too.
"""


def sdk() -> Any:
    """The ``argilla`` module, or :class:`MissingExtraError` naming the extra that brings it."""
    try:
        import argilla
    except ImportError as err:
        msg = "cotforge review needs the Argilla SDK: pip install 'cotforge[review]'"
        raise MissingExtraError(msg) from err
    return argilla


def review_settings(*, min_submitted: int = 1) -> rg.Settings:
    """The dataset settings every cotforge review dataset has."""
    rg = sdk()
    return rg.Settings(
        guidelines=GUIDELINES,
        fields=[
            rg.ImageField(name="image", title="Image"),
            rg.TextField(name="question", title="Student question", use_markdown=True),
            rg.TextField(name="true_class", title="True class", use_markdown=True),
            *(rg.TextField(name=name, title=title, use_markdown=True) for name, title in STAGES),
            rg.TextField(name="verification", title="Automatic checks", use_markdown=True),
        ],
        questions=[
            rg.LabelQuestion(name="decision", title="Decision", labels=DECISIONS),
            rg.MultiLabelQuestion(
                name="problems", title="Problems", labels=PROBLEMS, required=False
            ),
            rg.TextQuestion(
                name="edited_rationale",
                title="Edited rationale (for needs edit)",
                required=False,
            ),
            rg.TextQuestion(name="notes", title="Notes", required=False),
        ],
        metadata=[rg.TermsMetadataProperty(name=name) for name in METADATA],
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
    )


def settings_signature(settings: rg.Settings) -> dict[str, Any]:
    """What makes two review datasets compatible: field, question and metadata names and
    kinds, and the label values. Titles and guidelines may differ (a newer cotforge may word
    them better) without making an existing dataset unusable."""

    def labels(question: Any) -> list[str] | None:
        found = getattr(question, "labels", None)
        return sorted(found) if found else None

    return {
        "fields": sorted((f.name, type(f).__name__) for f in settings.fields),
        "questions": sorted(
            (q.name, type(q).__name__, json.dumps(labels(q))) for q in settings.questions
        ),
        "metadata": sorted(m.name for m in settings.metadata),
    }


def image_data_uri(image: Image.Image, *, side: int) -> str:
    """The image shrunk to at most ``side`` pixels on its longer side, as a JPEG data URI
    (what Argilla's ImageField takes without a file server)."""
    image = image.convert("RGB")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def content_hash(row: Mapping[str, Any], question: str, *, image_side: int) -> str:
    """A hash of everything a record is built from (not of the encoded image, so an
    unchanged record is recognised without decoding its image)."""
    parts = {
        key: row[key]
        for key in ("text", "dataset", "split", "key", "class_name", "model", "duplicate")
    }
    parts |= {
        "checks": [dict(check) for check in row["checks"]],
        "question": question,
        "image_side": image_side,
        "record_version": RECORD_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_record(row: Mapping[str, Any], *, question: str, image_uri: str) -> rg.Record:
    """The Argilla record of one review candidate (id = rationale id)."""
    rg = sdk()
    candidates = row["candidates"] or []
    stages = {
        "analysis": row["analysis"],
        "candidates": "\n".join(f"- {name}" for name in candidates) or None,
        "comparison": row["comparison"],
        "prediction": row["prediction"],
    }
    fields = {
        "image": image_uri,
        "question": question,
        "true_class": f"**{row['class_name']}** ({row['dataset']})",
        **{name: text or f"*(no {name} stage in the text)*" for name, text in stages.items()},
        "verification": verification_markdown(row),
    }
    return rg.Record(
        id=row["rationale_id"],
        fields=fields,
        metadata={
            "dataset": row["dataset"],
            "class": row["class_name"],
            "teacher": row["model"] or "none (imported or edited)",
            "failed_checks": list(row["failed"]) or ["none"],
            "duplicate": row["duplicate"],
        },
        suggestions=[rg.Suggestion(question_name="edited_rationale", value=row["text"] or "")],
    )


def verification_markdown(row: Mapping[str, Any]) -> str:
    """The verdicts as a markdown table, failures first, with the duplicate flag."""
    checks = sorted(row["checks"], key=lambda c: (c["passed"], c["check_name"]))
    lines = ["| check | result | reason |", "| --- | --- | --- |"]
    for check in checks:
        result = "pass" if check["passed"] else "**FAIL**"
        if not check["required"]:
            result += " (not required)"
        reason = (check["reason"] or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check['check_name']} | {result} | {reason} |")
    if not checks:
        lines.append("| (not verified) | | run `cotforge verify` |")
    duplicate = {
        "none": "not a duplicate",
        "kept": "kept as the best of its cluster",
        "flagged": "**flagged as a duplicate**",
    }[row["duplicate"]]
    return "\n".join(lines) + f"\n\nDedup: {duplicate}."
