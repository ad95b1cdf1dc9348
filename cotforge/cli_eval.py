"""``cotforge eval``: the verb, registered on the main app by :mod:`cotforge.cli`.

Kept in its own module so the evaluation's many options do not crowd ``cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cotforge.cli_common import (
    ConfigOpt,
    StoreOpt,
    console,
    err_console,
    global_options,
    reports_errors,
)
from cotforge.config import EvalOptions, resolve


@reports_errors
def eval_command(
    model: Annotated[
        str | None,
        typer.Option(
            help="openai:NAME@URL (a server, e.g. vllm serve), local:PATH (transformers, in "
            "process) or clip:PATH (CLIP/SigLIP zero-shot baseline)"
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="dataset name(s), comma-separated, or all [all]")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="closed | open | both [both]")] = None,
    source: Annotated[
        str | None,
        typer.Option(help="questions from: paper (manifests) | test (images) | export [paper]"),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(help="folder holding the datasets' official layouts [COTFORGE_HOME/datasets]"),
    ] = None,
    manifests: Annotated[
        Path | None, typer.Option(help="folder of Fine-R1's eval manifests [the shipped copy]")
    ] = None,
    export: Annotated[
        Path | None, typer.Option(help="an exported dataset folder with an eval config")
    ] = None,
    trials: Annotated[int | None, typer.Option(help="trials averaged, mean and std [3]")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the options' order [0]")] = None,
    prompt: Annotated[
        str | None, typer.Option(help="fine-r1 (reasoning) | answer-only (baselines) [fine-r1]")
    ] = None,
    text_encoder: Annotated[
        str | None, typer.Option(help="SS_rel encoder: minilm | hf:PATH (CLIP/SigLIP) [minilm]")
    ] = None,
    per_class: Annotated[
        int | None, typer.Option(help="at most this many images per class [all]")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="server: requests in flight [64]")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="local/clip models: images per batch [8]")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="longest answer in tokens [2048]")] = None,
    out: Annotated[
        Path | None, typer.Option(help="write <run id>.json and <run id>.md results here")
    ] = None,
    paper_model: Annotated[
        str | None, typer.Option(help="the paper's row to show [recognised from --model]")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the results as one JSON object")
    ] = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score a model on seen and unseen classes, closed and open world (Fine-R1's protocol)."""
    _evaluate(
        flags={
            "model": model,
            "datasets": dataset,
            "mode": mode,
            "source": source,
            "data_root": data_root,
            "manifests": manifests,
            "export": export,
            "trials": trials,
            "seed": seed,
            "prompt": prompt,
            "text_encoder": text_encoder,
            "per_class": per_class,
            "concurrency": concurrency,
            "batch_size": batch_size,
            "max_tokens": max_tokens,
            "out": out,
            "paper_model": paper_model,
        },
        store=store,
        config=config,
        as_json=as_json,
    )


def _evaluate(
    *, flags: dict[str, object], store: Path | None, config: Path | None, as_json: bool
) -> None:
    from cotforge.eval import run_eval
    from cotforge.report_tables import summary_table
    from cotforge.store import Store

    options = resolve(EvalOptions, section="eval", flags=flags, config_file=config)
    settings = global_options(store, config)
    with Store.open(settings.store) as db:
        results = run_eval(
            db,
            options,
            default_root=settings.home.expanduser() / "datasets",
            console=err_console,
        )
    if as_json:
        typer.echo(json.dumps(results.to_json(), sort_keys=True))
    else:
        console.print(summary_table(f"eval {results.figures.run_id}", results.figures.rows()))
        for table in results.tables():
            console.print(table)
        for note in results.notes:
            console.print(f"note: {note}", highlight=False)
    if options.out is not None:
        options.out.mkdir(parents=True, exist_ok=True)
        stem = options.out / results.figures.run_id
        stem.with_suffix(".json").write_text(
            json.dumps(results.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        stem.with_suffix(".md").write_text(results.to_markdown(), encoding="utf-8")
        err_console.print(f"results written to {stem}.json and {stem}.md", highlight=False)
