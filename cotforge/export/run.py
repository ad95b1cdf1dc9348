"""``cotforge export``: write the curated records as a Hugging Face dataset folder (or the
LLaMA-Factory layout), record which record went where, and optionally push it to the Hub.

In order, so that a failure leaves nothing behind:

1. check ``--out`` (empty, or an earlier export with ``--overwrite``), find each dataset's
   folder, list every config's rows and the images they embed; stop with a clear message when
   there is nothing to export or an image is missing;
2. write everything into a temporary folder next to ``--out``: shards streamed row group by
   row group, images read and encoded in worker threads, then the card;
3. in one store transaction, record every row (``exports``: config, split, shard, row index,
   rationale and sample) and move the folder into place; a failure before that removes the
   temporary folder and marks the run failed;
4. push the finished folder when ``--push-to-hub`` is given.

The output names images by dataset-relative ids and holds no time stamp, so exporting the same
store twice gives byte-identical folders.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cotforge.data.registry import canonical_name, get_source
from cotforge.errors import ConfigError, ExportError
from cotforge.export.card import GENERATOR_LINE, ConfigFacts, Recipe, SplitFacts, render_card
from cotforge.export.features import config_features
from cotforge.export.images import ImageFiles, ImageRef, ordered_map
from cotforge.export.llamafactory import DATA_FILE, LlamaFactoryWriter
from cotforge.export.rows import (
    Catalog,
    ConfigRows,
    Questions,
    Row,
    eval_config_rows,
    sft_rows,
    tapo_rows,
)
from cotforge.export.shards import Shard, ShardWriter
from cotforge.prompts import load_prompt

if TYPE_CHECKING:
    from rich.console import Console

    from cotforge.config import ExportOptions
    from cotforge.store import Store


@dataclass
class ExportSummary:
    """What an export wrote, for the closing table and for callers."""

    run_id: str
    out: Path
    configs: list[ConfigFacts]
    file_bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    url: str | None = None

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order."""
        rows: list[tuple[str, object]] = [("folder", self.out)]
        for config in self.configs:
            for split in config.splits:
                rows.append((f"{config.name} {split.name} rows", split.rows))
            if config.left_out:
                rows.append(
                    (f"{config.name} records left out (see README.md)", len(config.left_out))
                )
        rows += [
            ("bytes written", f"{self.file_bytes:,}"),
            ("MB/s", f"{self.file_bytes / 1e6 / max(self.seconds, 1e-9):.1f}"),
            ("wall time (s)", f"{self.seconds:.1f}"),
        ]
        if self.url:
            rows.append(("pushed to", self.url))
        return rows


def run_export(
    store: Store, options: ExportOptions, *, console: Console | None = None
) -> ExportSummary:
    """Export the store's curated records as ``options`` say; see the module docstring."""
    started = time.perf_counter()
    out = options.out.expanduser()
    _check_out(out, overwrite=options.overwrite)
    notes: list[str] = []
    names = list(options.configs)
    if options.format == "llamafactory" and names != ["sft"]:
        if "sft" not in names:
            msg = "--format llamafactory writes the sft config only; pass --configs sft"
            raise ConfigError(msg)
        notes.append(f"--format llamafactory holds sft only; left out {', '.join(names[1:])}")
        names = ["sft"]
    catalog = build_catalog(store, options)
    planned = _plan_configs(store, names, catalog=catalog, options=options)
    chosen = [config for config in planned if config.selected]
    if not chosen:
        raise ExportError(_nothing_to_export(store, planned, options))
    notes += [f"{c.name}: nothing to export, left out" for c in planned if not c.selected]
    refs = [ref for config in chosen for ref in config.images]
    _check_roots(catalog, refs)
    files = ImageFiles(catalog.sources, catalog.import_roots)
    files.check_present(refs)
    del refs
    for config in chosen:
        config.images.clear()  # checked; rows carry their own references

    run_id = store.start_run("export", options.model_dump(mode="json"), {"cotforge": _version()})
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a dataset folder is meant to be shared
        facts, placed = _write_all(chosen, staging, files=files, options=options, console=console)
        written = [config for config in facts if config.rows]
        if not written:
            raise ExportError(
                "nothing to export: every selected record failed to render as a training "
                "target; run `cotforge verify` again and look at the failing rationales"
            )
        recipe = _recipe(store, options, facts=written, sample_ids=placed.sample_ids)
        card = render_card(written, recipe, parquet=options.format == "hf")
        (staging / "README.md").write_text(card, encoding="utf-8")
        file_bytes = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file())
        with store.transaction():
            store.add_exports(placed.frame(run_id, [config.name for config in written]))
            store.finish_run(run_id, "ok")
            _move_into_place(staging, out)
    except KeyboardInterrupt:
        shutil.rmtree(staging, ignore_errors=True)
        store.finish_run(run_id, "interrupted")
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        store.finish_run(run_id, "failed")
        raise
    summary = ExportSummary(
        run_id=run_id,
        out=out,
        configs=written,
        file_bytes=file_bytes,
        seconds=time.perf_counter() - started,
        notes=notes,
    )
    if options.push_to_hub:
        from cotforge.hub import push_folder

        summary.url = push_folder(
            out,
            options.push_to_hub,
            private=options.private,
            token=None,
            commit_message="cotforge export: "
            + ", ".join(f"{config.name} {config.rows} rows" for config in written),
            console=console,
        )
    return summary


# --- before writing ---------------------------------------------------------------------------


def _check_out(out: Path, *, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder without ``--overwrite``, or
    (even with it) a folder that no cotforge export wrote: overwriting deletes it."""
    if not out.exists():
        return
    if not out.is_dir():
        msg = f"--out {out} is a file; pass a folder (new or empty)"
        raise ExportError(msg)
    if not any(out.iterdir()):
        return
    if not overwrite:
        msg = f"--out {out} is not empty; pass --overwrite to replace it, or choose a new folder"
        raise ExportError(msg)
    card = out / "README.md"
    ours = card.is_file() and GENERATOR_LINE in card.read_text(encoding="utf-8", errors="replace")
    if not ours:
        msg = (
            f"--out {out} holds files that cotforge export did not write (no cotforge "
            f"README.md); --overwrite replaces only an earlier export: choose another folder"
        )
        raise ExportError(msg)


def build_catalog(store: Store, options: ExportOptions) -> Catalog:
    """Each dataset of the store over its folder on this machine: ``--root`` when given, else
    where its latest plan (or import) found it."""
    names = store.image_datasets()
    roots = {
        key if key == "*" else canonical_name(key): path for key, path in options.roots.items()
    }
    bare = roots.pop("*", None)
    if bare is not None and len(names) > 1:
        msg = (
            f"a --root without NAME= applies to one dataset, and the store has {', '.join(names)}; "
            f"pass --root NAME=FOLDER for each"
        )
        raise ConfigError(msg)
    unknown = sorted(set(roots) - set(names))
    if unknown:
        msg = (
            f"--root names {', '.join(unknown)}, which the store has no images of; "
            f"its datasets are {', '.join(names) or 'none'}"
        )
        raise ConfigError(msg)
    catalog = Catalog(sources={}, import_roots={}, plans={})
    for name in names:
        plan = store.latest_plan(name)
        if plan is not None:
            catalog.plans[name] = plan
        imported = store.latest_import_root(name)
        given = roots.get(name) or bare
        root = given or (plan or {}).get("root") or imported
        if root is None:
            catalog.unrooted.add(name)
            root = "."
        catalog.sources[name] = get_source(name, Path(root))
        if given or imported:
            catalog.import_roots[name] = Path(given or imported)  # type: ignore[arg-type]
    return catalog


def _plan_configs(
    store: Store, names: Sequence[str], *, catalog: Catalog, options: ExportOptions
) -> list[ConfigRows]:
    questions = Questions(store.question_answers(), catalog)
    planned = []
    for name in names:
        if name == "sft":
            system = load_prompt("system", options.prompts_dir).render()
            planned.append(
                sft_rows(
                    store,
                    review=options.review,
                    catalog=catalog,
                    questions=questions,
                    system_prompt=system,
                )
            )
        elif name == "tapo":
            planned.append(tapo_rows(store, catalog=catalog, questions=questions))
        else:
            named = {canonical_name(n) for n in options.roots if n != "*"}
            if "*" in options.roots:
                named |= set(catalog.sources)
            datasets = sorted(set(catalog.plans) | named)
            planned.append(
                eval_config_rows(
                    datasets,
                    catalog=catalog,
                    seed=options.seed,
                    paper=options.eval_source == "paper",
                    manifests=options.eval_manifests,
                    per_class=options.eval_per_class,
                )
            )
    return planned


def _nothing_to_export(store: Store, planned: Sequence[ConfigRows], options: ExportOptions) -> str:
    figures = store.stats()
    reasons = []
    for config in planned:
        if config.name == "sft":
            reasons.append(
                f"sft: none of the store's {figures['rationales']} rationales passes curation "
                f"({figures['accepted']} pass their required checks and dedup; review policy "
                f"{options.review!r}); run `cotforge generate` / `verify` first"
            )
        elif config.name == "tapo":
            reasons.append("tapo: no triplets of seen classes are planned; run `cotforge plan`")
        else:
            reasons.append("eval: no dataset has a plan or a --root; run `cotforge plan`")
    return "nothing to export, nothing written: " + "; ".join(reasons)


def _check_roots(catalog: Catalog, refs: Sequence[ImageRef]) -> None:
    needed = sorted({ref.dataset for ref in refs} & catalog.unrooted)
    if needed:
        msg = (
            f"no folder is known for dataset {needed[0]} (it has no plan or import); "
            f"pass --root {needed[0]}=FOLDER"
        )
        raise ConfigError(msg)


# --- writing ----------------------------------------------------------------------------------


def _encode(files: ImageFiles, row: Row) -> tuple[Row, dict[str, Any]]:
    """The row's values with each :class:`ImageRef` replaced by its encoded image (run in a
    worker thread)."""
    values = {}
    for name, value in row.values.items():
        if isinstance(value, ImageRef):
            value = files.encoded(value)
        elif isinstance(value, list) and value and isinstance(value[0], ImageRef):
            value = [files.encoded(ref) for ref in value]
        values[name] = value
    return row, values


class Placements:
    """Where each written row went, kept column by column (an export can have millions of
    rows) until the store records them as ``exports`` rows."""

    def __init__(self) -> None:
        self._columns: dict[str, list[Any]] = {
            name: [] for name in ("config", "split", "number", "row_index", "rationale_id")
        }
        self._columns["sample_id"] = []
        self._paths: dict[tuple[str, str, int], str] = {}

    def add(self, config: str, row: Row, number: int, index: int) -> None:
        """Row ``row`` of ``config`` went into shard ``number`` of its split, at ``index``."""
        for name, value in zip(
            self._columns,
            (config, row.split, number, index, row.rationale_id, row.sample_id),
            strict=True,
        ):
            self._columns[name].append(value)

    def name_shards(self, config: str, split: str, paths: Sequence[str]) -> None:
        """The relative paths of the split's shards, by shard number."""
        for number, path in enumerate(paths):
            self._paths[(config, split, number)] = path

    @property
    def sample_ids(self) -> set[str]:
        return set(self._columns["sample_id"])

    def frame(self, export_id: str, configs: Sequence[str]) -> pl.DataFrame:
        """The ``exports`` rows of ``configs``."""
        c = self._columns
        shards = [
            self._paths[key] for key in zip(c["config"], c["split"], c["number"], strict=True)
        ]
        frame = pl.DataFrame(
            {
                "config": c["config"],
                "split": c["split"],
                "shard": shards,
                "row_index": c["row_index"],
                "rationale_id": c["rationale_id"],
                "sample_id": c["sample_id"],
            },
            schema_overrides={"row_index": pl.Int32, "rationale_id": pl.String},
        )
        return frame.filter(pl.col("config").is_in(list(configs))).with_columns(
            export_id=pl.lit(export_id)
        )


def _write_all(
    configs: Sequence[ConfigRows],
    staging: Path,
    *,
    files: ImageFiles,
    options: ExportOptions,
    console: Console | None,
) -> tuple[list[ConfigFacts], Placements]:
    """Write every config into ``staging``; returns their facts and where each row went."""
    facts: list[ConfigFacts] = []
    placed = Placements()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=console is None) as progress:
        for config in configs:
            task = progress.add_task(f"export {config.name}", total=config.selected)
            rows = ordered_map(partial(_encode, files), config.rows(), workers=options.workers)
            counts: Counter[tuple[str, str, str]] = Counter()

            def counted(row: Row, task: Any = task, counts: Counter = counts) -> None:
                counts[(row.dataset, row.class_split, row.class_name)] += 1
                progress.advance(task)

            if options.format == "llamafactory":
                splits = _write_llamafactory(config, rows, staging, placed, counted)
            else:
                splits = _write_parquet(config, rows, staging, placed, counted, options)
            facts.append(ConfigFacts(config.name, splits, counts, list(config.left_out)))
    return facts, placed


def _write_parquet(
    config: ConfigRows,
    rows: Iterator[tuple[Row, dict[str, Any]]],
    staging: Path,
    placed: Placements,
    counted: Callable[[Row], None],
    options: ExportOptions,
) -> list[SplitFacts]:
    features = config_features(config.name)
    writers = {
        split: ShardWriter(
            staging / "data" / config.name,
            split=split,
            features=features,
            max_bytes=options.max_shard_size,
            relative_to=staging,
        )
        for split in config.splits
    }
    try:
        for row, values in rows:
            number, index = writers[row.split].add(values)
            placed.add(config.name, row, number, index)
            counted(row)
        shards = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for split, written in shards.items():
        placed.name_shards(config.name, split, [shard.path for shard in written])
    return [SplitFacts(split, shards[split]) for split in config.splits if shards[split]]


def _write_llamafactory(
    config: ConfigRows,
    rows: Iterator[tuple[Row, dict[str, Any]]],
    staging: Path,
    placed: Placements,
    counted: Callable[[Row], None],
) -> list[SplitFacts]:
    writer = LlamaFactoryWriter(staging)
    try:
        for row, values in rows:
            placed.add(config.name, row, 0, writer.add(values))
            counted(row)
        total = writer.close()
    except BaseException:
        writer.abort()
        raise
    placed.name_shards(config.name, "train", [DATA_FILE])
    shard = Shard(path=DATA_FILE, rows=total, file_bytes=writer.file_bytes, arrow_bytes=0)
    return [SplitFacts("train", [shard])] if total else []


# --- after writing ----------------------------------------------------------------------------


def _recipe(
    store: Store, options: ExportOptions, *, facts: Sequence[ConfigFacts], sample_ids: set[str]
) -> Recipe:
    rates = store.verdict_rates().iter_rows(named=True)
    pass_rates = [(r["check_name"], r["checked"], r["passed"], r["required"]) for r in rates]
    return Recipe(
        prompts=[
            (row["purpose"], row["model"], row["prompt_hash"], row["requests"])
            for row in store.prompt_versions(sorted(sample_ids)).iter_rows(named=True)
        ],
        system_prompt=load_prompt("system", options.prompts_dir).digest,
        required_checks=[name for name, _, _, required in pass_rates if required],
        pass_rates=pass_rates,
        dedup=store.latest_run_config("dedup"),
        review=options.review,
        eval_source=options.eval_source,
        seed=options.seed,
        license=options.license,
        command=reproduce_command(options, [config.name for config in facts]),
        version=_version(),
    )


def reproduce_command(options: ExportOptions, configs: Sequence[str]) -> str:
    """The command that writes the same folder from the same store, without this machine's
    paths (STORE, OUT and MANIFESTS stand for them).

    >>> from cotforge.config import ExportOptions
    >>> command = reproduce_command(ExportOptions(out="/home/me/x", configs="sft"), ["sft"])
    >>> command[:60], "/home" in command
    ('cotforge export --store STORE --out OUT --configs sft --form', False)
    """
    parts = [
        "cotforge export --store STORE --out OUT",
        f"--configs {','.join(configs)}",
        f"--format {options.format}",
        f"--review {options.review}",
        f"--max-shard-size {options.max_shard_size}",
    ]
    if "eval" in configs:
        parts += [f"--seed {options.seed}", f"--eval-source {options.eval_source}"]
        if options.eval_per_class is not None:
            parts.append(f"--eval-per-class {options.eval_per_class}")
        if options.eval_manifests is not None:
            parts.append("--eval-manifests MANIFESTS")
    if options.prompts_dir is not None:
        parts.append("--prompts-dir PROMPTS")
    if options.license != "other":
        parts.append(f"--license {options.license}")
    return " ".join(parts)


def _move_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty, or an earlier export) by ``staging``. The old folder is
    renamed aside first and deleted last, so a failed rename leaves it where it was."""
    if not out.exists():
        os.replace(staging, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.replace(staging, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, aside / out.name)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(aside / out.name, out)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _version() -> str:
    return version("cotforge")
