"""``cotforge review``: push rationales to Argilla, pull human decisions back, see progress, or
serve a local Argilla stack. Thin verbs, as in :mod:`cotforge.cli`: each resolves
:class:`~cotforge.config.ReviewOptions` (flags > ``COTFORGE_REVIEW_*`` > ``[review]`` > defaults)
and calls one function; the API key is never a flag (``ARGILLA_API_KEY`` or the config file).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
from cotforge.config import ReviewOptions, VerifyOptions, resolve

review_app = typer.Typer(
    help="Human review in Argilla: push rationales, pull decisions and edits, see progress.",
    no_args_is_help=True,
)


if TYPE_CHECKING:
    from cotforge.review import ReviewStatus

DatasetNameOpt = Annotated[str | None, typer.Option(help="Argilla dataset name [cotforge-review]")]
WorkspaceOpt = Annotated[str | None, typer.Option(help="Argilla workspace [cotforge]")]
ApiUrlOpt = Annotated[str | None, typer.Option(help="Argilla server URL [env ARGILLA_API_URL]")]


def _options(config: Path | None, **flags: Any) -> ReviewOptions:
    return resolve(ReviewOptions, section="review", flags=flags, config_file=config)


@review_app.command("push")
@reports_errors
def push(
    run: Annotated[str | None, typer.Option("--run", help="only rationales this run wrote")] = None,
    only: Annotated[
        str | None, typer.Option(help="accepted | failed | all rationales [accepted]")
    ] = None,
    dataset_name: DatasetNameOpt = None,
    workspace: WorkspaceOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="records per request [200]")] = None,
    image_side: Annotated[int | None, typer.Option(help="longer image side sent [512]")] = None,
    reviewers_per_record: Annotated[
        int | None, typer.Option(help="reviews a record needs to be complete [1]")
    ] = None,
    root: Annotated[
        list[str] | None,
        typer.Option(help="NAME=FOLDER where a dataset is now (repeatable) [its latest plan's]"),
    ] = None,
    api_url: ApiUrlOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send rationales to Argilla for review; a second push updates what changed."""
    from cotforge.report_tables import summary_table
    from cotforge.review import push as push_records
    from cotforge.store import Store

    options = _options(
        config,
        run_id=run,
        only=only,
        dataset_name=dataset_name,
        workspace=workspace,
        batch_size=batch_size,
        image_side=image_side,
        reviewers_per_record=reviewers_per_record,
        roots=root or None,
        api_url=api_url,
    )
    with Store.open(existing_store(store, config, made_by="generate")) as db:
        summary = push_records(db, options, console=console)
    console.print(summary_table(f"review push {summary.run_id or '(nothing new)'}", summary.rows()))


@review_app.command("pull")
@reports_errors
def pull(
    dataset_name: DatasetNameOpt = None,
    workspace: WorkspaceOpt = None,
    policy: Annotated[
        str | None, typer.Option(help="several reviewers' decisions: majority | any_reject")
    ] = None,
    api_url: ApiUrlOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Bring submitted reviews into the store; edits become new, verified versions."""
    from cotforge.report_tables import summary_table
    from cotforge.review import pull as pull_reviews
    from cotforge.store import Store

    options = _options(
        config, dataset_name=dataset_name, workspace=workspace, policy=policy, api_url=api_url
    )
    verify_options = resolve(VerifyOptions, section="verify", flags={}, config_file=config)
    with Store.open(existing_store(store, config, made_by="generate")) as db:
        summary = pull_reviews(db, options, verify_options=verify_options, console=console)
    for note in summary.notes():
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    console.print(summary_table(f"review pull {summary.run_id or '(no change)'}", summary.rows()))


@review_app.command("status")
@reports_errors
def status(
    dataset_name: DatasetNameOpt = None,
    workspace: WorkspaceOpt = None,
    api_url: ApiUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Show review progress per dataset and class, and agreement between reviewers."""
    from cotforge.review import status as review_status

    options = _options(config, dataset_name=dataset_name, workspace=workspace, api_url=api_url)
    for table in _status_tables(review_status(options, console=console)):
        console.print(table)


def _status_tables(report: ReviewStatus) -> list[Table]:
    progress = Table(title=f"review progress: {report.dataset} at {report.url}")
    progress.add_column("dataset")
    progress.add_column("class")
    for column in ("records", "reviewed", "complete", "accept", "edit", "reject"):
        progress.add_column(column, justify="right")
    for entry in report.classes:
        progress.add_row(
            entry.dataset,
            entry.class_name,
            *(str(n) for n in (entry.records, entry.reviewed, entry.complete)),
            *(str(entry.decisions[d]) for d in ("accept", "edit", "reject")),
        )
    agreement = Table(title="agreement between reviewers")
    agreement.add_column("figure")
    agreement.add_column("value", justify="right")
    a = report.agreement
    for figure, value in (
        ("records decided by 2+ reviewers", a.records),
        ("of those, unanimous", a.unanimous),
        ("pairwise agreement", "-" if a.observed is None else f"{a.observed:.1%}"),
        ("Fleiss' kappa", "-" if a.kappa is None else f"{a.kappa:.2f}"),
        *((f"reviews by {name}", count) for name, count in sorted(report.reviewers.items())),
    ):
        agreement.add_row(figure, str(value))
    return [progress, agreement]


@review_app.command("serve")
@reports_errors
def serve(
    venv: Annotated[
        Path | None,
        typer.Option(help="the Argilla server's virtual environment [$COTFORGE_ARGILLA_VENV]"),
    ] = None,
    annotators: Annotated[int, typer.Option(min=1, help="annotator accounts to create")] = 1,
    workspace: WorkspaceOpt = None,
    install: Annotated[
        bool,
        typer.Option("--install/--no-install", help="create the server environment if missing"),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Run a local Argilla (redis + in-memory OpenSearch + server) until Ctrl-C.

    For a user without a server. Nothing persists: pull the reviews before stopping it.
    """
    from cotforge.argilla_stack import install_server_venv, server_venv, start_stack

    options = _options(config, workspace=workspace)
    folder = server_venv(venv)
    if install and not (folder / "bin" / "python").is_file():
        install_server_venv(folder, console=console)
    home = global_options(None, config).home.expanduser()
    console.print("starting redis, osmem and Argilla (about 15 s) ...")
    with start_stack(
        home, venv=folder, annotators=annotators, workspace=options.workspace
    ) as stack:
        console.print(f"Argilla is ready at {stack.url}", highlight=False)
        console.print(f"owner API key: {stack.owner.api_key}", highlight=False)
        for user in stack.annotators:
            console.print(
                f"annotator login: {user.username} / {user.password} "
                f"(workspace {stack.workspace})",
                highlight=False,
            )
        console.print(
            f"for cotforge review: export ARGILLA_API_URL={stack.url} "
            f"ARGILLA_API_KEY={stack.owner.api_key}",
            highlight=False,
        )
        console.print("everything is in memory: `cotforge review pull` before Ctrl-C")
        try:
            while True:
                stack.check_running()
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopping the local Argilla stack")
