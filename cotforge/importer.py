"""``cotforge import``: bring an existing chain-of-thought dataset into the store.

Data made elsewhere (the Fine-R1 release, another team's JSONL) is worth verifying, deduplicating,
reviewing and exporting exactly like generated data, so each record becomes an ``images`` row and
a ``rationales`` row whose stages are parsed with :func:`cotforge.rationale.parse`. Two shapes are
read, recognised by content rather than by file extension:

- LLaMA-Factory "sharegpt": a JSON list (or JSON Lines) of ``{"messages": [...], "images":
  [path]}``; the label is the assistant turn's ``<answer>`` and the rationale is the whole
  assistant turn. The ``conversations``/``from``/``value`` spelling is read as well.
- plain JSON Lines (or a JSON list) of ``{"image": path, "label": name, "rationale": text}``, the
  rationale in the headed or the tagged format.

Imports are idempotent: a rationale's id hashes (dataset, image path, text), so importing a file
twice, or again after a crash, adds only what is missing. A bad record never stops the import: it
is skipped with "record N: why" (or "line N: why" in JSON Lines) and counted by reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from cotforge.data.annotations import ClassInfo, load_annotations
from cotforge.data.registry import canonical_name, dataset_names
from cotforge.errors import ConfigError
from cotforge.rationale import parse
from cotforge.scoring import ClassMatcher, extract_answer

if TYPE_CHECKING:
    from rich.console import Console

    from cotforge.store import Store

SPLIT = "import"
"""The ``images.split`` of imported images; their ids are ``<dataset>/import/<path>``."""

_SHOWN_REASONS = 10
_SNIFF_LINES = 20

# Folder names that say which dataset an image path belongs to: the Fine-R1 release's image
# roots and the official archives' top folders. Matched against each folder of the path.
_PATH_DATASETS = (
    ("aircraft", re.compile(r"^fgvc[-_]aircraft", re.IGNORECASE)),
    ("cars", re.compile(r"^stanford[-_]cars", re.IGNORECASE)),
    ("dogs", re.compile(r"^(?:dogs_120|stanford[-_]dogs)", re.IGNORECASE)),
    ("cub", re.compile(r"^(?:bird_200|cub(?:$|[-_]))", re.IGNORECASE)),
    ("pets", re.compile(r"^oxford[-_](?:iiit[-_])?pets?(?:$|[-_])", re.IGNORECASE)),
    ("flowers", re.compile(r"^(?:flowers?[-_]?102|102flowers|oxford[-_]flowers)", re.IGNORECASE)),
)
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: counts for the summary table, and the first reasons records were
    skipped for, so a user can fix the file without reading a log."""

    run_id: str
    records: int
    imported: int
    already_present: int
    skipped: dict[str, int]
    reasons: tuple[str, ...]
    missing_images: int
    image_root: str
    datasets: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        """Records not imported because they were malformed or named no class."""
        return sum(self.skipped.values())

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order, the skip reasons last."""
        rows: list[tuple[str, object]] = [
            ("records read", self.records),
            ("imported", self.imported),
            ("already in the store", self.already_present),
            ("skipped", self.skipped_total),
        ]
        rows += [(f"skipped: {why}", n) for why, n in sorted(self.skipped.items())]
        rows += [(f"records of {name}", n) for name, n in sorted(self.datasets.items())]
        rows.append((f"images not found under {self.image_root}", self.missing_images))
        rows += [("skip reason", reason) for reason in self.reasons]
        return rows


class _Skip(Exception):
    """A record that cannot be imported; ``category`` is what the summary counts it under."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


@dataclass(frozen=True)
class _Entry:
    """One importable record: where it was in the file, its class and its rationale text."""

    where: str
    dataset: str
    info: ClassInfo
    key: str
    text: str

    @property
    def image_id(self) -> str:
        return f"{self.dataset}/{SPLIT}/{self.key}"


def import_file(
    store: Store,
    path: Path | str,
    *,
    image_root: Path | str | None = None,
    dataset: str | None = None,
    batch_size: int = 500,
    console: Console | None = None,
) -> ImportSummary:
    """Import the records of ``path`` into ``store`` in one run of kind ``import``.

    Args:
        store: the store to write to.
        path: a JSON list or JSON Lines file of sharegpt or ``image``/``label``/``rationale``
            records.
        image_root: the folder relative image paths resolve against, to check the images exist
            (default: the file's folder). Paths are stored as given, never made absolute.
        dataset: the dataset of every record; by default inferred from the image path's folders,
            else from the one dataset that has a class named by the label.
        batch_size: records written per transaction; a crash loses at most one batch, which a
            rerun imports.
        console: where to show progress; None shows none.

    Raises:
        ConfigError: the file does not exist, is empty, or is not JSON / JSON Lines at all; or
            ``image_root`` is not a folder.
        UnknownDatasetError: ``dataset`` is not a dataset name.
    """
    if batch_size < 1:
        msg = f"batch_size must be at least 1; got {batch_size}"
        raise ValueError(msg)
    source = Path(path)
    forced = canonical_name(dataset) if dataset else None
    root = Path(image_root) if image_root is not None else source.parent
    if image_root is not None and not root.is_dir():
        msg = f"--image-root {root} is not a folder; pass the folder the image paths start from"
        raise ConfigError(msg)
    records, total = _open_records(source)
    config = {
        "file": str(path),
        "sha256": _file_digest(source),
        "image_root": None if image_root is None else str(image_root),
        "resolved_image_root": str(root.resolve()),
        "dataset": forced,
        "batch_size": batch_size,
    }
    run_id = store.start_run("import", config, {"cotforge": version("cotforge")})
    writer = _Writer(store, root=root, run_id=run_id)
    try:
        with Progress(console=console, transient=True, disable=console is None) as progress:
            task = progress.add_task(f"importing {source.name}", total=total)
            batch: list[_Entry] = []
            for where, record in records:
                writer.records += 1
                try:
                    if isinstance(record, _Skip):
                        raise record
                    batch.append(_entry(where, record, forced))
                except _Skip as skip:
                    writer.skip(skip)
                if len(batch) >= batch_size:
                    writer.write(batch)
                    batch = []
                progress.advance(task)
            writer.write(batch)
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        store.finish_run(run_id, status)
        raise
    store.finish_run(run_id, "ok")
    return writer.summary(run_id)


class _Writer:
    """Writes batches of entries and keeps the counts the summary reports."""

    def __init__(self, store: Store, *, root: Path, run_id: str) -> None:
        self.store = store
        self.root = root
        self.run_id = run_id
        self.records = 0
        self.written = 0
        self.imported = 0
        self.skipped: Counter[str] = Counter()
        self.reasons: list[str] = []
        self.datasets: Counter[str] = Counter()
        self.missing: set[str] = set()
        self._checked: set[str] = set()
        self._classes: dict[str, int] = {}

    def skip(self, skip: _Skip) -> None:
        self.skipped[skip.category] += 1
        if len(self.reasons) < _SHOWN_REASONS:
            self.reasons.append(skip.detail)

    def write(self, batch: list[_Entry]) -> None:
        """Write one batch in one transaction, skipping images already imported as another
        class (the images row keeps its first class, so the rationale would be judged against
        the wrong label)."""
        if not batch:
            return
        new_ids = sorted({e.image_id for e in batch} - self._classes.keys())
        if new_ids:
            stored = self.store.table("images", where={"image_id": new_ids})
            self._classes.update(zip(stored["image_id"], stored["class_index"], strict=True))
        images: dict[str, dict[str, Any]] = {}
        rationales: list[dict[str, Any]] = []
        for entry in batch:
            known = self._classes.setdefault(entry.image_id, entry.info.index)
            if known != entry.info.index:
                name = load_annotations(entry.dataset).classes[known].name
                self.skip(
                    _Skip(
                        "conflicting label",
                        f"{entry.where}: image {entry.key!r} was imported as {name!r}, this "
                        f"record says {entry.info.name!r}",
                    )
                )
                continue
            self._check_image(entry.key)
            self.datasets[entry.dataset] += 1
            images[entry.image_id] = {
                "image_id": entry.image_id,
                "dataset": entry.dataset,
                "split": SPLIT,
                "key": entry.key,
                "class_index": entry.info.index,
                "label": entry.info.label,
                "class_name": entry.info.name,
            }
            rationales.append(self._rationale_row(entry))
        with self.store.transaction():
            self.store.add_images(list(images.values()))
            self.imported += self.store.add_rationales(rationales)
        self.written += len(rationales)

    def _rationale_row(self, entry: _Entry) -> dict[str, Any]:
        parsed = parse(entry.text)
        return {
            "rationale_id": rationale_id(entry.dataset, entry.key, entry.text),
            "request_id": None,
            "sample_id": entry.image_id,
            "raw_text": entry.text,
            "analysis": parsed.analysis,
            "candidates": list(parsed.candidates),
            "comparison": parsed.comparison,
            "prediction": parsed.prediction,
            "run_id": self.run_id,
        }

    def _check_image(self, key: str) -> None:
        if key not in self._checked:
            self._checked.add(key)
            if not (self.root / key).is_file():
                self.missing.add(key)

    def summary(self, run_id: str) -> ImportSummary:
        return ImportSummary(
            run_id=run_id,
            records=self.records,
            imported=self.imported,
            already_present=self.written - self.imported,
            skipped=dict(self.skipped),
            reasons=tuple(self.reasons),
            missing_images=len(self.missing),
            image_root=str(self.root),
            datasets=dict(self.datasets),
        )


def rationale_id(dataset: str, key: str, text: str) -> str:
    """The id of an imported rationale: the same record imported twice gets the same id.

    >>> rationale_id("cub", "a.jpg", "text") == rationale_id("cub", "a.jpg", "text")
    True
    >>> len(rationale_id("cub", "a.jpg", "text"))
    32
    """
    parts = json.dumps([dataset, key, text], ensure_ascii=False)  # unambiguous joining
    return hashlib.sha256(parts.encode("utf-8")).hexdigest()[:32]


# --- reading the file ----------------------------------------------------------------------------

Record = tuple[str, Any]
"""(where in the file, parsed JSON value or the _Skip that reading it raised)."""


def _open_records(path: Path) -> tuple[Iterator[Record], int | None]:
    """The file's records and how many there are (None for JSON Lines, read lazily).

    Raises :class:`ConfigError` for a file that is missing, empty or not JSON / JSON Lines, so
    no run is recorded for a file that has nothing to import.
    """
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except FileNotFoundError:
        msg = f"{path} does not exist; pass the path of a JSON or JSON Lines file"
        raise ConfigError(msg) from None
    except IsADirectoryError:
        msg = f"{path} is a folder; pass the path of a JSON or JSON Lines file"
        raise ConfigError(msg) from None
    except OSError as err:
        msg = f"{path} cannot be read ({err.strerror}); check its permissions"
        raise ConfigError(msg) from None
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not start:
        msg = f"{path} is empty; pass a JSON list of records or a JSON Lines file"
        raise ConfigError(msg)
    if start.startswith(b"["):
        records = _json_list(path)
        return iter(records), len(records)
    if not _looks_like_jsonl(path):
        msg = (
            f"{path} is neither a JSON list of records nor JSON Lines (none of its first "
            f"{_SNIFF_LINES} lines is a JSON object); pass a .json or .jsonl file of records"
        )
        raise ConfigError(msg)
    return _json_lines(path), None


def _file_digest(path: Path) -> str:
    """sha256 of the file, recorded with the run so an import names exactly what it read."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_list(path: Path) -> list[Record]:
    """The elements of a JSON list, read one at a time so a syntax error keeps what came before.

    Invalid UTF-8 bytes are carried as surrogate escapes, so only the records that contain them
    are skipped (see :func:`_text`). After a syntax error the rest of the file cannot be split
    into records; it is reported as one skipped entry naming the line.
    """
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    decoder = json.JSONDecoder()
    records: list[Record] = []
    position = _skip_space(text, text.index("[") + 1)
    if text.startswith("]", position):
        return _trailing(text, position + 1, after=0)
    while True:
        where = f"record {len(records) + 1}"
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            if not records:
                msg = (
                    f"{path} is not valid JSON ({err.msg} at line {err.lineno} column "
                    f"{err.colno}); pass a JSON list of records or a JSON Lines file"
                )
                raise ConfigError(msg) from None
            detail = (
                f"{where} (line {err.lineno}): invalid JSON ({err.msg}); the rest of the file "
                "could not be read"
            )
            records.append((where, _Skip("invalid JSON", detail)))
            return records
        records.append((where, value))
        position = _skip_space(text, position)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif text.startswith("]", position):
            return records + _trailing(text, position + 1, after=len(records))
        else:
            line = text.count("\n", 0, position) + 1
            detail = f"after record {len(records)} (line {line}): expected ',' or ']'"
            records.append((f"record {len(records) + 1}", _Skip("invalid JSON", detail)))
            return records


def _trailing(text: str, position: int, *, after: int) -> list[Record]:
    """A skip for anything but whitespace after the list's closing bracket (a second list
    appended to the file, say), which would otherwise be silently ignored."""
    rest = _skip_space(text, position)
    if rest == len(text):
        return []
    line = text.count("\n", 0, rest) + 1
    detail = f"after record {after} (line {line}): text after the closing ']' was not read"
    return [(f"record {after + 1}", _Skip("invalid JSON", detail))]


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _looks_like_jsonl(path: Path) -> bool:
    """Whether one of the first non-blank lines is a JSON object (the rest may be malformed)."""
    seen = 0
    with path.open("rb") as file:
        for raw in file:
            line = raw.removeprefix(b"\xef\xbb\xbf").strip()
            if not line:
                continue
            try:
                if isinstance(json.loads(line), dict):
                    return True
            except (UnicodeDecodeError, json.JSONDecodeError):
                pass
            seen += 1
            if seen >= _SNIFF_LINES:
                break
    return False


def _json_lines(path: Path) -> Iterator[Record]:
    """One record per non-blank line; bad lines become skips naming their line number."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            where = f"line {number}"
            if not raw.strip():
                continue
            try:
                line = raw.rstrip(b"\r\n").decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield where, _Skip("invalid UTF-8", f"{where}: invalid UTF-8 at byte {err.start}")
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                detail = f"{where}: invalid JSON ({err.msg} at column {err.colno})"
                yield where, _Skip("invalid JSON", detail)


# --- one record ----------------------------------------------------------------------------------


def _entry(where: str, record: Any, forced: str | None) -> _Entry:
    """Validate one record and find its dataset and class; raises :class:`_Skip` with why not."""
    if not isinstance(record, dict):
        raise _Skip("not an object", f"{where}: expected a JSON object; got {_kind(record)}")
    if "messages" in record or "conversations" in record:
        image, label, text = _sharegpt_fields(where, record)
    elif record.keys() & {"image", "label", "rationale"}:
        image = _text(where, record, "image")
        label = _text(where, record, "label")
        text = _text(where, record, "rationale")
    else:
        raise _Skip(
            "missing keys",
            f"{where}: has keys {sorted(record)[:6]}; expected messages + images (sharegpt) or "
            "image + label + rationale",
        )
    if not text.strip():
        raise _Skip("empty rationale", f"{where}: the rationale is empty")
    if not label.strip():
        raise _Skip("empty label", f"{where}: the label is empty")
    key = _image_key(where, image)
    dataset = forced or _dataset_from_path(key) or _dataset_from_label(where, label)
    return _Entry(where, dataset, _class_of(where, label, dataset), key, text)


def _sharegpt_fields(where: str, record: dict[str, Any]) -> tuple[str, str, str]:
    """(image, label, rationale) of a sharegpt record: its one image, the last assistant turn's
    ``<answer>`` and that whole turn."""
    name = "messages" if "messages" in record else "conversations"
    messages = record[name]
    if not isinstance(messages, list):
        raise _Skip("wrong type", f"{where}: {name} must be a list; got {_kind(messages)}")
    turn = None
    for message in messages:
        if not isinstance(message, dict):
            raise _Skip("wrong type", f"{where}: a turn in {name} is not a JSON object")
        role = message.get("role", message.get("from"))
        if _ROLES.get(role) == "assistant":
            turn = message
    if turn is None:
        raise _Skip("missing keys", f"{where}: no assistant turn in {name}")
    text = _text(where, turn, "content" if "content" in turn else "value")
    label = extract_answer(text)
    if not label:
        raise _Skip("no answer", f"{where}: the assistant turn has no <answer>...</answer>")
    images = record.get("images")
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise _Skip("wrong type", f"{where}: images must be a list of paths")
    if len(images) != 1:
        raise _Skip("image count", f"{where}: has {len(images)} images; one is needed")
    return _checked_text(where, "images", images[0]), label, text


def _text(where: str, record: dict[str, Any], name: str) -> str:
    """A string field, present and valid Unicode; raises :class:`_Skip` otherwise."""
    if name not in record:
        raise _Skip("missing keys", f"{where}: no {name!r}")
    value = record[name]
    if not isinstance(value, str):
        raise _Skip("wrong type", f"{where}: {name} must be a string; got {_kind(value)}")
    return _checked_text(where, name, value)


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages about a record's shape."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _checked_text(where: str, name: str, value: str) -> str:
    """``value`` unless it holds invalid UTF-8 (read as surrogate escapes) or an unpaired
    surrogate escape, which the store cannot hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _Skip("invalid UTF-8", f"{where}: invalid UTF-8 in {name} at {err.start}") from None
    return value


def _image_key(where: str, image: str) -> str:
    """The image path as given, with POSIX separators and no "." segments; absolute paths are
    refused because a store must not depend on one machine's folders."""
    if not image.strip():
        raise _Skip("missing keys", f"{where}: the image path is empty")
    posix = image.strip().replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:/", posix):
        raise _Skip(
            "absolute path",
            f"{where}: image path {image!r} is absolute; make paths relative to --image-root",
        )
    return PurePosixPath(posix).as_posix()


def _dataset_from_path(key: str) -> str | None:
    """The dataset a folder of the path names (``bird_200/...`` -> cub), if any."""
    for folder in PurePosixPath(key).parts[:-1]:
        for name, pattern in _PATH_DATASETS:
            if pattern.match(folder):
                return name
    return None


def _classes_named(label: str, dataset: str) -> list[ClassInfo]:
    """Classes of ``dataset`` the label names: its official label string, else names/aliases."""
    exact = load_annotations(dataset).by_label.get(label)
    return [exact] if exact else ClassMatcher.for_dataset(dataset).find(label)


def _dataset_from_label(where: str, label: str) -> str:
    """The one dataset with exactly one class named by ``label``."""
    found = [name for name in dataset_names() if len(_classes_named(label, name)) == 1]
    if len(found) == 1:
        return found[0]
    if found:
        raise _Skip(
            "ambiguous dataset",
            f"{where}: ambiguous dataset (label {label!r} is a class of {' and '.join(found)}); "
            "pass --dataset",
        )
    raise _Skip(
        "unknown label",
        f"{where}: label {label!r} names no class of any dataset and the image path names no "
        "dataset; pass --dataset or fix the label",
    )


def _class_of(where: str, label: str, dataset: str) -> ClassInfo:
    """The one class of ``dataset`` the label names."""
    named = _classes_named(label, dataset)
    if len(named) == 1:
        return named[0]
    if not named:
        raise _Skip("unknown label", f"{where}: label {label!r} names no class of {dataset}")
    raise _Skip(
        "ambiguous label",
        f"{where}: label {label!r} names {len(named)} classes of {dataset}: "
        + ", ".join(info.name for info in named),
    )
