"""The ``cotforge`` command: thin verbs that resolve options and call one function each.

Every verb resolves its options through :mod:`cotforge.config` (flags > environment > config
file > defaults) and turns a :class:`~cotforge.errors.CotforgeError` into a one-line message and
a non-zero exit. Heavy modules are imported inside the verbs so ``--help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cotforge.cli_common import (
    ConfigOpt,
    StoreOpt,
    console,
    err_console,
    existing_store,
    global_options,
    reports_errors,
)
from cotforge.cli_eval import eval_command
from cotforge.cli_review import review_app
from cotforge.config import (
    DatasetOptions,
    DedupOptions,
    ExportOptions,
    GenerateOptions,
    ImportOptions,
    PlanOptions,
    ReportOptions,
    TeacherOptions,
    VerifyOptions,
    resolve,
)

if TYPE_CHECKING:
    from cotforge.data.base import Source
    from cotforge.store import Store

app = typer.Typer(
    help="Verified chain-of-thought data for fine-grained visual recognition (Fine-R1 recipe).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
datasets_app = typer.Typer(
    help="List, inspect and download the FGVR datasets.", no_args_is_help=True
)
app.add_typer(datasets_app, name="datasets")

RootOpt = Annotated[
    Path | None,
    typer.Option(
        help="dataset folder in its official layout [default COTFORGE_HOME/datasets/NAME]"
    ),
]
DownloadOpt = Annotated[
    bool | None,
    typer.Option(
        "--download/--no-download", help="download a dataset missing under the default root"
    ),
]
SplitModeOpt = Annotated[
    str | None, typer.Option(help="seen/unseen split: 'paper' (Fine-R1's) or 'random'")
]
UnseenFractionOpt = Annotated[
    float | None, typer.Option(help="share of unseen classes for --split-mode random [0.4]")
]
SplitSeedOpt = Annotated[int | None, typer.Option(help="seed of the random split [0]")]
UnseenShotsOpt = Annotated[
    int | None, typer.Option(help="images per unseen class too, without triplets [0]")
]


def _open_dataset(name: str, options: DatasetOptions, config: Path | None) -> Source:
    """The dataset's source under ``--root`` or the default root (downloading when allowed)."""
    from cotforge.data.locate import open_source

    return open_source(
        name,
        root=options.root,
        default_root=global_options(None, config).dataset_root(name),
        download=options.download,
        console=console,
    )


@datasets_app.command("list")
@reports_errors
def datasets_list(config: ConfigOpt = None) -> None:
    """List the supported datasets, their classes, split and whether they are on disk."""
    from cotforge.data.annotations import load_annotations
    from cotforge.data.registry import dataset_names, get_source

    options = global_options(None, config)
    table = Table(title="FGVR datasets")
    for column in ("name", "dataset", "super-category", "classes", "seen/unseen", "hierarchy"):
        table.add_column(column)
    table.add_column("default root")
    for name in dataset_names():
        notes = load_annotations(name)
        split = notes.split()
        seen = sum(1 for s in split.values() if s == "seen")
        root = options.dataset_root(name)
        present = root.is_dir() and not get_source(name, root).missing_files()
        table.add_row(
            name,
            notes.title,
            notes.super_category,
            str(len(notes.classes)),
            f"{seen}/{len(split) - seen}",
            " > ".join((*notes.hierarchy_levels, "class")),
            f"{root} ({'present' if present else 'absent'})",
        )
    console.print(table)


@datasets_app.command("show")
@reports_errors
def datasets_show(
    name: Annotated[str, typer.Argument(help="dataset name (see `cotforge datasets list`)")],
    root: RootOpt = None,
    download: DownloadOpt = None,
    split_mode: SplitModeOpt = None,
    unseen_fraction: UnseenFractionOpt = None,
    split_seed: SplitSeedOpt = None,
    classes: Annotated[bool, typer.Option(help="also list every class")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show a dataset's splits, image counts per split, and its seen/unseen classes."""
    from cotforge.report_tables import dataset_tables

    options = resolve(
        DatasetOptions,
        section="datasets",
        flags={
            "root": root,
            "download": download,
            "split_mode": split_mode,
            "unseen_fraction": unseen_fraction,
            "split_seed": split_seed,
        },
        config_file=config,
    )
    source = _open_dataset(name, options, config)
    class_split = source.annotations.split(
        mode=options.split_mode, unseen_fraction=options.unseen_fraction, seed=options.split_seed
    )
    for table in dataset_tables(source, class_split, with_classes=classes):
        console.print(table)


@datasets_app.command("download")
@reports_errors
def datasets_download(
    name: Annotated[str, typer.Argument(help="dataset name")],
    root: RootOpt = None,
    force: Annotated[bool, typer.Option(help="download and extract again")] = False,
    config: ConfigOpt = None,
) -> None:
    """Download a dataset's official archives, verify checksums, and extract them safely."""
    from cotforge.data.download import download_dataset
    from cotforge.data.registry import canonical_name

    name = canonical_name(name)
    target = root or global_options(None, config).dataset_root(name)
    path = download_dataset(name, root=target, force=force, console=console)
    console.print(f"{name}: ready at {path}")


@datasets_app.command("synth")
@reports_errors
def datasets_synth(
    out: Annotated[Path, typer.Option(help="folder to write the dataset into")],
    classes: Annotated[int, typer.Option(help="aircraft variants, in official order")] = 10,
    images_per_class: Annotated[
        int, typer.Option(help="images per variant, split over train, val and test")
    ] = 6,
    seed: Annotated[int, typer.Option(help="seed of the generated pictures")] = 0,
) -> None:
    """Write a small generated dataset in the official FGVC-Aircraft layout (no download)."""
    from cotforge.testing.synth import write_synthetic_aircraft

    root = write_synthetic_aircraft(
        out, classes=classes, images_per_class=images_per_class, seed=seed
    )
    console.print(f"aircraft (synthetic, {classes} classes): ready at {root}")
    console.print(f"next: cotforge generate --dataset aircraft --root {root} --shots 4")


@app.command("tiny-model")
@reports_errors
def tiny_model(
    out: Annotated[Path, typer.Option(help="folder to write the model into")],
    seed: Annotated[int, typer.Option(help="seed of the random weights")] = 0,
) -> None:
    """Build a tiny random Qwen2.5-VL offline: a teacher or student for smoke runs, not a model."""
    from cotforge.testing.tiny import build_tiny_qwen2_5_vl

    path = build_tiny_qwen2_5_vl(out, seed=seed)
    console.print(f"tiny random Qwen2.5-VL: ready at {path}")
    console.print(f"next: cotforge generate --teacher local:{path} ...")


@app.command("plan")
@reports_errors
def plan(
    dataset: Annotated[str | None, typer.Option(help="dataset name")] = None,
    shots: Annotated[int | None, typer.Option(help="images per seen class [4]")] = None,
    seed: Annotated[int | None, typer.Option(help="sampling seed [0]")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="negative class strategy: hierarchy | text | image")
    ] = None,
    from_split: Annotated[str | None, typer.Option(help="split to draw from [train]")] = None,
    allow_fewer: Annotated[
        bool | None, typer.Option("--allow-fewer/--no-allow-fewer", help="accept small classes")
    ] = None,
    unseen_shots: UnseenShotsOpt = None,
    root: RootOpt = None,
    download: DownloadOpt = None,
    split_mode: SplitModeOpt = None,
    unseen_fraction: UnseenFractionOpt = None,
    split_seed: SplitSeedOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Sample k shots per seen class and their TAPO triplets into the store."""
    from cotforge.plan import make_plan
    from cotforge.report_tables import summary_table
    from cotforge.store import Store

    options = resolve(
        PlanOptions,
        section="plan",
        flags={
            "dataset": dataset,
            "shots": shots,
            "seed": seed,
            "strategy": strategy,
            "from_split": from_split,
            "allow_fewer": allow_fewer,
            "unseen_shots": unseen_shots,
            "root": root,
            "download": download,
            "split_mode": split_mode,
            "unseen_fraction": unseen_fraction,
            "split_seed": split_seed,
        },
        config_file=config,
    )
    source = _open_dataset(options.dataset, options, config)
    with Store.open(global_options(store, config).store) as db:
        summary = make_plan(source, db, options, console=console)
    console.print(summary_table(f"plan {summary.run_id} ({summary.dataset})", summary.rows()))


@app.command("generate")
@reports_errors
def generate(
    dataset: Annotated[str | None, typer.Option(help="dataset name")] = None,
    shots: Annotated[int | None, typer.Option(help="images per class [4]")] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="openai:MODEL@URL[@URL...] or local:PATH_OR_ID [$COTFORGE_TEACHER_URL]"),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help="rationale attempts per sample until verified [4]")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many samples")] = None,
    classes: Annotated[
        str | None, typer.Option(help="only these classes (comma-separated names or labels)")
    ] = None,
    split: Annotated[str | None, typer.Option(help="seen | unseen | all [seen]")] = None,
    concurrency: Annotated[int | None, typer.Option(help="requests in flight [64]")] = None,
    concepts: Annotated[
        bool | None,
        typer.Option("--concepts/--no-concepts", help="ask for visual concepts first [on]"),
    ] = None,
    judge: Annotated[
        bool | None,
        typer.Option("--judge/--no-judge", help="grade comparisons against the image [off]"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="sampling seed [0]")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan and the first prompts; send nothing")
    ] = False,
    root: RootOpt = None,
    download: DownloadOpt = None,
    split_mode: SplitModeOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ask the teacher for verified four-stage rationales of the planned samples."""
    from cotforge.generate import ensure_plan, preview, run_generation, select_samples
    from cotforge.report_tables import summary_table
    from cotforge.store import Store
    from cotforge.teachers.select import build_teacher, parse_teacher_spec

    options = resolve(
        GenerateOptions,
        section="generate",
        flags={
            "dataset": dataset,
            "shots": shots,
            "teacher": teacher,
            "max_attempts": max_attempts,
            "limit": limit,
            "classes": classes,
            "split": split,
            "concurrency": concurrency,
            "concepts": concepts,
            "judge": judge,
            "seed": seed,
            "root": root,
            "download": download,
            "split_mode": split_mode,
        },
        config_file=config,
    )
    verify_options = resolve(VerifyOptions, section="verify", flags={}, config_file=config)
    spec = parse_teacher_spec(options.teacher, extra_urls=options.teacher_urls)
    source = _open_dataset(options.dataset, options, config)
    with Store.open(global_options(store, config).store) as db:
        planned = ensure_plan(source, db, options, console=console)
        if planned is not None:
            console.print(summary_table(f"plan {planned.run_id} ({source.name})", planned.rows()))
        samples = select_samples(
            db.planned_samples(source.name).iter_rows(named=True),
            source,
            split=options.split,
            classes=options.classes,
            limit=options.limit,
        )
        if not samples:
            err_console.print(
                f"nothing to generate: the plan of {source.name} has no {options.split} samples"
                " matching --classes; widen --classes or --split"
            )
            raise typer.Exit(1)
        if dry_run:
            preview(samples, source=source, spec=str(spec), options=options, console=console)
            return
        summary = run_generation(
            samples,
            source=source,
            store=db,
            teacher=build_teacher(spec, options),
            options=options,
            verify_options=verify_options,
            console=console,
        )
    console.print(summary_table(f"generate {summary.run_id}", summary.rows()))


@app.command("verify")
@reports_errors
def verify(
    required: Annotated[
        str | None,
        typer.Option(help="comma-separated checks a rationale must pass [all of them]"),
    ] = None,
    allow_missing_year: Annotated[
        bool | None,
        typer.Option("--allow-missing-year/--no-allow-missing-year", help="cars: accept no year"),
    ] = None,
    all_rationales: Annotated[
        bool, typer.Option("--all", help="verify every rationale again, not only new ones")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="processes running the checks [one per core from 2,000 on]"),
    ] = None,
    judge: Annotated[
        bool,
        typer.Option(
            "--judge", help="also ask the teacher to judge comparisons against their images"
        ),
    ] = False,
    teacher: Annotated[
        str | None, typer.Option(help="judge: openai:MODEL@URL or local:PATH [as generate]")
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="judge: the dataset folder image keys are relative to")
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the verification checks on the store's rationales and record their verdicts."""
    from cotforge.report_tables import summary_table
    from cotforge.store import Store
    from cotforge.verify import verify_store

    flags = {
        "required": required.split(",") if required else None,
        "allow_missing_year": allow_missing_year,
        "workers": workers,
    }
    options = resolve(VerifyOptions, section="verify", flags=flags, config_file=config)
    with Store.open(global_options(store, config).store) as db:
        summary = verify_store(db, options=options, only_new=not all_rationales, console=console)
        console.print(summary_table(f"verify {summary.run_id or '(nothing new)'}", summary.rows()))
        if judge:
            _judge_store(db, options, teacher=teacher, root=root, config=config)


def _judge_store(
    db: Store,
    options: VerifyOptions,
    *,
    teacher: str | None,
    root: Path | None,
    config: Path | None,
) -> None:
    """``verify --judge``: judge what passed the other checks, with generation's teacher."""
    from cotforge.judge import judge_store
    from cotforge.report_tables import summary_table
    from cotforge.teachers.select import build_teacher, parse_teacher_spec

    teacher_options = resolve(
        TeacherOptions,
        section="generate",
        flags={"teacher": teacher},
        config_file=config,
        borrowed=True,
    )
    spec = parse_teacher_spec(teacher_options.teacher, extra_urls=teacher_options.teacher_urls)
    datasets = db.table("images")["dataset"].unique().to_list()
    roots = {}
    for name in datasets:
        found = root or db.latest_image_root(name)
        if found is not None:
            roots[name] = Path(found)
    summary = judge_store(
        db,
        build_teacher(spec, teacher_options),
        required=options.required,
        roots=roots,
        console=console,
    )
    console.print(summary_table(f"judge {summary.run_id or '(nothing to judge)'}", summary.rows()))


@app.command("dedup")
@reports_errors
def dedup(
    threshold: Annotated[float | None, typer.Option(help="near-duplicate Jaccard [0.5]")] = None,
    shingle_size: Annotated[int | None, typer.Option(help="words per shingle [3]")] = None,
    same_class: Annotated[
        bool | None, typer.Option("--same-class/--any-class", help="compare within a class only")
    ] = None,
    embeddings: Annotated[
        bool | None,
        typer.Option("--embeddings/--no-embeddings", help="also MiniLM embedding duplicates"),
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Find exact and near-duplicate rationales; flag all but the best of each cluster."""
    from cotforge.dedup import run_dedup
    from cotforge.report_tables import summary_table
    from cotforge.store import Store

    flags = {
        "threshold": threshold,
        "shingle_size": shingle_size,
        "same_class": same_class,
        "embeddings": embeddings,
    }
    options = resolve(DedupOptions, section="dedup", flags=flags, config_file=config)
    with Store.open(global_options(store, config).store) as db:
        summary = run_dedup(db, options, console=console)
    console.print(summary_table(f"dedup {summary.run_id}", summary.rows()))


@app.command("import")
@reports_errors
def import_(
    file: Annotated[Path, typer.Argument(help="sharegpt JSON (Fine-R1 release) or JSONL file")],
    image_root: Annotated[
        Path | None, typer.Option(help="folder relative image paths resolve against")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="dataset of every record [inferred per record]")
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Bring an existing chain-of-thought dataset into the store."""
    from cotforge.importer import import_file
    from cotforge.report_tables import summary_table
    from cotforge.store import Store

    flags = {"image_root": image_root, "dataset": dataset}
    options = resolve(ImportOptions, section="import", flags=flags, config_file=config)
    with Store.open(global_options(store, config).store) as db:
        summary = import_file(
            db,
            file,
            image_root=options.image_root,
            dataset=options.dataset,
            batch_size=options.batch_size,
            console=console,
        )
    console.print(summary_table(f"import {summary.run_id}", summary.rows()))


@app.command("export")
@reports_errors
def export(
    out: Annotated[Path | None, typer.Option(help="folder to write the dataset into")] = None,
    configs: Annotated[
        str | None, typer.Option(help="configs to write: sft, tapo, eval or all, comma-separated")
    ] = None,
    format_: Annotated[
        str | None,
        typer.Option("--format", help="hf (parquet + card) | llamafactory (sft as sharegpt)"),
    ] = None,
    review: Annotated[
        str | None, typer.Option(help="human reviews: ignore | respect | require [respect]")
    ] = None,
    root: Annotated[
        list[str] | None,
        typer.Option(help="NAME=FOLDER where a dataset is now (repeatable) [its latest plan's]"),
    ] = None,
    max_shard_size: Annotated[
        str | None, typer.Option(help="largest parquet shard, e.g. 500MB, 1GB [500MB]")
    ] = None,
    overwrite: Annotated[
        bool | None, typer.Option("--overwrite/--no-overwrite", help="replace an earlier export")
    ] = None,
    push_to_hub: Annotated[
        str | None, typer.Option(help="also upload the folder to this Hub dataset (ORG/NAME)")
    ] = None,
    private: Annotated[
        bool | None, typer.Option("--private/--public", help="create the Hub repo as private")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the eval options' order [0]")] = None,
    eval_source: Annotated[
        str | None, typer.Option(help="eval rows from: test (images) | paper (manifests)")
    ] = None,
    eval_manifests: Annotated[
        Path | None, typer.Option(help="folder of Fine-R1's eval manifests [the shipped copy]")
    ] = None,
    eval_per_class: Annotated[int | None, typer.Option(help="eval images per class [all]")] = None,
    workers: Annotated[int | None, typer.Option(help="threads reading images [4]")] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the curated records as a Hugging Face dataset folder (or LLaMA-Factory's layout)."""
    from cotforge.export import run_export
    from cotforge.report_tables import summary_table
    from cotforge.store import Store

    flags = {
        "out": out,
        "configs": configs,
        "format": format_,
        "review": review,
        "roots": root or None,
        "max_shard_size": max_shard_size,
        "overwrite": overwrite,
        "push_to_hub": push_to_hub,
        "private": private,
        "seed": seed,
        "eval_source": eval_source,
        "eval_manifests": eval_manifests,
        "eval_per_class": eval_per_class,
        "workers": workers,
    }
    options = resolve(ExportOptions, section="export", flags=flags, config_file=config)
    path = existing_store(store, config, made_by="generate")
    with Store.open(path) as db:
        summary = run_export(db, options, console=console)
    for note in summary.notes:
        console.print(note, highlight=False)
    console.print(summary_table(f"export {summary.run_id}", summary.rows()))


@app.command("report")
@reports_errors
def report(
    run: Annotated[str | None, typer.Option("--run", help="report on one run only")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write index.html and PNG plots here")
    ] = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print the quality report; with --out, also write it as an HTML page with plots."""
    from cotforge.report import build_report, print_report, write_html
    from cotforge.store import Store

    options = resolve(
        ReportOptions, section="report", flags={"run_id": run, "out_dir": out}, config_file=config
    )
    path = existing_store(store, config, made_by="plan")
    with Store.open(path, read_only=True) as db:
        quality = build_report(db, run_id=options.run_id)
    print_report(quality, console)
    if options.out_dir is not None:
        console.print(f"report written to {write_html(quality, options.out_dir)}")


@app.command("stats")
@reports_errors
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Summarise what the store holds: samples, requests, rationales, verdicts, reviews, exports."""
    from cotforge.report_tables import stats_table
    from cotforge.store import Store

    path = existing_store(store, config, made_by="plan")
    with Store.open(path, read_only=True) as db:
        figures = db.stats()
    if as_json:
        typer.echo(json.dumps(figures, sort_keys=True))
    else:
        console.print(stats_table(figures))


# Verbs with modules of their own, listed after the data-side verbs in --help.
app.add_typer(review_app, name="review")
app.command("eval")(eval_command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
