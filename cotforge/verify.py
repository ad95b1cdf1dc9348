"""Named checks that decide whether a teacher's rationale may become training data.

Fine-R1 filtered its Stage-1 data by resampling until a chain of thought reached the right
sub-category, fixing rationales that mixed languages and checking that the prediction was in the
candidate list and matched the ground truth. Here each of those rules is a plain function that
returns a :class:`CheckResult` with a reason a person can read, on a pass as well as on a fail,
so a report can show what each check saw. The generation loop calls :func:`verify_rationale` on
one response to decide whether to sample again; :func:`verify_store` runs the same checks over
the store and writes them as verdicts. Every check runs on every rationale and every result is
stored; :attr:`VerifyOptions.required <cotforge.config.VerifyOptions.required>` only decides
which ones a rationale must pass to be accepted (:func:`accepted`).

The ``judge`` check (a second teacher call grading the comparison against the image) arrives with
the teacher interface of the generation stage.

Speed matters because the generation loop verifies every response and a store holds 100k of
them: the regular expressions are compiled once, scan each text once with bounded repetition
(linear time on megabyte inputs), and the class lookups of candidate names and answers, which
repeat across rationales, are cached.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version
from itertools import islice
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from rich.progress import Progress

from cotforge.config import VERIFY_CHECKS, VerifyOptions
from cotforge.data.annotations import ClassInfo
from cotforge.errors import CotforgeError, VerifyError
from cotforge.process_map import WorkerDied, available_cores, process_map
from cotforge.rationale import Rationale, parse
from cotforge.scoring import ClassMatcher, Score, normalise, score

if TYPE_CHECKING:
    import polars as pl
    from rich.console import Console

    from cotforge.store import Store

_DEFAULTS = VerifyOptions()
_QUOTE_LIMIT = 60
_MAX_REASONS = 3


class CheckResult(NamedTuple):
    """The outcome of one named check on one rationale; ``reason`` says what the check saw.

    A named tuple because the generation loop makes seven per response: it builds five times
    faster than a frozen dataclass.
    """

    name: str
    passed: bool
    reason: str


def _quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """``text`` as a short Python literal: newlines and undecodable characters escaped, so a
    reason always fits on one line and can be written to the store."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def _names(names: Sequence[str], *, limit: int = 4) -> str:
    """Candidate names quoted, at most ``limit`` of them."""
    return ", ".join(map(_quote, names[:limit])) + (", ..." if len(names) > limit else "")


def _listing(items: Sequence[str], *, limit: int = _MAX_REASONS) -> str:
    """The first ``limit`` items joined with '; ', then how many were left out."""
    shown = "; ".join(items[:limit])
    left = len(items) - limit
    return shown + (f" (and {left} more)" if left > 0 else "")


# --- structure -------------------------------------------------------------------------------

_HTML_TAGS = (
    "a|abbr|article|aside|b|big|blockquote|body|br|button|caption|center|cite|code|col|dd|del|"
    "details|div|dl|dt|em|figcaption|figure|font|footer|form|h[1-6]|head|header|hr|html|i|"
    "iframe|img|input|ins|kbd|li|link|main|mark|meta|nav|noscript|ol|p|pre|q|s|samp|script|"
    "section|small|span|strike|strong|style|sub|summary|sup|svg|table|tbody|td|template|"
    "textarea|tfoot|th|thead|title|tr|tt|u|ul|var|video"
)
# Two patterns that each start with a literal character, so ``re`` jumps from one '<' or '&' to
# the next (one pattern starting with an alternation tries every position: 6 times slower).
# Attributes need a value ("<b and c>" in a comparison is not markup).
_HTML_ATTRIBUTE = (
    r"""\s{1,8}[\w:-]{1,32}\s{0,4}=\s{0,4}(?:"[^"<>]{0,256}"|'[^'<>]{0,256}'|[^\s<>"']{1,64})"""
)
# ``re`` enters the case-insensitive tag names one by one (1.5 µs at each '<'), so the tags every
# rationale has, none of them HTML, are turned away first by a case-sensitive look.
_OWN_TAG = r"(?!/?(?:think|answer|analysis|options|comparison|prediction)>)"
_HTML_TAG = re.compile(
    rf"<{_OWN_TAG}(?i:/?(?:{_HTML_TAGS})(?:{_HTML_ATTRIBUTE}){{0,16}}\s{{0,8}}/?>)"
)
_HTML_ENTITY = re.compile(r"&(?i:[a-z]{2,8}|#\d{1,7}|#x[0-9a-f]{1,6});")


_MAX_LOOKS = 32


def _search_from(pattern: re.Pattern[str], text: str, first: str) -> re.Match[str] | None:
    """``pattern.search(text)`` for a pattern that starts with the character ``first``, faster:
    ``str.find`` jumps between its occurrences (memchr), where ``re`` looks at every character.
    A rationale has a few '<' (its own tags) and rarely an '&'; after ``_MAX_LOOKS`` of them the
    regex searches the rest, which many make cheaper."""
    at = text.find(first)
    for _ in range(_MAX_LOOKS):
        if at < 0:
            return None
        found = pattern.match(text, at)
        if found:
            return found
        at = text.find(first, at + 1)
    return pattern.search(text, at) if at >= 0 else None


def structure(r: Rationale) -> CheckResult:
    """All four stages present, non-empty and in order, with nothing the parser had to skip,
    guess or repair, and no HTML markup (a student trained on it would learn to emit it).

    Everything the parser noticed is in ``r.problems``; this check turns it into a verdict.

    >>> structure(parse("<analysis>Brown back.</analysis><options>A, B</options>")).reason
    'missing <comparison>; missing <prediction>'
    """
    problems = list(r.problems)
    markup = _search_from(_HTML_TAG, r.raw_text, "<") or _search_from(_HTML_ENTITY, r.raw_text, "&")
    if markup:
        problems.append(f"HTML markup at {markup.start()}: {_quote(markup.group())}")
    if problems:
        return CheckResult("structure", False, _listing(problems))
    return CheckResult(
        "structure", True, f"four stages in order, {len(r.candidates)} candidates listed"
    )


# --- class checks ----------------------------------------------------------------------------


_T = TypeVar("_T")
_CACHED_CHARS = 200


def _cache_short(function: Callable[..., _T]) -> Callable[..., _T]:
    """Cache ``function`` for short first arguments: candidate names and answers repeat across
    thousands of rationales, while a long text (a prediction stage, junk) would only fill the
    cache."""
    cached = lru_cache(maxsize=16384)(function)

    def call(text: str, *args: Hashable) -> _T:
        if len(text) > _CACHED_CHARS:
            return function(text, *args)
        return cached(text, *args)

    return call


@_cache_short
def _named(text: str, matcher: ClassMatcher, allow_missing_year: bool) -> tuple[ClassInfo, ...]:
    """The classes ``text`` names; with ``allow_missing_year`` a name without its year names
    every year of that model."""
    found = matcher.find(text)
    if found or not (allow_missing_year and matcher.year_suffixed):
        return tuple(found)
    return tuple(info for years in matcher.find_without_year(text) for info in years)


@_cache_short
def _score(text: str, truth: ClassInfo, matcher: ClassMatcher, allow_missing_year: bool) -> Score:
    return score(text, truth, matcher, allow_missing_year=allow_missing_year)


def _stated(r: Rationale) -> list[tuple[str, str]]:
    """What the rationale states as its prediction, each with a label for reasons.

    The ``<answer>`` and the "The prediction is:" line when present (both are the prediction,
    and they must agree); else the prediction stage itself (a tagged response without an
    ``<answer>``). An empty ``<answer>`` counts, so it fails as empty rather than vanishing.
    """
    stated = []
    if r.answer is not None:
        stated.append(("answer", r.answer))
    if r.prediction_line is not None:
        stated.append(("prediction line", r.prediction_line))
    if not stated and r.prediction:
        stated.append(("prediction", r.prediction))
    return stated


class _Classes:
    """What the class checks of one rationale look up: its stated predictions and the classes
    each candidate names. :func:`verify_rationale` builds it once for the three checks, which
    would otherwise each look up every candidate again."""

    def __init__(self, r: Rationale, matcher: ClassMatcher, allow_missing_year: bool) -> None:
        self.r = r
        self.matcher = matcher
        self.allow_missing_year = allow_missing_year
        self.stated = _stated(r)
        self.named = [_named(name, matcher, allow_missing_year) for name in r.candidates]
        self._truth: ClassInfo | None = None
        self._names_truth = False

    def name_truth(self, truth: ClassInfo) -> bool:
        """Whether some candidate names ``truth`` (asked by two checks, looked up once)."""
        if self._truth is not truth:
            self._truth = truth
            self._names_truth = any(truth in named for named in self.named)
        return self._names_truth


def correct(
    r: Rationale, *, truth: ClassInfo, matcher: ClassMatcher, allow_missing_year: bool = False
) -> CheckResult:
    """The prediction names the true class and no other class of the dataset.

    Both the ``<answer>`` and the "The prediction is:" line are scored when present (see
    :func:`cotforge.scoring.score`: an answer naming two classes is wrong even if one is right;
    a car without its year only with ``allow_missing_year``).

    >>> m = ClassMatcher.for_dataset("pets")
    >>> r = parse("<prediction>It is a Bengal.</prediction><answer>Bengal</answer>")
    >>> correct(r, truth=m.annotations.by_name["Bengal"], matcher=m).passed
    True
    >>> correct(r, truth=m.annotations.by_name["Abyssinian"], matcher=m).reason
    "answer 'Bengal': names Bengal, not the true Abyssinian"
    """
    return _correct(_Classes(r, matcher, allow_missing_year), truth)


def _correct(c: _Classes, truth: ClassInfo) -> CheckResult:
    if not c.stated:
        return CheckResult("correct", False, "no <answer>, prediction line or prediction stage")
    for label, text in c.stated:
        verdict = _score(text, truth, c.matcher, c.allow_missing_year)
        if not verdict.correct:
            return CheckResult("correct", False, f"{label} {_quote(text)}: {verdict.reason}")
    labels = " and ".join([label for label, _ in c.stated])
    return CheckResult("correct", True, f"{labels} name the true class {truth.name}")


def _among(text: str, c: _Classes, padded_keys: Sequence[str]) -> bool:
    """Whether a stated prediction is one of the candidates: one contains the other as whole
    words after normalising ("Bengal" and "Bengal Cat"; "The aircraft is a Bombardier CRJ-200."
    and "Bombardier CRJ-200"), or both name the same single class of the dataset.
    ``padded_keys`` are the non-empty normalised candidates with a space on each side."""
    padded = f" {normalise(text)} "
    if padded.strip() and any(key in padded or padded in key for key in padded_keys):
        return True
    named = _named(text, c.matcher, False)
    if len(named) != 1:
        return False
    if not c.allow_missing_year:
        return any(named[0] in names for names in c.named)
    return any(named[0] in _named(name, c.matcher, False) for name in c.r.candidates)


def candidates(
    r: Rationale, *, truth: ClassInfo, matcher: ClassMatcher, allow_missing_year: bool = False
) -> CheckResult:
    """2 to 4 distinct candidates, the true class among them and the prediction among them.

    Distinct after :func:`cotforge.scoring.normalise` ("Bank Swallow" = "bank swallows"). The
    true class is among them when a candidate names it (by name or alias); the prediction is
    among them when it matches one by text or by the class both name.

    >>> m = ClassMatcher.for_dataset("pets")
    >>> r = parse("<options>Bengal Cat, Ocicat</options><answer>Bengal</answer>")
    >>> candidates(r, truth=m.annotations.by_name["Bengal"], matcher=m).reason
    '2 distinct candidates, the true class Bengal and the prediction among them'
    """
    return _candidates(_Classes(r, matcher, allow_missing_year), truth)


def _candidates(c: _Classes, truth: ClassInfo) -> CheckResult:
    names = c.r.candidates
    if not 2 <= len(names) <= 4:
        return CheckResult(
            "candidates", False, f"{len(names)} candidates ({_names(names)}); 2 to 4 wanted"
        )
    keys = [normalise(name) for name in names]
    if len(set(keys)) < len(keys):  # name the first pair
        seen: dict[str, str] = {}
        for name, key in zip(names, keys, strict=True):
            if key in seen:
                reason = f"{_quote(seen[key])} and {_quote(name)} are the same candidate"
                return CheckResult("candidates", False, reason)
            seen[key] = name
    if not c.name_truth(truth):
        reason = f"the true class {truth.name} is not among the candidates ({_names(names)})"
        return CheckResult("candidates", False, reason)
    padded_keys = [f" {key} " for key in keys if key]
    for label, text in c.stated:
        if not _among(text, c, padded_keys):
            reason = f"{label} {_quote(text)} is not among the candidates ({_names(names)})"
            return CheckResult("candidates", False, reason)
    return CheckResult(
        "candidates",
        True,
        f"{len(names)} distinct candidates, the true class {truth.name} and the prediction "
        "among them",
    )


def super_category(
    r: Rationale, *, truth: ClassInfo, matcher: ClassMatcher, allow_missing_year: bool = False
) -> CheckResult:
    """At least the true class is among the candidates as a known class of the dataset.

    Candidates that name no class of the dataset are allowed, as in the paper's data, where the
    teacher often lists look-alikes the dataset does not have (a "Dassault Rafale" beside a
    "Eurofighter Typhoon"); they are reported in the reason so a report can count them.

    >>> m = ClassMatcher.for_dataset("pets")
    >>> r = parse("<options>Bengal, Toyger</options>")
    >>> super_category(r, truth=m.annotations.by_name["Bengal"], matcher=m).reason
    "the true class Bengal is a known pets class; 1 of 2 candidates known; unknown: 'Toyger'"
    """
    return _super_category(_Classes(r, matcher, allow_missing_year), truth)


def _super_category(c: _Classes, truth: ClassInfo) -> CheckResult:
    dataset = c.matcher.annotations.name
    names = c.r.candidates
    unknown = [name for name, named in zip(names, c.named, strict=True) if not named]
    counts = f"{len(names) - len(unknown)} of {len(names)} candidates known"
    if unknown:
        counts += f"; unknown: {_names(unknown)}"
    if not c.name_truth(truth):
        reason = f"no candidate names the true class {truth.name} as a {dataset} class; {counts}"
        return CheckResult("super_category", False, reason)
    return CheckResult(
        "super_category", True, f"the true class {truth.name} is a known {dataset} class; {counts}"
    )


# --- leakage ---------------------------------------------------------------------------------

_W = r"\s{1,16}"
_LABEL = rf"(?:label|answer|ground[\s-]?truth|class{_W}name)"
_TOLD_BY = (
    rf"\b(?:(?:we|i){_W}(?:are|were|am|was|have{_W}been|had{_W}been)|we['\u2019]re|"
    rf"(?:we|i)['\u2019]ve{_W}been){_W}$"
)
_LEAKAGE: tuple[tuple[str, str | None], ...] = (
    (
        rf"given{_W}(?:(?:that{_W})?the{_W}(?:(?:correct|true|provided|given){_W})?)?{_LABEL}s?\b",
        None,
    ),
    (rf"provided{_W}{_LABEL}s?\b", None),
    (rf"supplied{_W}{_LABEL}s?\b", None),
    (
        rf"the{_W}(?:label{_W}(?:provided|supplied|given|is|was|says|said|reads|states|indicates"
        rf"|shows)|answer{_W}(?:provided|supplied)|(?:correct|true|expected|right){_W}"
        rf"(?:label|answer|class){_W}(?:is|was)|(?:question|prompt|instructions?){_W}(?:says|said"
        r"|states|stated|tells|told|indicates|mentions|mentioned))\b",
        None,
    ),
    (
        rf"as{_W}(?:stated\b(?!{_W}(?:above|earlier|before|previously|in{_W}(?:the|my){_W}"
        rf"(?:analysis|comparison|description)))|(?:mentioned|indicated|specified|noted|given)"
        rf"{_W}(?:in|by){_W}the{_W}(?:question|prompt|label|instructions?|annotation|hint)\b)",
        None,
    ),
    (r"told\b", _TOLD_BY),
    (
        rf"according{_W}to{_W}the{_W}(?:(?:provided|given|correct){_W})?"
        rf"(?:{_LABEL}|annotation|hint)\b",
        None,
    ),
    (r"ground[\s-]?truth\b", None),
    (rf"labell?ed{_W}as\b", None),
    (rf"annotated{_W}as\b", None),
)
"""Phrases by which a teacher that was told the label betrays it: a pattern over lower-cased
text, and one that must match right before it (None: anything may)."""


@dataclass(frozen=True)
class _Phrase:
    """One leakage phrase, found fast.

    Its pattern starts with a literal word, which lets ``re`` jump between occurrences of that
    word instead of trying every position (50 times faster than one alternation with ``\\b``
    in front); the word boundary in front and the required preceding words are checked on each
    occurrence instead. Before searching, ``str.find`` looks for the ``anchor`` (the letters
    the pattern starts with), which rules out a text twice as fast, and most texts hold no
    anchor of most phrases.
    """

    pattern: re.Pattern[str]
    anchor: str
    before: re.Pattern[str] | None = None
    word_start: bool = True

    @classmethod
    def build(cls, source: str, before: str | None = None, *, word_start: bool = True) -> _Phrase:
        letters = re.match(r"[a-z]*", source)
        anchor = letters.group() if letters else ""
        if source[len(anchor) : len(anchor) + 1] in ("?", "*", "{"):
            anchor = anchor[:-1]  # "labell?ed": the second "l" is optional, the anchor "label"
        return cls(
            re.compile(source),
            anchor,
            re.compile(before) if before else None,
            word_start,
        )

    def first(self, low: str, pos: int = 0) -> tuple[int, int] | None:
        """Where the phrase first occurs in the lower-cased ``low`` at or after ``pos``."""
        at = low.find(self.anchor, pos)
        if at < 0:
            return None
        hit = self.pattern.search(low, at)  # every occurrence starts with the anchor
        while hit is not None:
            start = self._start(low, hit.start())
            if start is not None:
                return start, hit.end()
            hit = self.pattern.search(low, hit.start() + 1)
        return None

    def _start(self, low: str, at: int) -> int | None:
        """Where the phrase starts when the occurrence at ``at`` counts, else None."""
        if self.word_start and at and (low[at - 1].isalnum() or low[at - 1] == "_"):
            return None
        if self.before is None:
            return at
        before = self.before.search(low, max(0, at - 40), at)
        return before.start() if before else None


# Every built-in phrase holds one of these words, while the words most of them start with
# ("the", "as", "given", "provided") are in nearly every text: a text without any of them cites
# no label, and one find per word rules it out in less time than searching each phrase takes.
_RARE_WORDS = (
    "label",
    "ground",
    "annotat",
    "told",
    "according",
    "question",
    "prompt",
    "instruction",
    "stated",
)
# "answer", "class" and "hint" are ordinary words as well ("the classic features", "a hint of
# buff"), so they count only where a phrase could use them: after the word that comes before
# them in a phrase and followed by what follows them there ("the answer provided", "the correct
# class is", "given the class name", "the hint"; "according to the hint" has "according").
_BEFORE_LABEL = re.compile(rf"(?:given|the|correct|true|provided|supplied|expected|right){_W}$")
_COMMON_WORDS = (
    ("answer", _BEFORE_LABEL, re.compile(r"answers?\b")),
    ("class", _BEFORE_LABEL, re.compile(rf"class{_W}(?:name|is|was)")),
    ("hint", re.compile(rf"the{_W}$"), re.compile(r"hint\b")),
)
_BEFORE_REACH = 8 + 16  # the longest word before, and the most whitespace _W allows


def _may_cite(low: str) -> bool:
    """False when the lower-cased ``low`` holds none of the built-in phrases (True does not
    mean it holds one: the phrases decide)."""
    for word in _RARE_WORDS:
        if word in low:
            return True
    for word, before, after in _COMMON_WORDS:
        at = low.find(word)
        while at >= 0:
            if after.match(low, at) and before.search(low, max(0, at - _BEFORE_REACH), at):
                return True
            at = low.find(word, at + 1)
    return False


@lru_cache(maxsize=32)
def _phrases(extra: tuple[str, ...]) -> tuple[_Phrase, ...]:
    """The built-in phrases plus ``extra`` ones (literal text, any whitespace between words)."""
    phrases = [_Phrase.build(pattern, before) for pattern, before in _LEAKAGE]
    for phrase in extra:
        words = phrase.lower().split()
        end = r"\b" if words[-1][-1].isalnum() else ""
        source = _W.join(map(re.escape, words)) + end
        phrases.append(_Phrase.build(source, word_start=words[0][0].isalnum()))
    return tuple(phrases)


def _lower(text: str, phrases: Sequence[str]) -> str:
    """``text`` lower-cased with every position kept (a few characters, such as U+0130, lower
    to two), so positions found in it are positions in ``text``.

    Phrases written in ASCII (all the built-in ones) see only the ASCII letters of the result
    (``str.lower`` keeps whether any character is a letter, digit or space, and lowers none but
    the Kelvin sign to ASCII), so for them only ASCII letters are lowered, through bytes: UTF-8
    writes every other character with bytes above 127, which ``bytes.lower`` leaves alone. On
    non-ASCII text that is 3 times faster than ``str.lower``, which looks up every character.
    """
    if not text.isascii() and all(phrase.isascii() for phrase in phrases):
        text = text.replace("\u212a", "k")
        return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(ch if len(ch.lower()) != 1 else ch.lower() for ch in text)


def leakage(text: str, *, phrases: Sequence[str] = ()) -> CheckResult:
    """No phrase that shows the teacher was handed the label ("given the label", "as stated",
    "the answer provided", "we are told", "ground truth", ...), plus ``phrases`` of your own.

    A student trained on such text learns to cite a label it will never be given. Phrases
    match whole words, in any case, with any whitespace between their words.

    >>> leakage("Brown back. As stated, this is a Bank Swallow.").reason
    "'As stated' at 12: 'Brown back. As stated, this is a Bank Swallow.'"
    >>> leakage("Brown back, so a Bank Swallow.", phrases=["so a"]).passed
    False
    """
    low = _lower(text, phrases)
    built = _phrases(tuple(phrases))
    if not _may_cite(low) and all(
        phrase.anchor and phrase.anchor not in low for phrase in built[len(_LEAKAGE) :]
    ):  # no built-in phrase, and no extra phrase that starts with the letters it starts with
        return CheckResult("leakage", True, "no phrase that cites a given label")
    hits = [hit for phrase in built if (hit := phrase.first(low))]
    if not hits:
        return CheckResult("leakage", True, "no phrase that cites a given label")
    at, end = min(hits)
    count = 0
    for phrase in built:
        found = phrase.first(low)
        while found is not None:
            count += 1
            found = phrase.first(low, found[1])
    line = text.rfind("\n", max(0, at - 40), at)
    context = text[line + 1 if line >= 0 else max(0, at - 40) : end + 40].strip()
    reason = f"{_quote(text[at:end])} at {at}: {_quote(context, 100)}"
    return CheckResult("leakage", False, reason + (f" ({count} in all)" if count > 1 else ""))


# --- language --------------------------------------------------------------------------------

# Blocks that need no look: Latin (ASCII to Latin Extended-B, IPA, spacing and combining
# diacritics, Latin Extended Additional/C/D/E, ligatures) and the script-free symbol blocks
# (general punctuation to miscellaneous symbols and arrows: dashes, quotes, currency, arrows,
# maths, box drawing, dingbats). Anything else is looked up by its Unicode name.
_NOT_LATIN = re.compile(
    "[^\x00-\u036f\u1e00-\u1eff\u2000-\u2bff\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f\ufb00-\ufb06]"
)
_LATIN_WORDS = frozenset({"LATIN", "COMBINING", "MATHEMATICAL", "MODIFIER"})
_CJK_WORDS = frozenset({"IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH", "CJK"})
_SPAN_END = re.compile(r"[A-Za-z0-9]|\n")


@lru_cache(maxsize=4096)
def _script(ch: str) -> str | None:
    """The script a character outside the Latin blocks writes in, or None when it is a symbol
    or a Latin-script letter (an emoji, a mathematical italic x, a combining accent).

    Letters, marks and digits count by the first word of their Unicode name (CYRILLIC, ARABIC,
    HIRAGANA, ...); CJK punctuation and fullwidth forms count as CJK, since they come with
    Chinese or Japanese text."""
    name = unicodedata.name(ch, "")
    word = name.split(" ", 1)[0] if name else "UNNAMED"
    if word in _CJK_WORDS or "\u3000" <= ch <= "\u303f":
        return "CJK"
    if unicodedata.category(ch)[0] not in "LMN" or word in _LATIN_WORDS:
        return None
    return word


def _is_greek(ch: str) -> bool:
    return _script(ch) == "GREEK"


def _foreign(text: str, at: int) -> str | None:
    """The script of ``text[at]`` when it does not belong in English; a lone Greek letter
    (a unit's mu, an alpha in "alpha-keratin") does, a Greek word does not."""
    script = _script(text[at])
    if script != "GREEK":
        return script
    before = at > 0 and _is_greek(text[at - 1])
    after = at + 1 < len(text) and _is_greek(text[at + 1])
    return script if before or after else None


_ASCII_BYTES = bytes(range(128))


def _non_ascii(text: str) -> str:
    """The characters of ``text`` beyond ASCII, in order. Most texts that are not ASCII hold a
    few curly quotes or accents: looking for other scripts among those alone, before the whole
    text, is ten times faster. UTF-8 writes those characters with bytes above 127 only, so
    deleting the bytes below leaves them whole (lone surrogates pass through as well)."""
    data = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    return data.decode("utf-8", "surrogatepass")


def language(text: str, *, language: str = "en") -> CheckResult:
    """The text is in the configured language, judged by its script: English must be Latin.

    Fails on letters of another script inside the text (a Chinese sentence, a Cyrillic word:
    teachers drift into their training languages), quoting the first such span, and on
    undecodable characters (lone surrogates from bytes that were not UTF-8, U+FFFD). A script
    check cannot tell English from French; it catches what Fine-R1 had to fix by hand.

    >>> language("The wings are brown.").passed
    True
    >>> language("The wings are brown. 翅膀是棕色的。 So a swallow.").reason
    "CJK text at 21: '翅膀是棕色的。' (7 characters of other scripts in all)"
    """
    if language != "en":
        msg = f"language must be 'en' (the only one checked so far); got {language!r}"
        raise ValueError(msg)
    if text.isascii():
        return CheckResult("language", True, "English (ASCII only)")
    if not _NOT_LATIN.search(_non_ascii(text)):
        return CheckResult("language", True, "English (Latin script)")
    undecodable: list[int] = []
    foreign: list[tuple[int, str]] = []
    for hit in _NOT_LATIN.finditer(text):
        ch = hit.group()
        if ch == "\ufffd" or "\ud800" <= ch <= "\udfff":
            undecodable.append(hit.start())
        elif script := _foreign(text, hit.start()):
            foreign.append((hit.start(), script))
    if undecodable:
        at = undecodable[0]
        reason = (
            f"{len(undecodable)} undecodable character(s) (invalid UTF-8), first at {at}: "
            f"{_quote(text[at])}"
        )
        return CheckResult("language", False, reason)
    if not foreign:
        return CheckResult("language", True, "English (Latin script)")
    at, script = foreign[0]
    end = _SPAN_END.search(text, at)
    span = text[at : end.start() if end else len(text)].strip()
    reason = (
        f"{script} text at {at}: {_quote(span)} ({len(foreign)} characters of other scripts in all)"
    )
    return CheckResult("language", False, reason)


# --- length ----------------------------------------------------------------------------------


def length(r: Rationale, *, options: VerifyOptions | None = None) -> CheckResult:
    """Each stage and the whole text within the configured number of characters.

    Too short is a stage the teacher skipped in all but name; too long is usually a loop or
    pasted junk, and costs training context.

    >>> r = parse("<analysis>Brown.</analysis><prediction>Bengal</prediction>")
    >>> length(r, options=VerifyOptions(comparison_min_chars=0)).reason
    'analysis has 6 characters, under 100'
    """
    o = options or _DEFAULTS
    analysis = len(r.analysis) if r.analysis else 0
    comparison = len(r.comparison) if r.comparison else 0
    prediction = len(r.prediction) if r.prediction else 0
    total = len(r.raw_text)
    if (
        o.analysis_min_chars <= analysis <= o.analysis_max_chars
        and o.comparison_min_chars <= comparison <= o.comparison_max_chars
        and o.prediction_min_chars <= prediction <= o.prediction_max_chars
        and total <= o.max_total_chars
    ):  # the common case, in one format (the generation loop checks every response)
        return CheckResult(
            "length",
            True,
            f"analysis {analysis:,}, comparison {comparison:,}, prediction {prediction:,}, "
            f"{total:,} in all: within bounds",
        )
    problems = []
    for stage, size, low, high in (
        ("analysis", analysis, o.analysis_min_chars, o.analysis_max_chars),
        ("comparison", comparison, o.comparison_min_chars, o.comparison_max_chars),
        ("prediction", prediction, o.prediction_min_chars, o.prediction_max_chars),
    ):
        if size < low:
            problems.append(f"{stage} has {size:,} characters, under {low:,}")
        elif size > high:
            problems.append(f"{stage} has {size:,} characters, over {high:,}")
    if total > o.max_total_chars:
        problems.append(f"the whole text has {total:,} characters, over {o.max_total_chars:,}")
    return CheckResult("length", False, "; ".join(problems))


# --- one rationale ---------------------------------------------------------------------------


def verify_rationale(
    rationale: Rationale,
    *,
    truth: ClassInfo,
    matcher: ClassMatcher,
    options: VerifyOptions | None = None,
) -> list[CheckResult]:
    """Run every check on one parsed rationale, in the order of ``VERIFY_CHECKS``.

    Args:
        rationale: from :func:`cotforge.rationale.parse`.
        truth: the class the image shows, from ``matcher``'s dataset.
        matcher: the dataset's :class:`~cotforge.scoring.ClassMatcher`.
        options: bounds, extra leakage phrases, language and which checks are required.

    Returns:
        One :class:`CheckResult` per check; pass it to :func:`accepted` to decide.

    >>> m = ClassMatcher.for_dataset("pets")
    >>> r = parse("<analysis>Brown rosettes.</analysis>")
    >>> [c.name for c in verify_rationale(r, truth=m.annotations.by_name["Bengal"], matcher=m)]
    ['structure', 'correct', 'candidates', 'super_category', 'leakage', 'language', 'length']
    """
    if truth not in matcher:
        msg = (
            f"truth {truth.name!r} is not a class of {matcher.annotations.name}; pass the "
            "ClassInfo from the matcher's own annotations"
        )
        raise ValueError(msg)
    o = options or _DEFAULTS
    classes = _Classes(rationale, matcher, o.allow_missing_year)
    return [
        structure(rationale),
        _correct(classes, truth),
        _candidates(classes, truth),
        _super_category(classes, truth),
        *_text_checks(rationale, o),
    ]


def _text_checks(r: Rationale, options: VerifyOptions) -> list[CheckResult]:
    """The checks that need no true class (they still run when the class is unknown)."""
    return [
        leakage(r.raw_text, phrases=options.leakage_phrases),
        language(r.raw_text, language=options.language),
        length(r, options=options),
    ]


def accepted(results: Sequence[CheckResult], options: VerifyOptions | None = None) -> bool:
    """Whether every required check is among ``results`` and passed (a required check that did
    not run is not passed)."""
    passed = {result.name for result in results if result.passed}
    return passed.issuperset((options or _DEFAULTS).required)


# --- the store -------------------------------------------------------------------------------


@dataclass
class VerifySummary:
    """What one :func:`verify_store` call did: counts for the CLI table and for callers."""

    run_id: str | None
    verified: int = 0
    accepted: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    required: tuple[str, ...] = VERIFY_CHECKS

    def count(self, checks: CheckColumns) -> None:
        """Count one rationale's checks, accepted by the rule of :func:`accepted`."""
        names, passed, _ = checks
        passed_names = {name for name, ok in zip(names, passed, strict=True) if ok}
        self.verified += 1
        self.accepted += passed_names.issuperset(self.required)
        self.failed.update(name for name in names if name not in passed_names)

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order; a failure count per check, required or not."""
        rows: list[tuple[str, object]] = [
            ("rationales verified", self.verified),
            ("accepted (all required checks passed)", self.accepted),
        ]
        for name in VERIFY_CHECKS:
            note = "" if name in self.required else " (not required)"
            rows.append((f"failed {name}{note}", self.failed[name]))
        return rows


class _Truths:
    """The true class and matcher of each (dataset, class index), or why there is none.

    A store can hold rationales of images it does not know or of datasets without annotations;
    those become failing verdicts with the reason, so they are looked up once per pair."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str | None, int | None], tuple[ClassInfo, ClassMatcher] | str] = {}

    def get(self, dataset: str | None, index: int | None) -> tuple[ClassInfo, ClassMatcher] | str:
        key = (dataset, index)
        if key not in self._cache:
            self._cache[key] = self._find(dataset, index)
        return self._cache[key]

    @staticmethod
    def _find(dataset: str | None, index: int | None) -> tuple[ClassInfo, ClassMatcher] | str:
        if dataset is None or index is None:
            return "the rationale's image is not in the store's images, so its class is unknown"
        try:
            matcher = ClassMatcher.for_dataset(dataset)
        except CotforgeError as err:
            return f"no class list for dataset {dataset!r}: {err}"
        by_index = {info.index: info for info in matcher.annotations.classes}
        if index not in by_index:
            return f"class index {index} is not a class of {dataset}"
        return by_index[index], matcher


def _all_failed(reason: str) -> list[CheckResult]:
    return [CheckResult(name, False, reason) for name in VERIFY_CHECKS]


def _verify_record(
    text: str | None,
    dataset: str | None,
    class_index: int | None,
    truths: _Truths,
    options: VerifyOptions,
) -> list[CheckResult]:
    """The checks of one stored rationale; a record the checks cannot read fails them all."""
    if text is None:
        return _all_failed("no text: neither the rationale nor its request holds one")
    try:
        r = parse(text)
        found = truths.get(dataset, class_index)
        if isinstance(found, str):
            unknown = [CheckResult(name, False, found) for name in VERIFY_CHECKS[1:4]]
            return [structure(r), *unknown, *_text_checks(r, options)]
        truth, matcher = found
        return verify_rationale(r, truth=truth, matcher=matcher, options=options)
    except Exception as err:  # one unreadable record must not stop a run over 100k
        return _all_failed(f"the checks could not read this record ({type(err).__name__}: {err})")


# --- many rationales ------------------------------------------------------------------------

StoredText = tuple[str | None, str | None, int | None]
"""A stored rationale as the checks need it: its text, its image's dataset and class index."""

CheckColumns = tuple[tuple[str, ...], tuple[bool, ...], tuple[str, ...]]
"""One rationale's checks as (names, passed, reasons), the columns the verdicts table stores.
Worker processes send these: unpickling named tuples cost the receiving process, which also
writes the verdicts, 16 µs per rationale, against 2 µs for plain tuples."""

PARALLEL_FROM = 2000
"""From this many rationales :func:`verify_store` checks on every core by default: starting the
worker processes costs about half a second, what one core needs for some 1,500 rationales."""
_CHUNK = 256
_WORKER: dict[str, object] = {}  # a worker process's options and class lookups


def _columns(checks: Sequence[CheckResult]) -> CheckColumns:
    names, passed, reasons = zip(*checks, strict=True)
    return names, passed, reasons


def _start_checker(options: VerifyOptions) -> None:
    _WORKER.update(options=options, truths=_Truths())


def _check_chunk(chunk: list[StoredText]) -> list[CheckColumns]:
    options, truths = _WORKER["options"], _WORKER["truths"]
    assert isinstance(options, VerifyOptions) and isinstance(truths, _Truths)
    return [
        _columns(_verify_record(text, dataset, index, truths, options))
        for text, dataset, index in chunk
    ]


def _checked(
    records: Iterable[StoredText], options: VerifyOptions, workers: int
) -> Iterator[CheckColumns]:
    """:func:`verify_many` as :data:`CheckColumns`."""
    if workers <= 1:
        truths = _Truths()
        for text, dataset, index in records:
            yield _columns(_verify_record(text, dataset, index, truths, options))
        return
    yield from process_map(
        _check_chunk,
        records,
        workers=workers,
        chunk_size=_CHUNK,
        initializer=_start_checker,
        initargs=(options,),
    )


def verify_many(
    records: Iterable[StoredText], *, options: VerifyOptions | None = None, workers: int = 1
) -> Iterator[list[CheckResult]]:
    """The checks of each record, in order, on ``workers`` processes (1: this one).

    The checks are pure Python, so one process uses one core; on this project's 2-core
    machines two processes verify about 1.5 times as many rationales per second. Records are
    read lazily and a record the checks cannot read fails them all (see :func:`verify_store`).
    Raises :class:`~cotforge.process_map.WorkerDied` when a worker process is killed.
    """
    for names, passed, reasons in _checked(records, options or _DEFAULTS, workers):
        yield list(map(CheckResult, names, passed, reasons))


class _Verdicts:
    """A batch of verdict rows gathered as columns: with seven rows per rationale, a dict per
    row cost the writing process as much time as the store's insert."""

    def __init__(self) -> None:
        self.rationale_ids: list[str] = []
        self.names: list[str] = []
        self.passed: list[bool] = []
        self.reasons: list[str] = []

    def add(self, rationale_id: str, checks: CheckColumns) -> None:
        names, passed, reasons = checks
        self.rationale_ids.extend([rationale_id] * len(names))
        self.names.extend(names)
        self.passed.extend(passed)
        self.reasons.extend(reasons)

    def frame(self, *, required: Sequence[str], run_id: str) -> pl.DataFrame:
        """The rows of the ``verdicts`` table, ``required`` marking the checks that decide."""
        import polars as pl

        return pl.DataFrame(
            {
                "rationale_id": self.rationale_ids,
                "check_name": self.names,
                "passed": self.passed,
                "reason": self.reasons,
            },
            schema={
                "rationale_id": pl.String,
                "check_name": pl.String,
                "passed": pl.Boolean,
                "reason": pl.String,
            },
        ).with_columns(
            required=pl.col("check_name").is_in(list(required)), run_id=pl.lit(run_id)
        )


def verify_store(
    store: Store,
    *,
    options: VerifyOptions | None = None,
    only_new: bool = True,
    console: Console | None = None,
) -> VerifySummary:
    """Verify the store's rationales and write one verdict per check, in batches.

    With ``only_new`` the rationales that already have verdicts are skipped, so a run that was
    interrupted continues where it stopped (each batch is one transaction: a crash loses at
    most one) and a second run does nothing. Without it every rationale is verified again and
    its verdicts replaced, e.g. after changing ``required`` or the bounds. A run of kind
    ``verify`` records the options; none is recorded when there is nothing to verify. The
    checks run on ``options.workers`` processes, by default one per core from
    :data:`PARALLEL_FROM` rationales on.
    """
    o = options or _DEFAULTS
    todo = store.rationales_for_verify(only_unverified=only_new)
    summary = VerifySummary(run_id=None, required=tuple(o.required))
    if todo.height == 0:
        return summary
    workers = o.workers or (available_cores() if todo.height >= PARALLEL_FROM else 1)
    config = o.model_dump(mode="json") | {"only_new": only_new, "workers": workers}
    run_id = store.start_run("verify", config, {"cotforge": version("cotforge")})
    summary.run_id = run_id
    records = todo.select("raw_text", "dataset", "class_index").iter_rows()
    try:
        with (
            store.finishing(run_id),
            closing(_checked(records, o, workers)) as results,
            Progress(console=console, transient=True) as progress,
        ):
            task = progress.add_task("verifying rationales", total=todo.height)
            for batch in todo.iter_slices(o.batch_size):
                verdicts = _Verdicts()
                for rationale_id, checks in zip(
                    batch["rationale_id"].to_list(), islice(results, batch.height), strict=True
                ):
                    summary.count(checks)
                    verdicts.add(rationale_id, checks)
                store.upsert_verdicts(verdicts.frame(required=o.required, run_id=run_id))
                progress.advance(task, batch.height)
    except WorkerDied as err:
        msg = (
            f"a verify worker process died ({err}); the verdicts written before it are kept: "
            "run `cotforge verify` again to go on, with --workers 1 to check in one process "
            "if it happens again"
        )
        raise VerifyError(msg) from err
    return summary
