"""Find a dataset on disk, downloading it into the default root when allowed.

Only the default root (``$COTFORGE_HOME/datasets/NAME``) is ever downloaded into: a folder the
user named with ``--root`` is theirs, so a missing file there is reported, not fetched.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from cotforge.data.base import Source
from cotforge.data.registry import canonical_name, get_source
from cotforge.errors import DatasetNotFoundError


def open_source(
    name: str,
    *,
    root: Path | None,
    default_root: Path,
    download: bool,
    console: Console | None = None,
) -> Source:
    """Return the dataset's :class:`Source` with its official layout checked.

    Raises :class:`DatasetNotFoundError` (or ``UnknownDatasetError``) with what to do.
    """
    name = canonical_name(name)
    if root is not None:
        source = get_source(name, root)
        source.check_layout()
        return source
    source = get_source(name, default_root)
    if source.root.is_dir() and not source.missing_files():
        return source
    if not download:
        msg = (
            f"{source.title} is not under the default root {default_root} and --no-download "
            f"was given; pass --root DIR or run `cotforge datasets download {name}`"
        )
        raise DatasetNotFoundError(msg)
    from cotforge.data.download import download_dataset

    download_dataset(name, root=default_root, console=console)
    source.check_layout()
    return source
