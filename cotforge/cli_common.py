"""What every ``cotforge`` verb module shares: the consoles, the store and config options, and
the wrapper that turns a user error into one line and a non-zero exit.

Kept apart from :mod:`cotforge.cli` so the verb modules (``cli_review``, ``cli_eval``) and the
main app import it rather than each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cotforge.config import GlobalOptions, resolve
from cotforge.errors import CotforgeError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = Annotated[
    Path | None,
    typer.Option(help="DuckDB store file [env COTFORGE_STORE; default ./cotforge.duckdb]"),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="config file [env COTFORGE_CONFIG; default ./cotforge.toml]"),
]


def print_error(err: CotforgeError) -> None:
    """One line on stderr; escaped and without emoji codes, so a message quoting a path or
    ``openai:x@...`` prints as written."""
    message = f"[bold red]error:[/] {escape(str(err))}"
    err_console.print(message, highlight=False, soft_wrap=True, emoji=False)


def reports_errors(command: F) -> F:
    """Print a user error as one line on stderr and exit non-zero, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CotforgeError as err:
            print_error(err)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def global_options(store: Path | None, config: Path | None) -> GlobalOptions:
    """The store path and home folder, resolved like every other option."""
    return resolve(GlobalOptions, section=None, flags={"store": store}, config_file=config)


def existing_store(store: Path | None, config: Path | None, *, made_by: str) -> Path:
    """The store of a verb that reads what others wrote: a missing file is a user error naming
    the verb ``made_by`` that makes it, rather than an empty store created in passing."""
    path = global_options(store, config).store
    if not path.exists():
        msg = f"store {path} does not exist; run `cotforge {made_by}` first or pass --store PATH"
        raise CotforgeError(msg)
    return path
