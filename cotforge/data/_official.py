"""Readers for the file formats the official FGVR archives ship: id lists and MATLAB files.

Every dataset loader parses the same few shapes (``<id> <value>`` text lines, ``.mat`` cell
arrays, numeric vectors and struct arrays), and every one of them must turn a damaged file into a
:class:`DatasetNotFoundError` that names the file and says what to do. Keeping the parsing here
means the six loaders only say *which* file holds *what*.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotforge.errors import DatasetNotFoundError

_FIX = "the file is damaged or not the official one; extract it again from the official archive"


def layout_error(title: str, path: Path, problem: str) -> DatasetNotFoundError:
    """The error every parser raises: dataset, file, what is wrong with it, what to do."""
    return DatasetNotFoundError(f"{title}: {path} {problem}; {_FIX}")


def first_existing(root: Path, candidates: Sequence[str]) -> Path | None:
    """The first of ``candidates`` (relative to ``root``) that exists, for files that official
    archives and their common mirrors place in different folders."""
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    return None


def read_lines(title: str, path: Path) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines of a text list as ``(line number, stripped text)``.

    ``#`` lines are skipped because Oxford-IIIT Pet's ``list.txt`` starts with a commented header;
    no official list uses ``#`` in data lines.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise layout_error(title, path, "is missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise layout_error(title, path, f"cannot be read ({err})") from err
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((number, stripped))
    return lines


def read_pairs(title: str, path: Path, *, expected: str) -> list[tuple[str, str]]:
    """Lines ``<id> <value>`` split at the first space; the value may itself contain spaces
    (aircraft variants such as ``Cessna 172``). ``expected`` describes the line for the error."""
    pairs = []
    for number, line in read_lines(title, path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise layout_error(
                title, path, f"line {number} is malformed ({line!r}; expected {expected!r})"
            )
        pairs.append((parts[0], parts[1]))
    return pairs


def read_mapping(title: str, path: Path, *, expected: str) -> dict[str, str]:
    """:func:`read_pairs` as a dict, rejecting an id listed twice (the lists are keyed by id)."""
    mapping: dict[str, str] = {}
    for key, value in read_pairs(title, path, expected=expected):
        if key in mapping:
            raise layout_error(title, path, f"lists id {key!r} twice")
        mapping[key] = value
    return mapping


def parse_int(title: str, path: Path, value: str, *, what: str) -> int:
    """An integer field of a text list, with the file named when it is not one."""
    try:
        return int(value)
    except ValueError:
        raise layout_error(title, path, f"has {what} {value!r}, which is not a number") from None


def load_mat(title: str, path: Path, variables: Sequence[str]) -> dict[str, Any]:
    """Load a MATLAB (v5) file and check that it holds the named variables.

    scipy is imported here rather than at module level so that listing datasets or importing the
    registry does not pay for it.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
    except FileNotFoundError:
        raise layout_error(title, path, "is missing") from None
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as err:
        raise layout_error(title, path, f"is not a readable MATLAB file ({err})") from err
    absent = [name for name in variables if name not in mat]
    if absent:
        raise layout_error(title, path, f"has no variable {', '.join(absent)}")
    return mat


def mat_strings(title: str, path: Path, value: Any, *, variable: str) -> list[str]:
    """A MATLAB cell array of strings (any shape) as a flat list, in MATLAB's storage order
    (column-major, which is list order for the 1xN and Nx1 arrays the datasets use)."""
    cells = np.asarray(value)
    if cells.dtype != object:
        raise layout_error(title, path, f"has {variable} that is not a cell array of strings")
    return [_cell_string(title, path, cell, variable=variable) for cell in cells.ravel(order="F")]


def _cell_string(title: str, path: Path, cell: Any, *, variable: str) -> str:
    chars = np.asarray(cell)
    if chars.dtype.kind != "U" or chars.size != 1:
        raise layout_error(title, path, f"has an entry of {variable} that is not one string")
    return str(chars.ravel()[0])


def mat_ints(title: str, path: Path, value: Any, *, variable: str) -> list[int]:
    """A MATLAB numeric vector (stored as double or an integer type) as a list of ints."""
    numbers = np.asarray(value)
    if numbers.dtype.kind not in "iuf" or sum(d > 1 for d in numbers.shape) > 1:
        raise layout_error(title, path, f"has {variable} that is not a numeric vector")
    flat = numbers.ravel(order="F")
    if not np.all(np.isfinite(flat)) or not np.all(flat == np.round(flat)):
        raise layout_error(title, path, f"has {variable} with non-integer values")
    return [int(n) for n in flat]


def mat_structs(
    title: str, path: Path, value: Any, *, variable: str, fields: Sequence[str]
) -> list[dict[str, Any]]:
    """A MATLAB struct array as one dict per element, keeping only ``fields`` (which must all be
    present), each value squeezed to a Python scalar or string."""
    structs = np.asarray(value)
    names = structs.dtype.names or ()
    absent = [name for name in fields if name not in names]
    if absent:
        raise layout_error(title, path, f"has {variable} without the field(s) {', '.join(absent)}")
    rows = []
    for element in structs.ravel(order="F"):
        row = {}
        for name in fields:
            cell = np.asarray(element[name])
            if cell.size != 1 or cell.dtype.kind not in "iufU":
                raise layout_error(
                    title, path, f"has an entry of {variable} whose {name} is not one value"
                )
            item = cell.ravel()[0]
            row[name] = str(item) if cell.dtype.kind == "U" else item.item()
        rows.append(row)
    return rows
