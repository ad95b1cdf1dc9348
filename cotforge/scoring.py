"""Decide whether an answer names a class: the one rule shared by verification, rewards and eval.

Three callers judge answers (the verifier checking a teacher's prediction, the TAPO accuracy
reward, the evaluation); if each had its own matching they would disagree on the same text, so
all of them go through :func:`score`. It is stricter than the released Fine-R1 reward, whose
substring test accepts "A or B or C": here an answer that names two classes of the dataset is
wrong even when one of them is right. :func:`text_inclusion` keeps the paper's lenient metric
for comparing numbers with the paper.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache

from cotforge.data.annotations import Annotations, ClassInfo, load_annotations
from cotforge.errors import ConfigError

_ANSWER_TAG = re.compile(r"<(\s{0,16}/)?\s{0,16}answer\s{0,16}>", re.IGNORECASE)
_POSSESSIVE = re.compile(r"['\u2019\u02bc`]s\b")
_APOSTROPHE = re.compile(r"['\u2019\u02bc`]")
_LEADING_ARTICLE = re.compile(r"^\W{0,16}(?:the|an?)\s+(?=[^\W\d_])")
_SEPARATOR = re.compile(r"[^\w\s]")  # and "_", replaced apart: one class makes a faster scan
_NOT_PLURAL = ("ss", "us", "is")
_YEAR = re.compile(r"^(?:19|20)\d\d$")
_TRAILING_YEAR = re.compile(r"\s+(?:19|20)\d\d\s*$")


def extract_answer(text: str | None) -> str | None:
    """The content of the last ``<answer>...</answer>``, stripped; None when there is none.

    The last one counts because a response may quote the format before giving its own answer.
    Tags may carry stray whitespace or capitals; an opening tag without a closing one is no
    answer (a truncated response has not answered). Runs in linear time on any input.

    >>> extract_answer("<think>...</think><answer> Boeing 737-800 </answer>")
    'Boeing 737-800'
    >>> extract_answer("<answer>A</answer> then < answer >B</ANSWER>")
    'B'
    >>> extract_answer("<think>no answer yet</think>") is None
    True
    """
    if not text:
        return None
    return last_answer(text, _ANSWER_TAG.finditer(text))


def last_answer(text: str, tags: Iterable[re.Match[str]]) -> str | None:
    """:func:`extract_answer` from the answer tags of ``text``, found already, in order: a
    match whose group 1 is set closes. For a parser that finds them in the same scan as other
    tags, rather than scanning the text once more."""
    last_open: re.Match[str] | None = None
    answer: str | None = None
    for tag in tags:
        if tag.group(1) is None:
            last_open = tag
        elif last_open is not None:
            answer = text[last_open.end() : tag.start()].strip()
            last_open = None
    return answer


def normalise(text: str) -> str:
    """Fold the surface differences that do not change which class a text names.

    Unicode NFKC, accents dropped, casefold; possessive "'s" and apostrophes removed
    ("Brewer's" = "Brewer"); other punctuation, underscores and hyphens become spaces; a leading
    article before a word goes ("An-12" and "an 12" keep theirs); whitespace collapses. A word
    longer than three letters loses a plural "s" unless it ends in "ss", "us" or "is"; both sides
    of every comparison go through here, so a folded singular ("Pyrenee") still matches.

    >>> normalise("The Boeing 737-800s")
    'boeing 737 800'
    >>> normalise("Harris's  Sparrow")
    'harris sparrow'
    >>> normalise("Bengals") == normalise("Bengal")
    True
    """
    if len(text) > _CACHED_CHARS:
        return _normalise(text)
    return _normalise_short(text)


_CACHED_CHARS = 200


@lru_cache(maxsize=16384)
def _normalise_short(text: str) -> str:
    """:func:`normalise`, cached for short texts: a verifier normalises each name, answer and
    prediction line several times over (to compare it, and to look up the classes it names),
    and the names of a dataset come back in rationale after rationale; a long text would only
    fill the cache."""
    return _normalise(text)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = unicodedata.normalize(
            "NFKC", "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        )
    text = text.casefold()
    # Verification normalises every new prediction line, so the common cases skip work: text
    # without an apostrophe skips both substitutions, and the article can only lead.
    if "'" in text or "\u2019" in text or "\u02bc" in text or "`" in text:
        text = _APOSTROPHE.sub("", _POSSESSIVE.sub("", text))
    article = _LEADING_ARTICLE.match(text)
    if article:
        text = text[article.end() :]
    text = _SEPARATOR.sub(" ", text).replace("_", " ")
    folded = [
        word[:-1] if len(word) > 3 and word[-1] == "s" and word[-2:] not in _NOT_PLURAL else word
        for word in text.split()
    ]
    return " ".join(folded)


def _has_year(words: Iterable[str]) -> bool:
    return any(_YEAR.match(word) for word in words)


_Phrase = tuple[str, ...]


def _phrase_index(phrases: Iterable[_Phrase]) -> dict[str, tuple[int, ...]]:
    """For each first word, the lengths of the phrases starting with it, longest first, so a
    scan makes one dictionary lookup per length instead of comparing every phrase."""
    lengths: dict[str, set[int]] = {}
    for phrase in phrases:
        lengths.setdefault(phrase[0], set()).add(len(phrase))
    return {word: tuple(sorted(sizes, reverse=True)) for word, sizes in lengths.items()}


def _outermost(spans: list[tuple[int, int, _Phrase]]) -> list[tuple[int, int, _Phrase]]:
    """Drop every span that lies inside another one ("Tree Sparrow" in "American Tree Sparrow").

    Sorted by start, then longest first, a span is contained in an earlier one exactly when some
    earlier span ends at or after its end.
    """
    kept = []
    reach = -1
    for start, end, phrase in sorted(spans, key=lambda span: (span[0], -span[1])):
        if end > reach:
            kept.append((start, end, phrase))
            reach = end
    return kept


def _find_phrases(
    words: list[str], phrases: Mapping[_Phrase, object], index: dict[str, tuple[int, ...]]
) -> list[_Phrase]:
    """Phrases occurring as whole words in ``words``, outermost only, in order of appearance."""
    spans = []
    for start, word in enumerate(words):
        for size in index.get(word, ()):
            phrase = tuple(words[start : start + size])
            if phrase in phrases:
                spans.append((start, start + size, phrase))
    return [phrase for _, _, phrase in _outermost(spans)]


class ClassMatcher:
    """Finds the classes of one dataset that a text names, by display name or alias.

    Raises :class:`~cotforge.errors.ConfigError` when two classes share a name or alias after
    normalisation, since no answer could then tell them apart.

    Names and aliases are compared after :func:`normalise`, as whole words. A mention inside a
    longer mention of another class is not counted ("Boeing 737-800" does not also name a
    "737-8"-like class). For names that end with a model year (Stanford Cars) the year may also
    come first ("2012 Toyota Corolla Sedan"), the way people write it.

    >>> matcher = ClassMatcher.for_dataset("cub")
    >>> [c.name for c in matcher.find("an American Tree Sparrow, not a Song Sparrow")]
    ['Tree Sparrow', 'Song Sparrow']
    """

    def __init__(self, annotations: Annotations) -> None:
        self.annotations = annotations
        self._by_phrase: dict[_Phrase, ClassInfo] = {}
        self._by_base: dict[_Phrase, list[ClassInfo]] = {}
        for info in annotations.classes:
            for surface in dict.fromkeys((info.name, *info.aliases)):
                phrase = tuple(normalise(surface).split())
                self._add(phrase, info)
                if _YEAR.match(phrase[-1]):
                    self._add((phrase[-1], *phrase[:-1]), info)
                    base = self._by_base.setdefault(phrase[:-1], [])
                    if info not in base:
                        base.append(info)
        self._index = _phrase_index(self._by_phrase)
        self._base_index = _phrase_index(self._by_base)
        self._classes = frozenset(annotations.classes)
        self._ids = frozenset(map(id, annotations.classes))
        self._year_suffixed = all(_TRAILING_YEAR.search(info.name) for info in annotations.classes)

    def _add(self, phrase: _Phrase, info: ClassInfo) -> None:
        if not phrase:
            msg = (
                f"class {info.name!r} in annotations/{self.annotations.name}/classes.jsonl has "
                "an empty name or alias; give it some text"
            )
            raise ConfigError(msg)
        other = self._by_phrase.setdefault(phrase, info)
        if other != info:
            msg = (
                f"annotations/{self.annotations.name}/classes.jsonl: {' '.join(phrase)!r} names "
                f"both {other.name!r} and {info.name!r}; remove the alias from one of them"
            )
            raise ConfigError(msg)

    @classmethod
    def for_dataset(cls, name: str) -> ClassMatcher:
        """The matcher of a dataset in ``annotations/``, built once per process."""
        return _matcher_for(name)

    @property
    def year_suffixed(self) -> bool:
        """Whether every class name ends with a model year (Stanford Cars)."""
        return self._year_suffixed

    def __contains__(self, info: object) -> bool:
        # By identity first: a ClassInfo hashes all its fields, in Python, on every call.
        return id(info) in self._ids or info in self._classes

    def find(self, text: str | None) -> list[ClassInfo]:
        """Every class the text names, each once, in order of first mention.

        >>> [c.name for c in ClassMatcher.for_dataset("aircraft").find("a 737-300 or 737-300")]
        ['Boeing 737-300']
        """
        if not text:
            return []
        found = _find_phrases(normalise(text).split(), self._by_phrase, self._index)
        return list(dict.fromkeys(self._by_phrase[phrase] for phrase in found))

    def find_without_year(self, text: str | None) -> list[list[ClassInfo]]:
        """For year-suffixed names: the models a text names with the year left out.

        Each item lists the classes (one per year) that share the model named; the text must
        contain no year at all, otherwise it names a year and :meth:`find` decides.

        >>> m = ClassMatcher.for_dataset("cars")
        >>> [[c.name for c in years] for years in m.find_without_year("a Toyota Corolla Sedan")]
        [['Toyota Corolla Sedan 2012']]
        """
        words = normalise(text).split() if text else []
        if _has_year(words):
            return []
        found = _find_phrases(words, self._by_base, self._base_index)
        return [self._by_base[phrase] for phrase in dict.fromkeys(found)]


@cache
def _matcher_for(name: str) -> ClassMatcher:
    return ClassMatcher(load_annotations(name))


@dataclass(frozen=True)
class Score:
    """The verdict on one answer: right or wrong, which classes it named, and why."""

    correct: bool
    named: tuple[str, ...]
    reason: str


def score(
    answer: str | None,
    truth: ClassInfo,
    matcher: ClassMatcher,
    *,
    allow_missing_year: bool = False,
) -> Score:
    """Whether ``answer`` names exactly the true class and no other class of the dataset.

    Args:
        answer: the answer text (see :func:`extract_answer`); None or blank is wrong.
        truth: the true class; must be one of ``matcher``'s dataset.
        matcher: the dataset's :class:`ClassMatcher`.
        allow_missing_year: for year-suffixed names (Stanford Cars), accept an answer with no
            year at all that names the true make, model and body type, provided that model has
            only one year among the classes (otherwise the answer does not say which class).

    Returns:
        A :class:`Score`; ``reason`` says in words why it is right or wrong.

    >>> m = ClassMatcher.for_dataset("aircraft")
    >>> truth = m.annotations.by_name["Boeing 737-300"]
    >>> score("Boeing 737-300", truth, m).correct
    True
    >>> score("Boeing 737-300 or Boeing 737-400", truth, m).reason
    'names 2 classes: Boeing 737-300, Boeing 737-400'
    """
    if truth not in matcher:
        msg = (
            f"truth {truth.name!r} is not a class of {matcher.annotations.name}; pass the "
            "ClassInfo from the same dataset's annotations"
        )
        raise ValueError(msg)
    if answer is None or not answer.strip():
        return Score(False, (), "empty answer")
    named = matcher.find(answer)
    if not named and allow_missing_year:
        return _score_without_year(answer, truth, matcher)
    names = tuple(info.name for info in named)
    if not named:
        return Score(False, (), f"names no class of {matcher.annotations.name}")
    if len(named) > 1:
        return Score(False, names, f"names {len(named)} classes: {', '.join(names)}")
    if named[0] != truth:
        return Score(False, names, f"names {names[0]}, not the true {truth.name}")
    return Score(True, names, "names the true class")


def _score_without_year(answer: str, truth: ClassInfo, matcher: ClassMatcher) -> Score:
    models = matcher.find_without_year(answer)
    if not models:
        return Score(False, (), f"names no class of {matcher.annotations.name}")
    if len(models) > 1:
        names = tuple(_TRAILING_YEAR.sub("", years[0].name) for years in models)
        return Score(False, names, f"names {len(models)} models: {', '.join(names)}")
    years = models[0]
    names = tuple(info.name for info in years)
    if len(years) > 1:
        return Score(False, names, f"no year, and the model has {len(years)}: {', '.join(names)}")
    if years[0] != truth:
        return Score(False, names, f"names {names[0]} (no year), not the true {truth.name}")
    return Score(True, names, "names the true class (no year, allowed)")


def text_inclusion(answer: str | None, truth_name: str, *, dataset: str) -> bool:
    """The paper's lenient metric: the lower-cased truth is a substring of the lower-cased answer.

    Kept only to compare with the paper's numbers; it accepts answers listing several classes.
    For year-suffixed datasets (Stanford Cars) the year is dropped from the truth first, as the
    released evaluation script does.

    >>> text_inclusion("It is a Boeing 737-300 or 737-400", "Boeing 737-300", dataset="aircraft")
    True
    >>> text_inclusion("Acura TL Type-S", "Acura TL Type-S 2008", dataset="cars")
    True
    """
    year_suffixed = ClassMatcher.for_dataset(dataset).year_suffixed
    if not answer:
        return False
    if year_suffixed:
        truth_name = _TRAILING_YEAR.sub("", truth_name)
    return truth_name.lower() in answer.lower()
