"""``cotforge report``: how good the data in the store is, for a run or for the whole store.

Before training on a chain-of-thought set, a person needs to see which checks reject what, which
classes the teacher gets wrong, how long the stages are, how many candidates are listed, how much
was duplicated and what the teacher cost. :func:`build_report` computes all of it through the
store's readers (no texts are loaded: lengths are measured in the database), :func:`print_report`
shows it as rich tables and :func:`write_html` writes a folder a person can open or send: an
``index.html`` with plain CSS and PNG plots beside it, linked by relative paths and naming no
folder of the machine that made it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.table import Table

from cotforge.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from rich.console import Console

    from cotforge.store import Store

STAGES = {
    "whole text": "text_chars",
    "analysis": "analysis_chars",
    "options": "options_chars",
    "comparison": "comparison_chars",
    "prediction": "prediction_chars",
}
"""Length figures reported, by name, with the column of the store's rationale profiles."""

EXAMPLES = 3
"""Rationale ids shown per failure reason: enough to open a few, few enough to read."""

PLOTS = ("lengths.png", "checks.png", "candidates.png", "latency.png")
"""The PNG files :func:`write_html` may write; stale ones from an earlier report are removed."""

_PRINTED_ROWS = 15
_HTML_ROWS = 500
_UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class Report:
    """Every figure of the quality report, as small frames ready to print or plot.

    ``profiles`` (one row of character counts per rationale) and ``latencies`` feed the plots;
    the other frames are the tables. A rate is None where nothing was judged.
    """

    scope: str
    summary: tuple[tuple[str, object], ...]
    checks: pl.DataFrame
    datasets: pl.DataFrame
    classes: pl.DataFrame
    failures: pl.DataFrame
    lengths: pl.DataFrame
    candidates: pl.DataFrame
    clusters: pl.DataFrame
    teacher: pl.DataFrame
    profiles: pl.DataFrame = field(repr=False)
    latencies: pl.Series = field(repr=False)

    @property
    def empty(self) -> bool:
        """True when the scope holds neither rationales nor teacher calls."""
        return self.profiles.height == 0 and self.teacher.height == 0

    def tables(self) -> list[tuple[str, pl.DataFrame, str]]:
        """(title, frame, what it shows) of each non-empty table, in reading order; the one
        list both the terminal and the HTML page render, so they never disagree."""
        tables = [
            ("Pass rate per check", self.checks, "share of verdicts of each check that passed"),
            (
                "Pass rate per dataset",
                self.datasets,
                "verified: rationales with a verdict; passed: every required check passed",
            ),
            ("Pass rate per class", self.classes, "lowest pass rate first"),
            (
                "Failure reasons",
                self.failures,
                f"most frequent first, with up to {EXAMPLES} rationale ids each",
            ),
            ("Rationale length (characters)", self.lengths, "per stage, rationales that have it"),
            ("Candidates listed", self.candidates, "rationales by number of candidates"),
            ("Duplicate clusters", self.clusters, "clusters by size (kept member included)"),
            ("Teacher usage", self.teacher, "calls, tokens, cost (USD) and latency (s)"),
        ]
        return [(title, frame, note) for title, frame, note in tables if frame.height]


def build_report(store: Store, *, run_id: str | None = None) -> Report:
    """The quality report of the whole store, or of the rationales and calls of one run.

    A run's rationales are those it produced, judged or clustered (see
    :meth:`cotforge.store.Store.rationale_profiles`); its teacher calls are its own requests.

    Raises:
        ConfigError: ``run_id`` names no run of the store.
    """
    scope = "the whole store"
    if run_id is not None:
        runs = store.table("runs", where={"run_id": run_id})
        if runs.height == 0:
            msg = f"{store.path.name} has no run {run_id!r}; pass a run id from 'cotforge stats'"
            raise ConfigError(msg)
        scope = f"{runs['kind'][0]} run {run_id}"
    profiles = store.rationale_profiles(run_id=run_id).with_columns(
        pl.col("dataset").fill_null(_UNKNOWN), pl.col("class_name").fill_null(_UNKNOWN)
    )
    ids = profiles.select("rationale_id")
    verdicts = store.table("verdicts").join(ids, on="rationale_id", how="semi")
    duplicates = store.table("duplicates").join(ids, on="rationale_id", how="semi")
    usage = store.request_usage(run_id=run_id)

    passed = verdicts.group_by("rationale_id").agg(
        passed=(pl.col("passed") | ~pl.col("required")).all()
    )
    scored = profiles.join(passed, on="rationale_id", how="left")
    flagged = duplicates.filter(~pl.col("kept")).select("rationale_id")
    summary = (
        ("rationales", profiles.height),
        ("verified", passed.height),
        ("passed verification", int(passed["passed"].sum())),
        ("flagged duplicates", flagged.height),
        (
            "accepted (passed, not a flagged duplicate)",
            scored.filter(pl.col("passed")).join(flagged, on="rationale_id", how="anti").height,
        ),
        ("teacher calls", usage.height),
        ("prompt tokens", int(usage["prompt_tokens"].sum())),
        ("completion tokens", int(usage["completion_tokens"].sum())),
        ("cost (USD)", float(usage["cost_usd"].sum())),
    )
    return Report(
        scope=scope,
        summary=summary,
        checks=_check_rates(verdicts),
        datasets=_pass_rates(scored, ["dataset"]).sort("dataset"),
        classes=_pass_rates(scored, ["dataset", "class_name"]).sort(
            ["pass_rate", "dataset", "class_name"], nulls_last=True
        ),
        failures=_failures(verdicts),
        lengths=_length_summary(profiles),
        candidates=profiles.group_by("candidate_count")
        .agg(rationales=pl.len())
        .sort("candidate_count")
        .rename({"candidate_count": "candidates"}),
        clusters=_cluster_sizes(duplicates),
        teacher=_teacher(usage),
        profiles=profiles,
        latencies=usage["latency_s"].drop_nulls(),
    )


def _rate(numerator: str, denominator: str) -> pl.Expr:
    """numerator / denominator, None (not NaN) where nothing was counted."""
    return (
        pl.when(pl.col(denominator) > 0)
        .then(pl.col(numerator) / pl.col(denominator))
        .otherwise(None)
        .alias("pass_rate")
    )


def _check_rates(verdicts: pl.DataFrame) -> pl.DataFrame:
    """Per check: whether it is required, how many verdicts, how many passed."""
    return (
        verdicts.group_by("check_name")
        .agg(required=pl.col("required").any(), verdicts=pl.len(), passed=pl.col("passed").sum())
        .with_columns(failed=pl.col("verdicts") - pl.col("passed"))
        .with_columns(_rate("passed", "verdicts"))
        .rename({"check_name": "check"})
        .sort("check")
    )


def _pass_rates(scored: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Per group: rationales, verified ones, and those whose every required check passed."""
    return (
        scored.group_by(by)
        .agg(
            rationales=pl.len(),
            verified=pl.col("passed").is_not_null().sum(),
            passed=pl.col("passed").fill_null(False).sum(),
        )
        .with_columns(_rate("passed", "verified"))
    )


def _failures(verdicts: pl.DataFrame) -> pl.DataFrame:
    """Failed verdicts grouped by (check, reason), most frequent first, with a few examples."""
    return (
        verdicts.filter(~pl.col("passed"))
        .with_columns(pl.col("reason").fill_null("(no reason given)"))
        .group_by("check_name", "reason")
        .agg(count=pl.len(), examples=pl.col("rationale_id").sort().head(EXAMPLES))
        .sort(["count", "check_name", "reason"], descending=[True, False, False])
        .rename({"check_name": "check"})
    )


def _length_summary(profiles: pl.DataFrame) -> pl.DataFrame:
    """Distribution of characters per stage: count, extremes, deciles, median and mean."""
    rows = []
    for stage, column in STAGES.items():
        values = profiles[column].drop_nulls()
        if values.len():
            rows.append(
                {
                    "stage": stage,
                    "rationales": values.len(),
                    "min": values.min(),
                    "p10": int(values.quantile(0.1, "nearest")),
                    "median": int(values.quantile(0.5, "nearest")),
                    "p90": int(values.quantile(0.9, "nearest")),
                    "max": values.max(),
                    "mean": values.mean(),
                }
            )
    return pl.DataFrame(rows)


def _cluster_sizes(duplicates: pl.DataFrame) -> pl.DataFrame:
    """How many clusters of each size, and how many of their members were flagged."""
    return (
        duplicates.group_by("cluster_id")
        .agg(size=pl.len(), flagged=(~pl.col("kept")).sum())
        .group_by("size")
        .agg(clusters=pl.len(), flagged=pl.col("flagged").sum())
        .sort("size")
    )


def _teacher(usage: pl.DataFrame) -> pl.DataFrame:
    """Per (purpose, model): calls by status, token and cost totals, latency quantiles."""
    latency = pl.col("latency_s")
    return (
        usage.group_by("purpose", "model")
        .agg(
            calls=pl.len(),
            ok=(pl.col("status") == "ok").sum(),
            errors=(pl.col("status") == "error").sum(),
            prompt_tokens=pl.col("prompt_tokens").sum(),
            completion_tokens=pl.col("completion_tokens").sum(),
            cost_usd=pl.col("cost_usd").sum(),
            latency_p50=latency.quantile(0.5, "nearest"),
            latency_p90=latency.quantile(0.9, "nearest"),
            latency_max=latency.max(),
        )
        .sort("purpose", "model")
    )


# --- text rendering --------------------------------------------------------------------------


def _cell(column: str, value: Any) -> str:
    """One value as text: rates in percent, money and seconds with fixed decimals."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column == "pass_rate":
        return f"{value:.1%}"
    if isinstance(value, float):
        if column.startswith("cost") or column == "cost (USD)":
            return f"{value:.4f}"
        if column.startswith("latency"):
            return f"{value:.2f}"
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _headers(frame: pl.DataFrame) -> list[str]:
    return [name.replace("_", " ") for name in frame.columns]


def _numeric(frame: pl.DataFrame, column: str) -> bool:
    return frame.schema[column].is_numeric()


def print_report(report: Report, console: Console) -> None:
    """Print the report as rich tables; long tables show their first rows and say so."""
    if report.empty:
        console.print(f"Nothing to report: {report.scope} has no rationales and no teacher calls.")
        return
    summary = Table(title=f"Quality report: {report.scope}")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for figure, value in report.summary:
        summary.add_row(figure, _cell(figure, value))
    console.print(summary)
    for title, frame, note in report.tables():
        table = Table(title=title)
        for column, header in zip(frame.columns, _headers(frame), strict=True):
            table.add_column(header, justify="right" if _numeric(frame, column) else "left")
        for row in frame.head(_PRINTED_ROWS).iter_rows(named=True):
            table.add_row(*(_cell(column, value) for column, value in row.items()))
        hidden = frame.height - _PRINTED_ROWS
        table.caption = note + (f"; {hidden} more rows in the HTML report" if hidden > 0 else "")
        console.print(table)


# --- HTML and plots --------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-size: 0.9em; margin: 0.2em 0; }
figure { display: inline-block; margin: 1em 1em 0 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
"""


def write_html(report: Report, out_dir: Path | str) -> Path:
    """Write ``out_dir/index.html`` and its PNG plots; return the page's path.

    The page embeds its CSS and links its plots by file name, so the folder can be moved, zipped
    or served as is. Raises :class:`ConfigError` when ``out_dir`` cannot be created.
    """
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        msg = f"report folder {folder} is a file; pass --out-dir a folder"
        raise ConfigError(msg) from None
    except PermissionError:
        msg = f"report folder {folder} cannot be created; pass --out-dir a writable folder"
        raise ConfigError(msg) from None
    plots = [] if report.empty else _write_plots(report, folder)
    for stale in set(PLOTS) - {name for name, _ in plots}:
        (folder / stale).unlink(missing_ok=True)
    page = folder / "index.html"
    page.write_text(_page(report, plots), encoding="utf-8")
    return page


def _page(report: Report, plots: list[tuple[str, str]]) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>cotforge quality report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>cotforge quality report</h1>",
        f'<p class="note">{html.escape(report.scope)}; written {stamp} by cotforge '
        f"{html.escape(version('cotforge'))}</p>",
    ]
    if report.empty:
        parts.append(
            f"<p>Nothing to report: {html.escape(report.scope)} has no rationales and no "
            "teacher calls.</p>"
        )
    else:
        parts.append("<h2>Summary</h2>")
        summary = pl.DataFrame(
            {
                "figure": [figure for figure, _ in report.summary],
                "value": [_cell(figure, value) for figure, value in report.summary],
            }
        )
        parts.append(_html_table(summary, right={"value"}))
        if plots:
            parts.append("<h2>Plots</h2>")
            parts += [
                f'<figure><img src="{name}" alt="{html.escape(title)}">'
                f"<figcaption>{html.escape(title)}</figcaption></figure>"
                for name, title in plots
            ]
        for title, frame, note in report.tables():
            parts.append(f"<h2>{html.escape(title)}</h2>")
            parts.append(f'<p class="note">{html.escape(note)}</p>')
            parts.append(_html_table(frame.head(_HTML_ROWS)))
            if frame.height > _HTML_ROWS:
                parts.append(f'<p class="note">first {_HTML_ROWS} of {frame.height} rows</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_table(frame: pl.DataFrame, *, right: Collection[str] = ()) -> str:
    """A table of formatted cells; numbers (and the ``right`` columns) align right."""
    numeric = [_numeric(frame, column) or column in right for column in frame.columns]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _headers(frame))
    rows = []
    for row in frame.iter_rows():
        cells = "".join(
            f'<td class="num">{html.escape(_cell(column, value))}</td>'
            if is_number
            else f"<td>{html.escape(_cell(column, value))}</td>"
            for column, value, is_number in zip(frame.columns, row, numeric, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _write_plots(report: Report, folder: Path) -> list[tuple[str, str]]:
    """Draw the plots that have data; (file name, title) of each written.

    Figures are drawn on the Agg canvas directly, never through pyplot, so no window or global
    backend is touched and the function is safe in a headless process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def save(
        name: str, title: str, draw: Callable[[Figure], None], width: float = 8
    ) -> tuple[str, str]:
        figure = Figure(figsize=(width, 3.5), layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure)
        figure.savefig(folder / name, format="png", dpi=100)
        return name, title

    written = []
    stages = [(s, c) for s, c in STAGES.items() if report.profiles[c].drop_nulls().len()]
    if stages:
        written.append(
            save(
                "lengths.png",
                "characters per stage",
                lambda f: _lengths(f, report, stages),
                width=2.6 * len(stages),
            )
        )
    if report.checks.height:
        written.append(save("checks.png", "pass rate per check", lambda f: _checks(f, report)))
    if report.candidates.height:
        written.append(
            save("candidates.png", "candidates per rationale", lambda f: _candidates(f, report))
        )
    if report.latencies.len():
        written.append(
            save("latency.png", "teacher latency (s)", lambda f: _latency(f, report.latencies))
        )
    return written


def _lengths(figure: Figure, report: Report, stages: list[tuple[str, str]]) -> None:
    axes = figure.subplots(1, len(stages), squeeze=False)[0]
    for ax, (stage, column) in zip(axes, stages, strict=True):
        ax.hist(report.profiles[column].drop_nulls().to_numpy(), bins=30, color="#4c72b0")
        _label(ax, stage, "characters", "rationales")


def _checks(figure: Figure, report: Report) -> None:
    ax = figure.subplots()
    rates = report.checks["pass_rate"].fill_null(0.0).to_list()
    bars = ax.barh(report.checks["check"].to_list(), rates, color="#55a868")
    ax.bar_label(bars, labels=[f"{rate:.0%}" for rate in rates], padding=3)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    _label(ax, "pass rate per check", "share passed", "")


def _candidates(figure: Figure, report: Report) -> None:
    ax = figure.subplots()
    ax.bar(
        report.candidates["candidates"].to_list(),
        report.candidates["rationales"].to_list(),
        color="#8172b3",
    )
    _label(ax, "candidates per rationale", "candidates listed", "rationales")
    ax.set_xticks(report.candidates["candidates"].to_list())


def _latency(figure: Figure, latencies: pl.Series) -> None:
    ax = figure.subplots()
    ax.hist(latencies.to_numpy(), bins=30, color="#c44e52")
    _label(ax, "teacher latency", "seconds", "calls")


def _label(ax: Axes, title: str, x: str, y: str) -> None:
    """Title and axis labels; counts on the y axis get whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.set_title(title)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
