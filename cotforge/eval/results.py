"""The numbers of an evaluation: per dataset seen, unseen and their harmonic mean, the
six-dataset average, mean and standard deviation over trials; as rich tables, JSON and
markdown, beside the paper's numbers for the same model.

Everything is computed from the predictions read back from the store, so a resumed run reports
exactly what a run without interruption would. Per trial: each dataset's seen and unseen score
(percent), their harmonic mean, and the average over the datasets evaluated (HM of the averages,
as the paper reports it); then mean and sample standard deviation over trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
from rich.table import Table

from cotforge.eval.metrics import Mode, harmonic_mean, mean_std
from cotforge.eval.paper import PAPER, PaperRow

METRICS: dict[Mode, tuple[str, ...]] = {
    "closed": ("correct", "text_inclusion"),
    "open": ("correct", "text_inclusion", "ss_rel"),
}
"""The metrics of each mode, by prediction column."""
LABELS = {
    "correct": "strict accuracy",
    "text_inclusion": "text inclusion (paper's metric)",
    "ss_rel": "SS_rel",
}
AVERAGE = "average"
PARTS = ("seen", "unseen", "hm")


@dataclass
class RunFigures:
    """What one evaluation run did, for the closing summary."""

    run_id: str
    model: str
    questions: int = 0
    predictions_before: int = 0
    predictions: int = 0
    answers_reused: int = 0
    requests_sent: int = 0
    request_errors: int = 0
    retried_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def rows(self) -> list[tuple[str, object]]:
        """(figure, value) pairs in reading order."""
        rate = self.predictions / self.wall_s if self.wall_s else 0.0
        return [
            ("model", self.model),
            ("questions", self.questions),
            ("scored earlier (left alone)", self.predictions_before),
            ("scored in this run", self.predictions),
            ("answers reused from the store", self.answers_reused),
            ("requests sent", self.requests_sent),
            ("requests that failed for good", self.request_errors),
            ("requests retried after a fault", self.retried_requests),
            ("prompt tokens", self.prompt_tokens),
            ("completion tokens", self.completion_tokens),
            ("wall time (s)", f"{self.wall_s:.1f}"),
            ("questions scored per second", f"{rate:.1f}"),
        ]


@dataclass(frozen=True)
class Cell:
    """A score over trials (percent); None where no prediction exists."""

    mean: float | None
    std: float | None

    def text(self, *, with_std: bool) -> str:
        if self.mean is None:
            return "-"
        if with_std and self.std is not None:
            return f"{self.mean:.2f} ± {self.std:.2f}"
        return f"{self.mean:.2f}"


@dataclass
class Section:
    """One mode and option order: every metric's cells by dataset (and the average)."""

    mode: Mode
    order: str | None
    cells: dict[str, dict[str, dict[str, Cell]]]
    """metric -> dataset (or ``average``) -> seen/unseen/hm -> cell."""
    answered: int
    expected: int

    @property
    def title(self) -> str:
        orders = {
            "manifest": "options in the manifests' order (truth first, as the paper scored)",
            "shuffled": "options shuffled per image and trial",
        }
        suffix = f": {orders[self.order]}" if self.order else ""
        return f"{self.mode} world{suffix}"


@dataclass
class EvalResults:
    """The outcome of :func:`cotforge.eval.run_eval`."""

    figures: RunFigures
    sections: list[Section]
    datasets: list[str]
    trials: int
    paper: PaperRow | None = None
    notes: list[str] = field(default_factory=list)

    def score(self, mode: Mode, metric: str, *, order: str | None = None) -> Cell:
        """The average harmonic mean of one metric (the headline number), e.g.
        ``results.score("closed", "correct", order="shuffled")``."""
        for section in self.sections:
            if section.mode == mode and (order is None or section.order == order):
                return section.cells[metric][AVERAGE]["hm"]
        msg = f"no {mode} world results (order {order}) in this evaluation"
        raise KeyError(msg)

    def to_json(self) -> dict[str, Any]:
        """Everything as plain data (the ``.json`` file)."""
        return {
            "run": asdict(self.figures),
            "datasets": self.datasets,
            "trials": self.trials,
            "sections": [
                {
                    "mode": s.mode,
                    "option_order": s.order,
                    "answered": s.answered,
                    "expected": s.expected,
                    "metrics": {
                        metric: {
                            dataset: {part: asdict(cell) for part, cell in parts.items()}
                            for dataset, parts in rows.items()
                        }
                        for metric, rows in s.cells.items()
                    },
                }
                for s in self.sections
            ],
            "paper": None if self.paper is None else {"source": PAPER, **asdict(self.paper)},
            "notes": self.notes,
        }

    def _grid(self, section: Section, metric: str) -> tuple[list[str], list[list[str]]]:
        """Header and rows of one metric's table (shared by rich and markdown)."""
        header = ["dataset", "seen", "unseen", "HM"]
        with_std = self.trials > 1
        rows = [
            [dataset]
            + [section.cells[metric][dataset][part].text(with_std=with_std) for part in PARTS]
            for dataset in [*self.datasets, AVERAGE]
        ]
        published = self._paper_cells(section, metric)
        if published is not None:
            rows.append([f"paper: {self.paper.model}"] + [published[p] for p in PARTS])  # type: ignore[union-attr]
        return header, rows

    def _paper_cells(self, section: Section, metric: str) -> dict[str, str] | None:
        """The published seen/unseen/HM for this section's metric, when the paper has them."""
        if self.paper is None or metric != _paper_metric(section.mode):
            return None
        pair = self.paper.closed if section.mode == "closed" else self.paper.open_ss_rel
        if pair is None:
            return None
        seen, unseen = pair
        hm = harmonic_mean(seen, unseen)
        return {"seen": f"{seen:.2f}", "unseen": f"{unseen:.2f}", "hm": f"{hm:.2f}"}

    def _tables(self) -> list[tuple[str, Section, str]]:
        """(title, section, metric) of every table, in reading order."""
        return [
            (f"{section.title}: {LABELS[metric]}", section, metric)
            for section in self.sections
            for metric in METRICS[section.mode]
        ]

    def tables(self) -> list[Table]:
        """One rich table per mode, option order and metric."""
        tables = []
        for title, section, metric in self._tables():
            header, rows = self._grid(section, metric)
            table = Table(title=f"{self.figures.model}: {title}")
            for index, name in enumerate(header):
                table.add_column(name, justify="left" if index == 0 else "right")
            for row in rows:
                table.add_row(*row, end_section=row[0] == AVERAGE)
            table.caption = self._caption(section, metric)
            tables.append(table)
        return tables

    def _caption(self, section: Section, metric: str) -> str:
        parts = [f"{section.answered}/{section.expected} questions answered"]
        if self.trials > 1:
            parts.append(f"mean ± std over {self.trials} trials")
        if self._paper_cells(section, metric) is not None:
            parts.append(f"paper: {PAPER}")
        return "; ".join(parts)

    def to_markdown(self) -> str:
        """The tables as GitHub markdown (the ``.md`` file)."""
        lines = [f"# Evaluation of {self.figures.model} ({self.figures.run_id})", ""]
        for title, section, metric in self._tables():
            header, rows = self._grid(section, metric)
            lines += [f"## {title}", ""]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines += ["", self._caption(section, metric) + ".", ""]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _paper_metric(mode: Mode) -> str:
    """The metric the paper reports for a mode: text inclusion (closed), SS_rel (open)."""
    return "text_inclusion" if mode == "closed" else "ss_rel"


def aggregate(
    frame: pl.DataFrame,
    *,
    figures: RunFigures,
    modes: Sequence[Mode],
    datasets: Sequence[str],
    trials: int,
    paper: PaperRow | None = None,
    notes: Sequence[str] = (),
    expected: dict[tuple[str, str | None], int] | None = None,
) -> EvalResults:
    """Turn the predictions of one evaluation into :class:`EvalResults`.

    ``frame`` is :meth:`Store.predictions` of the evaluation's prediction ids; ``expected``
    the number of questions per (mode, order), to say how many went unanswered; ``paper`` the
    published row to show beside (:func:`cotforge.eval.paper.paper_row`).
    """
    sections = []
    for mode in modes:
        of_mode = frame.filter(pl.col("mode") == mode)
        orders = sorted(set(of_mode["option_order"].to_list()), key=lambda o: (o is None, o))
        for order in orders or [None]:
            part = of_mode.filter(
                pl.col("option_order").is_null()
                if order is None
                else pl.col("option_order") == order
            )
            cells = {
                metric: _cells(part, metric, datasets=datasets, trials=trials)
                for metric in METRICS[mode]
            }
            wanted = (expected or {}).get((mode, order), part.height)
            sections.append(Section(mode, order, cells, part.height, wanted))
    results = EvalResults(
        figures=figures,
        sections=sections,
        datasets=list(datasets),
        trials=trials,
        paper=paper,
        notes=list(notes),
    )
    missing = sum(s.expected - s.answered for s in sections)
    if missing:
        results.notes.append(
            f"{missing} questions have no answer (requests that failed for good); the scores "
            "leave them out; run the same command again to ask them again"
        )
    return results


def _cells(
    frame: pl.DataFrame, metric: str, *, datasets: Sequence[str], trials: int
) -> dict[str, dict[str, Cell]]:
    """dataset (and average) -> seen/unseen/hm -> cell, for one metric of one section."""
    scores: dict[tuple[int, str, str], float] = {}
    if frame.height:
        grouped = frame.group_by("trial", "dataset", "class_split").agg(
            pl.col(metric).cast(pl.Float64).mean().alias("score")
        )
        for row in grouped.iter_rows(named=True):
            if row["score"] is not None:
                scores[(row["trial"], row["dataset"], row["class_split"])] = 100 * row["score"]
    per_trial: dict[tuple[str, str], list[float]] = {}
    for trial in range(trials):
        averages: dict[str, list[float]] = {"seen": [], "unseen": []}
        for dataset in datasets:
            seen = scores.get((trial, dataset, "seen"))
            unseen = scores.get((trial, dataset, "unseen"))
            for split, value in (("seen", seen), ("unseen", unseen)):
                if value is not None:
                    per_trial.setdefault((dataset, split), []).append(value)
                    averages[split].append(value)
            if seen is not None and unseen is not None:
                per_trial.setdefault((dataset, "hm"), []).append(harmonic_mean(seen, unseen))
        mean_seen = _mean(averages["seen"])
        mean_unseen = _mean(averages["unseen"])
        for split, value in (("seen", mean_seen), ("unseen", mean_unseen)):
            if value is not None:
                per_trial.setdefault((AVERAGE, split), []).append(value)
        if mean_seen is not None and mean_unseen is not None:
            per_trial.setdefault((AVERAGE, "hm"), []).append(harmonic_mean(mean_seen, mean_unseen))
    cells: dict[str, dict[str, Cell]] = {}
    for dataset in [*datasets, AVERAGE]:
        cells[dataset] = {}
        for part in PARTS:
            values = per_trial.get((dataset, part))
            cells[dataset][part] = Cell(*mean_std(values)) if values else Cell(None, None)
    return cells


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None
