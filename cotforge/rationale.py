"""The four-stage rationale: parse what a teacher wrote, render what the student learns.

A rationale has four stages (analysis of visual features, candidate sub-categories, comparison,
prediction). It arrives in one of two shapes:

- ``tags``: our teacher prompt asks for ``<analysis>``, ``<options>``, ``<comparison>`` and
  ``<prediction>``; models bend that format (missing closing tags, markdown fences, capitals),
  so :func:`parse_tagged` tolerates what it can and records the rest in ``problems``.
- ``headed``: the Fine-R1 training shape, a ``<think>`` with four headed sections whose headings
  vary in wording, then "The analysis of candidate subcategories: ..." and "The prediction is:
  ..." lines, ``</think>`` and ``<answer>``; :func:`parse_headed` reads the released data.

Parsing never raises on bad text: a malformed rationale is data for the verifier, and every
problem is a sentence in ``problems``. :func:`render_target` writes the student's target in the
Fine-R1 shape and refuses anything it could not read back identically. All regular expressions
here have bounded repetition or are scanned once, so megabyte inputs take linear time.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from cotforge.scoring import last_answer

SourceFormat = Literal["tags", "headed"]

STAGES = ("analysis", "options", "comparison", "prediction")
"""Stage tag names in their required order (``options`` holds the candidate list)."""

_STAGE_TAG = re.compile(
    r"<(\s{0,16}/)?\s{0,16}(analysis|options|comparison|prediction|think|answer)\s{0,16}>",
    re.IGNORECASE,
)
# Possessive (nothing given back would let a later part match), so a line that is no rule fails
# without backtracking.
_DECORATION = re.compile(r"^\s{0,64}+(?:(?:`{3,}+|~{3,}+)[\w+-]{0,32}+|[*_#>=-]{0,64}+)\s{0,64}+$")
_LEADING_MARKS = re.compile(r"^[*_]{2,4}(?=\s)")
_TRAILING_MARKS = re.compile(r"(?<=\s)[*_]{2,4}$")

# "The analysis of candidate sub-categories:" and "The prediction is:" written backwards, to be
# searched in the reversed body: there the pattern starts with ':', the one character of the
# phrases without case, so ``re`` jumps from colon to colon; a pattern starting with a letter
# under IGNORECASE is tried at every position (5 times slower even on lower-cased text).
_FORMULA_REVERSED = re.compile(
    r":\s{0,8}(?:(?P<candidates>seirogetac-?bus\s{1,8}etadidnac\s{1,8}fo\s{1,8}sisylana)"
    r"|si\s{1,8}noitciderp)\s{1,8}eht",
    re.IGNORECASE,
)
_ITEM = re.compile(r"^(?P<indent>[^\S\n]*)(?:(?P<bullet>[-*+•])|(?P<number>\(?\d{1,3}[.)]))\s+")
_CONJUNCTION = re.compile(r"^(?:and|or)\s+", re.IGNORECASE)
_DESCRIPTION = re.compile(r":\s|\s[-\u2013\u2014]\s|:$")
_HEADING_MARKS = re.compile(
    r"^[\s#>*_]*(?:(?:step|stage|part)\s*)?(?:\d{1,2}\s*[.):-]?\s*)?[*_]*", re.IGNORECASE
)
_HEADING_STAGES = (
    ("comparison", re.compile(r"\bcompar", re.IGNORECASE)),
    ("options", re.compile(r"\bcandidates?\b|\bsub-?categor|\boptions\b", re.IGNORECASE)),
    ("prediction", re.compile(r"\bprediction\b|\bconclusion\b", re.IGNORECASE)),
    ("analysis", re.compile(r"\banaly[sz]|\bvisual features?\b", re.IGNORECASE)),
)
_HEADING_WORD = re.compile("compar|candidat|categor|option|predict|conclusion|analy|visual")
"""A heading names its stage with one of these words (searched in the :func:`_fold`ed line); a
line without any is no heading. One search of the alternation is faster than a search per word."""
_MAX_HEADING = 80
_MAX_TAG_LOOKS = 32
_MAX_HEADING_LINE = _MAX_HEADING * 2
_SENTENCE_ENDS = ".!?,;"
_MAX_ITEMS = 32
_MAX_LIST_LINES = 1000

HEADINGS = {
    "analysis": "Analysis of Visual Features:",
    "options": "Candidate Subcategories:",
    "comparison": "Comparison Process:",
    "prediction": "Final Prediction:",
}
"""The headings :func:`render_target` writes, the most common wording in the released data."""


@dataclass(frozen=True)
class Rationale:
    """One rationale split into its four stages, plus what went wrong reading it.

    ``candidates`` are the names the ``options`` stage listed (free text, not necessarily classes
    of the dataset). ``prediction_line`` is what follows "The prediction is:" in the headed shape,
    a one-line statement of the prediction; the ``prediction`` stage is the prose around it.
    """

    analysis: str | None
    candidates: tuple[str, ...]
    comparison: str | None
    prediction: str | None
    answer: str | None
    raw_text: str
    source_format: SourceFormat
    problems: tuple[str, ...] = ()
    prediction_line: str | None = None


def parse(text: str) -> Rationale:
    """Parse either shape: tagged when the text has a stage tag, headed otherwise.

    >>> parse("<analysis>brown</analysis><options>A, B</options>").source_format
    'tags'
    >>> parse("<think> Analysis:\\nbrown\\n</think><answer>A</answer>").source_format
    'headed'
    """
    tags = _Tags(text)
    if tags.first(STAGES, closing=False):
        return _parse_tagged(text, tags)
    return _parse_headed(text, tags)


class _Tags:
    """The stage, ``<think>`` and ``<answer>`` tags of a text, found in one scan, since choosing
    the shape, cutting the ``<think>`` body and reading the answer would each scan it again.

    Tags cannot overlap (each is one '<' to the next '>'), so the tags of one name among them
    are exactly what a search for that name alone would find. Names are compared
    :func:`_fold`ed, the way the IGNORECASE patterns of one name compare them.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        # Each tag with its folded name, whether it closes and where it starts, for first().
        self.found = [
            (tag, _fold(tag[2]), tag[1] is not None, tag.start()) for tag in _find_tags(text)
        ]

    def first(
        self, names: Collection[str], *, closing: bool, start: int = 0
    ) -> re.Match[str] | None:
        """The first opening (or closing) tag of one of ``names`` that starts at ``start`` or
        after."""
        for tag, name, closes, at in self.found:
            if closes == closing and at >= start and name in names:
                return tag
        return None

    def answer(self) -> str | None:
        """:func:`cotforge.scoring.extract_answer` of the text."""
        return last_answer(self.text, [tag for tag, name, _, _ in self.found if name == "answer"])


def _find_tags(text: str) -> list[re.Match[str]]:
    """``list(_STAGE_TAG.finditer(text))``, faster: ``str.find`` jumps from one '<' to the next
    (memchr), where ``re`` looks at every character (7 instructions each). A text has a few
    tags; after ``_MAX_TAG_LOOKS`` '<' the regex scans the rest, which many '<' make cheaper."""
    found: list[re.Match[str]] = []
    at = text.find("<")
    for _ in range(_MAX_TAG_LOOKS):
        if at < 0:
            return found
        tag = _STAGE_TAG.match(text, at)
        if tag:
            found.append(tag)
        at = text.find("<", tag.end() if tag else at + 1)
    if at >= 0:
        found.extend(_STAGE_TAG.finditer(text, at))
    return found


# --- tagged ----------------------------------------------------------------------------------


def parse_tagged(text: str) -> Rationale:
    """Read ``<analysis>``, ``<options>``, ``<comparison>``, ``<prediction>`` from a teacher.

    A stage without a closing tag runs until the next stage tag, ``<answer>`` or ``</think>``;
    a repeated stage keeps its first occurrence; nesting, stray tags, missing or empty stages and
    stages out of order become ``problems``. Markdown fences or emphasis wrapped around a tag are
    dropped from the stage text; other HTML stays text. ``options`` holds one candidate per line
    (bullets and numbering stripped) or a comma-separated line.

    >>> r = parse_tagged(
    ...     "<analysis>Brown back.</analysis>\\n<options>\\n- Bank Swallow\\n- Tree Swallow\\n"
    ...     "</options><comparison>Bank is browner.<prediction>Bank Swallow</prediction>"
    ... )
    >>> r.candidates, r.comparison, r.problems
    (('Bank Swallow', 'Tree Swallow'), 'Bank is browner.', ('no closing tag for <comparison>',))
    """
    return _parse_tagged(text, _Tags(text))


def _parse_tagged(text: str, tags: _Tags) -> Rationale:
    reader = _TagReader(text)
    reader.read(tag for tag, _, _, _ in tags.found)
    stages = reader.stages
    problems = reader.problems
    if len(reader.order) > 1 and reader.order != sorted(reader.order, key=STAGES.index):
        problems.append(f"stages out of order: {', '.join(reader.order)}")
    texts: dict[str, str | None] = {}
    for stage in STAGES:
        if stage not in stages:
            problems.append(f"missing <{stage}>")
            texts[stage] = None
            continue
        texts[stage] = _clean_tagged(stages[stage])
        if not texts[stage]:
            problems.append(f"empty <{stage}>")
            texts[stage] = None
    candidates = tuple(_candidates_from_block(texts["options"] or ""))
    if texts["options"] and not candidates:
        problems.append("no candidates found in <options>")
    return Rationale(
        analysis=texts["analysis"],
        candidates=candidates,
        comparison=texts["comparison"],
        prediction=texts["prediction"],
        answer=tags.answer(),
        raw_text=text,
        source_format="tags",
        problems=tuple(dict.fromkeys(problems)),
    )


class _TagReader:
    """One pass over the tags of a text, keeping the first content of each stage."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.stages: dict[str, str] = {}
        self.order: list[str] = []
        self.problems: list[str] = []
        self._open: str | None = None
        self._start = 0
        self._interrupted: dict[str, str] = {}

    def read(self, tags: Iterable[re.Match[str]]) -> None:
        """Take in the ``_STAGE_TAG`` matches of the text, in order."""
        for tag in tags:
            closing, name = tag.group(1) is not None, tag.group(2).lower()
            if name in ("think", "answer"):
                if self._open and (closing if name == "think" else not closing):
                    self._leave(tag.start(), interrupted_by=f"<{name}>")
            elif closing:
                self._close(name, tag)
            else:
                self._enter(name, tag)
        if self._open:
            self._leave(len(self.text), interrupted_by="the end")
        self.problems.extend(f"no closing tag for <{name}>" for name in self._interrupted)

    def _enter(self, name: str, tag: re.Match[str]) -> None:
        if self._open == name:
            self.problems.append(f"nested tags: <{name}> inside <{name}>")
            return
        if self._open:
            self._leave(tag.start(), interrupted_by=f"<{name}>")
        if name in self.order:
            self.problems.append(f"repeated <{name}>; kept the first")
        else:
            self.order.append(name)
        self._open, self._start = name, tag.end()

    def _close(self, name: str, tag: re.Match[str]) -> None:
        if self._open == name:
            self.stages.setdefault(name, self.text[self._start : tag.start()])
            self._open = None
        elif name in self._interrupted:
            inner = self._interrupted.pop(name)
            self.problems.append(f"nested tags: {inner} inside <{name}>")
        else:
            self.problems.append(f"stray </{name}>")

    def _leave(self, end: int, *, interrupted_by: str) -> None:
        assert self._open is not None
        self.stages.setdefault(self._open, self.text[self._start : end])
        self._interrupted[self._open] = interrupted_by
        self._open = None


def _is_decoration(line: str) -> bool:
    """A blank line, a rule ('---', '***') or a code fence. Most lines asked are blank or start
    with a letter or digit, which the pattern cannot match, so they need no regex."""
    if not line:
        return True
    return not line[0].isalnum() and _DECORATION.match(line) is not None


def _clean_tagged(content: str) -> str:
    """Stage text without the markdown a model wrapped around its tags (fences, ``**``)."""
    lines = content.strip().splitlines()
    while lines and _is_decoration(lines[0]):
        lines.pop(0)
    while lines and _is_decoration(lines[-1]):
        lines.pop()
    text = "\n".join(lines).strip()
    text = _TRAILING_MARKS.sub("", _LEADING_MARKS.sub("", text))
    return text.strip()


# --- candidate lists -------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _clean_candidate(item: str) -> str:
    """A candidate name from a list item: no description after ':', no emphasis or end stop.

    Cached, since the same names (the classes of a dataset) come back in rationale after
    rationale. Every description separator has a colon or a dash; most names have neither, and
    they skip the search, which costs more than the rest of the cleaning (it stops at every
    space).
    """
    if ":" in item or "-" in item or "\u2013" in item or "\u2014" in item:
        cut = _DESCRIPTION.search(item)
        if cut:
            item = item[: cut.start()]
    return item.strip().strip('*_`"').strip().rstrip(".,;:!?").strip()


def _split_commas(line: str) -> list[str]:
    """Split "A, B (x, y), and C" on commas outside brackets.

    A comma is inside brackets when more of them open than close before it (an unmatched
    closing one counts too), so each piece between commas is counted, not each character.
    """
    parts = line.split(",")
    if any(bracket in line for bracket in "([{"):
        pieces, depth = [], 0
        for part in parts:
            if depth > 0:
                pieces[-1] += "," + part
            else:
                pieces.append(part)
            depth += sum(map(part.count, "([{")) - sum(map(part.count, ")]}"))
        parts = pieces
    names = (_without_conjunction(part.strip()) for part in parts)
    return [name for name in map(_clean_candidate, names) if name]


def _without_conjunction(name: str) -> str:
    """``name`` without a leading "and " or "or "; a name that cannot start with either (the
    pattern's only case-insensitive matches of "a" and "o" are those letters) skips the regex."""
    return _CONJUNCTION.sub("", name) if name[:1] in "aAoO" else name


def _read_list(lines: Iterable[str]) -> tuple[list[str], int]:
    """The top-level items of the list that ``lines`` starts with, and how many lines it used.

    Lines indented deeper than the first item are its details (skipped, even after a blank
    line); an item of another kind (bullets after numbers), prose or a heading ends the list.
    Reads lazily and stops after ``_MAX_ITEMS`` items or ``_MAX_LIST_LINES`` lines (a candidate
    list has a handful of names), so a caller can pass an iterator over a long text.
    """
    items: list[str] = []
    indent, numbered, used = -1, False, 0
    for n, line in enumerate(lines):
        if n >= _MAX_LIST_LINES or len(items) >= _MAX_ITEMS:
            break
        text = line.lstrip()
        if not text:
            continue
        item = _ITEM.match(line)
        if item is None:  # a detail line when indented deeper, else prose or a heading
            if len(line) - len(text) <= indent or _is_heading(line):
                break
            used = n + 1
            continue
        if indent < 0:
            indent, numbered = len(item["indent"]), item["number"] is not None
        elif item["bullet"] is None and _is_heading(line):  # a bullet is no heading
            break
        elif len(line) - len(text) > indent:
            used = n + 1
            continue
        if (item["number"] is not None) != numbered:
            break
        name = _clean_candidate(line[item.end() :])
        if name:
            items.append(name)
        used = n + 1
    return items, used


def _candidates_from_block(block: str) -> list[str]:
    """Candidates from an ``<options>`` stage or a headed candidates section.

    The first list in the block when it has one; else a single line split on commas; else one
    candidate per line (lines ending in ':' are introductions, not candidates).
    """
    lines = block.splitlines()
    for i, line in enumerate(lines):
        if _ITEM.match(line):
            return _read_list(lines[i:])[0]
    filled = [line for line in lines if line.strip()]
    if len(filled) == 1:
        return _split_commas(filled[0])
    names = (_clean_candidate(line) for line in filled if not line.rstrip().endswith(":"))
    return [name for name in names if name]


# --- headed ----------------------------------------------------------------------------------


def parse_headed(text: str) -> Rationale:
    """Read the Fine-R1 training shape (the assistant turn of the released Stage-1 data).

    Sections start at heading lines ("Analysis of the Bird's Physical Appearance", "### 2.
    Candidate Subcategories:", "**Comparison Process**", "Final Prediction"); the first heading of
    each stage starts it, later ones ("Comparison Between Candidates") are text. Candidates come
    from the "The analysis of candidate subcategories:" line when there is one, else from the list
    in the candidates section. That line and the "The prediction is:" line are taken out of the
    stage text, since :func:`render_target` writes them again.

    >>> r = parse_headed(
    ...     "<think> Analysis of Visual Features:\\nPointed ears.\\n\\n Candidate Subcategories:\\n"
    ...     "- Akita\\n- Shiba Inu\\n\\n Comparison Process:\\nShiba is smaller.\\n\\n"
    ...     " Final Prediction:\\nA small spitz.\\nThe prediction is: Shiba Inu\\n</think>\\n\\n"
    ...     "<answer>Shiba Inu</answer>"
    ... )
    >>> r.candidates, r.prediction, r.prediction_line, r.answer, r.problems
    (('Akita', 'Shiba Inu'), 'A small spitz.', 'Shiba Inu', 'Shiba Inu', ())
    """
    return _parse_headed(text, _Tags(text))


def _parse_headed(text: str, tags: _Tags) -> Rationale:
    problems: list[str] = []
    body = _think_body(tags, problems)
    body, listed, prediction_line = _take_formula_lines(body)
    lines = body.split("\n")
    bare = list(map(str.rstrip, lines))
    sections = _split_sections(lines, bare)
    order = list(sections)
    preamble = "\n".join(lines[: sections[order[0]][0] - 1] if order else lines).strip()
    if preamble:
        problems.append(f"{len(preamble)} characters before the first heading ignored")
    if order != [stage for stage in STAGES if stage in sections]:  # not in STAGES' order
        problems.append(f"stages out of order: {', '.join(order)}")
    texts = {
        stage: _clean_section(bare, *sections[stage]) if stage in sections else None
        for stage in STAGES
    }
    for stage in STAGES:
        if stage not in sections:
            problems.append(f"missing section: {stage}")
        elif not texts[stage] and not (stage == "options" and listed):
            problems.append(f"empty section: {stage}")
    if not listed and "options" in sections:
        start, end = sections["options"]
        listed = _candidates_from_block("\n".join(lines[start:end]))
    candidates = listed
    if not candidates:
        problems.append("no candidates found")
    answer = tags.answer()
    if answer is None:
        problems.append("no <answer>")
    return Rationale(
        analysis=texts["analysis"] or None,
        candidates=tuple(candidates),
        comparison=texts["comparison"] or None,
        prediction=texts["prediction"] or None,
        answer=answer,
        raw_text=text,
        source_format="headed",
        problems=tuple(dict.fromkeys(problems)),
        prediction_line=prediction_line,
    )


def _think_body(tags: _Tags, problems: list[str]) -> str:
    """Text inside ``<think>`` (or before ``<answer>`` when the tags are missing)."""
    text = tags.text
    opening = tags.first(("think",), closing=False)
    start = opening.end() if opening else 0
    closing = tags.first(("think",), closing=True, start=start)
    if closing:
        return text[start : closing.start()]
    problems.append("missing </think>")
    answer = tags.first(("answer",), closing=False, start=start)
    return text[start : answer.start() if answer else len(text)]


def _fold(text: str) -> str:
    """``text`` with every character that ``re.IGNORECASE`` equates with an ASCII letter turned
    into that lower-case letter, and every other character kept, so the result has the same
    length (its offsets are offsets in ``text``) and a case-sensitive pattern of lower-case ASCII
    words finds in it exactly what the same pattern with IGNORECASE finds in ``text``.

    Beyond ASCII, IGNORECASE equates dotted and dotless I (U+0130, U+0131) with "i", long s
    (U+017F) with "s" and the Kelvin sign with "k"; those are replaced, then only ASCII letters
    are lowered: ``bytes.lower`` changes nothing else, and UTF-8 writes every other character
    with bytes above 127. ``str.lower`` would also work but is 3 times slower on non-ASCII
    text (it looks every character up), ``str.translate`` 50 times.

    >>> _fold("The PREDICTION \u0130s: \u212aelvin \u017f \u00c9")
    'the prediction is: kelvin s \u00c9'
    """
    if text.isascii():
        return text.lower()
    for odd, letter in (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"), ("\u212a", "k")):
        if odd in text:
            text = text.replace(odd, letter)
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


def _take_formula_lines(body: str) -> tuple[str, list[str], str | None]:
    """Remove the "The analysis of candidate subcategories:" blocks and "The prediction is:"
    lines from ``body``; return the rest, the last non-empty candidate list and the last
    prediction statement (the released shape repeats them last, in its closing summary)."""
    listed: list[str] = []
    prediction_line: str | None = None
    pieces: list[str] = []
    position = 0
    for start, end, found in _formula_spans(body):
        pieces.append(body[position:start])
        position = end
        if isinstance(found, list):
            listed = found or listed
        else:
            prediction_line = found or prediction_line
    pieces.append(body[position:])
    return "\n".join(pieces), listed, prediction_line


def _formula_spans(body: str) -> list[tuple[int, int, list[str] | str]]:
    """Spans of the formula lines in order, each with its candidate list or prediction text.

    A marker inside an earlier span (a list that quotes the phrase) is skipped before its extent
    is computed, which keeps repeated markers linear in the length of the body. Markers cannot
    overlap (neither phrase contains "the"), so the reversed search finds the same ones.
    """
    size = len(body)
    markers = [
        (size - found.end(), size - found.start(), found["candidates"] is not None)
        for found in _FORMULA_REVERSED.finditer(body[::-1])
    ]
    spans: list[tuple[int, int, list[str] | str]] = []
    reach = 0
    for start, marker_end, is_list in reversed(markers):
        if start < reach:
            continue
        if is_list:
            reach, names = _list_after(body, marker_end)
            spans.append((start, reach, names))
        else:
            reach = _line_end(body, marker_end)
            spans.append((start, reach, body[marker_end:reach].strip()))
    return spans


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end < 0 else end


def _iter_lines(text: str, start: int, ends: list[int]) -> Iterator[str]:
    """Lines of ``text`` from ``start`` one at a time, appending where each ends to ``ends``."""
    size = len(text)
    while start <= size:
        end = text.find("\n", start)
        if end < 0:
            end = size
        ends.append(end)
        yield text[start:end]
        start = end + 1


def _list_after(body: str, start: int) -> tuple[int, list[str]]:
    """Where the candidate list after "The analysis of candidate subcategories:" ends, and it.

    The list is the rest of the marker's line when that has text (comma-separated), else the
    first non-blank line below: a bulleted or numbered list, or one comma-separated line.
    """
    line_end = _line_end(body, start)
    if body[start:line_end].strip():
        return line_end, _split_commas(body[start:line_end])
    ends: list[int] = []
    lines = _iter_lines(body, line_end + 1, ends)
    for first in lines:
        if first.strip():
            break
    else:
        return line_end, []
    if _is_heading(first):
        return line_end, []
    if not _ITEM.match(first):
        return ends[-1], _split_commas(first)
    skipped = len(ends) - 1
    names, used = _read_list(itertools.chain([first], lines))
    return ends[skipped + used - 1], names


def _heading_stage(line: str) -> str | None:
    """The stage a heading line starts, or None when the line is not a stage heading.

    Every line of a body is asked, and most are prose: a long line, one that ends a sentence
    (whose title would end with it) or one without a heading word is turned away before any
    regular expression runs. A blank line ends in "", which ``in`` finds in any string.
    """
    if len(line) > _MAX_HEADING_LINE or line.rstrip()[-1:] in _SENTENCE_ENDS:
        return None
    return _worded_stage(line)


@lru_cache(maxsize=4096)
def _worded_stage(line: str) -> str | None:
    """:func:`_heading_stage` of a line that passed its length and sentence-end tests.

    Cached because such lines repeat across rationales: headings ("Comparison Process:"),
    list items and sub-headings that name classes ("- Akita", " 1. Akita:"); prose, which
    does not repeat, mostly ends a sentence and is turned away before the cache.
    """
    low = _fold(line)
    if not _HEADING_WORD.search(low):
        return None
    item = _ITEM.match(line)
    if item and item["bullet"]:
        return None
    # The marks match at the start of every line and nowhere else: one substitution is all.
    title = _HEADING_MARKS.sub("", line, count=1).strip().rstrip("*_#: ").strip()
    if not title or len(title) > _MAX_HEADING or ":" in title or title[-1] in _SENTENCE_ENDS:
        return None
    for stage, pattern in _HEADING_STAGES:
        if pattern.search(title):
            return stage
    return None


def _is_heading(line: str) -> bool:
    return _heading_stage(line) is not None


def _split_sections(lines: list[str], bare: list[str]) -> dict[str, tuple[int, int]]:
    """Where each stage's section is among the lines of a body, from the line after its first
    heading to the next stage's heading, in the order of the text. ``bare`` holds the same
    lines right-stripped."""
    headings: dict[str, int] = {}
    for n, line in enumerate(bare):
        # The first tests of _heading_stage, made here without a call per line (most are
        # prose). A blank line ends in "", which is in _SENTENCE_ENDS as in any string.
        if line[-1:] in _SENTENCE_ENDS or len(lines[n]) > _MAX_HEADING_LINE:
            continue
        stage = _worded_stage(lines[n])
        if stage is not None and stage not in headings:
            headings[stage] = n
            if len(headings) == len(STAGES):
                break
    if not headings:
        return {}
    ends = [*list(headings.values())[1:], len(lines)]
    return {stage: (n + 1, end) for (stage, n), end in zip(headings.items(), ends, strict=True)}


def _clean_section(bare: list[str], start: int, end: int) -> str:
    """The text of the right-stripped lines ``bare[start:end]``, without surrounding blank
    lines, rules ('---') or a dangling repeated heading at its end."""
    while start < end and _is_decoration(bare[start]):
        start += 1
    end = _decoration_start(bare, start, end)
    if end > start and _heading_stage(bare[end - 1]) is not None:
        end = _decoration_start(bare, start, end - 1)
    return "\n".join(bare[start:end])


def _decoration_start(bare: list[str], start: int, end: int) -> int:
    """Where the decoration lines that end ``bare[start:end]`` start (blank lines, which end
    most sections, are passed over without a call)."""
    while end > start and (not bare[end - 1] or _is_decoration(bare[end - 1])):
        end -= 1
    return end


# --- rendering -------------------------------------------------------------------------------


def render_target(r: Rationale, *, answer: str) -> str:
    """The student's training target in the Fine-R1 shape, from a verified rationale.

    Raises ValueError when a stage is missing, when ``answer`` is empty or spans lines, or when
    the stage text would not parse back to the same stages (a stage that contains another
    stage's heading or tag), so only readable targets reach training.

    >>> r = parse_tagged(
    ...     "<analysis>Brown back.</analysis><options>Bank Swallow, Tree Swallow</options>"
    ...     "<comparison>Bank is browner.</comparison><prediction>A Bank Swallow.</prediction>"
    ... )
    >>> target = render_target(r, answer="Bank Swallow")
    >>> print(target)  # doctest: +NORMALIZE_WHITESPACE
    <think> Analysis of Visual Features:
    Brown back.
    <BLANKLINE>
     Candidate Subcategories:
    - Bank Swallow
    - Tree Swallow
    <BLANKLINE>
     Comparison Process:
    Bank is browner.
    <BLANKLINE>
     Final Prediction:
    A Bank Swallow.
    The analysis of candidate subcategories:
    Bank Swallow, Tree Swallow
    The prediction is: Bank Swallow
    </think>
    <BLANKLINE>
    <answer>Bank Swallow</answer>
    >>> "The analysis of candidate subcategories: \\nBank Swallow, Tree Swallow\\n" in target
    True
    """
    missing = [
        name
        for name, value in (
            ("analysis", r.analysis),
            ("candidates", r.candidates),
            ("comparison", r.comparison),
            ("prediction", r.prediction),
        )
        if not value or (isinstance(value, str) and not value.strip())
    ]
    if missing:
        msg = (
            f"cannot render a target with missing stage(s): {', '.join(missing)}; render only "
            "rationales that passed verification"
        )
        raise ValueError(msg)
    answer = answer.strip()
    if not answer or "\n" in answer:
        msg = f"answer must be one non-empty line (the class name); got {answer!r}"
        raise ValueError(msg)
    assert r.analysis and r.comparison and r.prediction
    listed = ", ".join(r.candidates)
    if any(len(_split_commas(name)) != 1 for name in r.candidates):
        listed = "\n".join(f"- {name}" for name in r.candidates)
    target = (
        f"<think> {HEADINGS['analysis']}\n{r.analysis.strip()}\n\n"
        f" {HEADINGS['options']}\n" + "\n".join(f"- {name}" for name in r.candidates) + "\n\n"
        f" {HEADINGS['comparison']}\n{r.comparison.strip()}\n\n"
        f" {HEADINGS['prediction']}\n{r.prediction.strip()}\n"
        f"The analysis of candidate subcategories: \n{listed}\n"
        f"The prediction is: {answer}\n</think>\n\n<answer>{answer}</answer>"
    )
    _check_round_trip(r, target, answer)
    return target


def same_text(a: str | None, b: str | None) -> bool:
    """Equal after collapsing whitespace (how stage texts are compared across formats)."""
    return " ".join((a or "").split()) == " ".join((b or "").split())


def _check_round_trip(r: Rationale, target: str, answer: str) -> None:
    back = parse(target)
    differing = [
        name
        for name in ("analysis", "comparison", "prediction")
        if not same_text(getattr(r, name), getattr(back, name))
    ]
    if back.candidates != r.candidates:
        differing.append("candidates")
    if back.answer != answer:
        differing.append("answer")
    if differing:
        msg = (
            f"the rendered target does not read back the same ({', '.join(differing)} differ); "
            "a stage probably contains a heading, stage tag or 'The prediction is:' line of "
            "its own: fix the stage text before rendering"
        )
        raise ValueError(msg)
