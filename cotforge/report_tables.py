"""Rich tables the CLI prints; kept apart so verbs stay thin and tables stay testable."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from cotforge.data.annotations import ClassSplit
    from cotforge.data.base import Source


def dataset_tables(
    source: Source, class_split: dict[int, ClassSplit], *, with_classes: bool
) -> list[Table]:
    """Images per split and seen/unseen class, then (optionally) every class."""
    notes = source.annotations
    summary = Table(title=f"{source.title} at {source.root}")
    for column in ("split", "images", "classes", "seen-class images", "unseen-class images"):
        summary.add_column(column, justify="right" if column != "split" else "left")
    for split in source.splits:
        records = source.images(split)
        per_split = Counter(class_split[r.class_index] for r in records)
        summary.add_row(
            split,
            str(len(records)),
            str(len({r.class_index for r in records})),
            str(per_split["seen"]),
            str(per_split["unseen"]),
        )
    seen = sum(1 for s in class_split.values() if s == "seen")
    summary.caption = (
        f"{len(notes.classes)} classes ({seen} seen, {len(class_split) - seen} unseen); "
        f"super-category {notes.super_category!r}; hierarchy "
        + " > ".join((*notes.hierarchy_levels, "class"))
    )
    tables = [summary]
    if with_classes:
        classes = Table(title=f"{source.title}: classes")
        for column in ("index", "name", "official label", "hierarchy", "split"):
            classes.add_column(column)
        for info in notes.classes:
            classes.add_row(
                str(info.index),
                info.name,
                info.label,
                " > ".join(info.hierarchy),
                class_split[info.index],
            )
        tables.append(classes)
    return tables


def summary_table(title: str, rows: list[tuple[str, object]]) -> Table:
    """A verb's (figure, value) summary, e.g. what ``plan`` or ``dedup`` wrote."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for figure, value in rows:
        table.add_row(figure, str(value))
    return table


def stats_table(figures: dict[str, Any]) -> Table:
    """The store's figures, nested counts (by status, by check) flattened to one row each."""
    table = Table(title="cotforge store")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if isinstance(value, dict):
            if not value:
                table.add_row(key, "0")
            for sub, count in sorted(value.items()):
                table.add_row(f"{key}: {sub}", str(count))
        else:
            table.add_row(key, str(value))
    return table
