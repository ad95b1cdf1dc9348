"""The quality report on a small hand-made store whose every figure is known: rates per check,
dataset and class, failure reasons, lengths, candidates, duplicates, teacher usage; the HTML
page and its plots; a report per run; and an empty store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from PIL import Image
from rich.console import Console

from cotforge.errors import CotforgeError
from cotforge.report import build_report, print_report, write_html
from cotforge.store import Store

SAMPLES = {
    "r1": ("cub/train/bank/1.jpg", "cub", "Bank Swallow"),
    "r2": ("cub/train/bank/2.jpg", "cub", "Bank Swallow"),
    "r3": ("dogs/train/chihuahua/3.jpg", "dogs", "Chihuahua"),
    "r4": ("cub/train/tree/4.jpg", "cub", "Tree Swallow"),
    "r5": ("cub/import/tree/5.jpg", "cub", "Tree Swallow"),
}
CANDIDATES = {"r1": ["A", "B"], "r2": ["A", "B"], "r3": ["A", "B", "C"], "r4": ["A", "B", "C", "D"]}
# (check, passed, required, reason) per rationale; r5 is never verified
VERDICTS = {
    "r1": [("structure", True, True, None), ("correct", True, True, None)],
    "r2": [("structure", True, True, None), ("correct", False, True, "names another class")],
    "r3": [
        ("structure", False, True, "missing section: comparison"),
        ("correct", False, True, "names another class"),
    ],
    "r4": [("structure", True, True, None), ("correct", True, True, None)],
}
LEAK = "leaks the label: <script>as stated</script> 中文"


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "cotforge.duckdb") as opened:
        yield opened


def fill(store: Store) -> dict[str, str]:
    """Five rationales (four generated, one imported), verdicts, one duplicate pair, teacher
    calls; returns the run ids by kind."""
    runs = {kind: store.start_run(kind, {}, {}) for kind in ("generate", "verify", "dedup")}
    store.add_images(
        [
            {
                "image_id": sample,
                "dataset": dataset,
                "split": sample.split("/")[1],
                "key": sample.split("/", 2)[2],
                "class_index": 0,
                "label": name,
                "class_name": name,
            }
            for sample, dataset, name in SAMPLES.values()
        ]
    )
    requests: list[dict[str, Any]] = []
    rationales = []
    for n, rid in enumerate(("r1", "r2", "r3", "r4"), 1):
        requests.append(
            request(f"q{n}", runs["generate"], latency_s=float(n), response_text="x" * (1000 * n))
        )
        rationales.append(
            {
                "rationale_id": rid,
                "request_id": f"q{n}",
                "sample_id": SAMPLES[rid][0],
                "analysis": "a" * (100 * n),
                "candidates": CANDIDATES[rid],
                "comparison": "c" * 50,
                "prediction": "p" * 10,
            }
        )
    requests.append(
        request("q5", runs["generate"], status="error", latency_s=0.5, prompt_tokens=None)
    )
    store.add_request_results(requests, rationales)
    store.add_request_results(
        [request("q6", runs["verify"], purpose="judge", model="judge-model", cost_usd=0.01)], []
    )
    store.add_rationales(
        [{"rationale_id": "r5", "sample_id": SAMPLES["r5"][0], "raw_text": "imported text"}]
    )
    store.upsert_verdicts(
        [
            {
                "rationale_id": rid,
                "check_name": check,
                "passed": passed,
                "required": required,
                "reason": reason,
                "run_id": runs["verify"],
            }
            for rid, checks in VERDICTS.items()
            for check, passed, required, reason in [*checks, ("leakage", False, False, LEAK)]
        ]
    )
    store.upsert_duplicates(
        [
            {"rationale_id": rid, "cluster_id": "r1", "kind": "near", "similarity": 0.8}
            | {"kept": rid == "r1", "run_id": runs["dedup"]}
            for rid in ("r1", "r4")
        ]
    )
    return runs


def request(request_id: str, run_id: str, **overrides: Any) -> dict[str, Any]:
    row = {
        "request_id": request_id,
        "run_id": run_id,
        "sample_id": None,
        "purpose": "rationale",
        "model": "teacher",
        "prompt_hash": "p" * 64,
        "status": "ok",
        "response_text": "judged",
        "latency_s": 1.0,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "cost_usd": 0.002,
    }
    return row | overrides


def rows(frame: pl.DataFrame, *columns: str) -> list[tuple]:
    return list(frame.select(columns).iter_rows())


def test_rates_and_figures_on_known_data(store: Store) -> None:
    fill(store)
    report = build_report(store)

    assert dict(report.summary) == {
        "rationales": 5,
        "verified": 4,
        "passed verification": 2,  # r1, r4; leakage is not required
        "flagged duplicates": 1,
        "accepted (passed, not a flagged duplicate)": 1,  # r4 is r1's near duplicate
        "teacher calls": 6,
        "prompt tokens": 5000,
        "completion tokens": 3000,
        "cost (USD)": pytest.approx(0.02),
    }
    assert rows(report.checks, "check", "required", "verdicts", "passed", "pass_rate") == [
        ("correct", True, 4, 2, 0.5),
        ("leakage", False, 4, 0, 0.0),
        ("structure", True, 4, 3, 0.75),
    ]
    assert rows(report.datasets, "dataset", "rationales", "verified", "passed", "pass_rate") == [
        ("cub", 4, 3, 2, pytest.approx(2 / 3)),
        ("dogs", 1, 1, 0, 0.0),
    ]
    assert rows(report.classes, "class_name", "rationales", "verified", "pass_rate") == [
        ("Chihuahua", 1, 1, 0.0),
        ("Bank Swallow", 2, 2, 0.5),
        ("Tree Swallow", 2, 1, 1.0),
    ]
    assert rows(report.failures, "check", "reason", "count", "examples") == [
        ("leakage", LEAK, 4, ["r1", "r2", "r3"]),  # at most three examples
        ("correct", "names another class", 2, ["r2", "r3"]),
        ("structure", "missing section: comparison", 1, ["r3"]),
    ]
    lengths = {row["stage"]: row for row in report.lengths.iter_rows(named=True)}
    assert set(lengths) == {"whole text", "analysis", "options", "comparison", "prediction"}
    assert lengths["whole text"]["rationales"] == 5  # the imported text counts too
    assert (lengths["whole text"]["max"], lengths["whole text"]["min"]) == (4000, 13)
    analysis = lengths["analysis"]
    assert (analysis["rationales"], analysis["min"], analysis["max"]) == (4, 100, 400)
    assert analysis["mean"] == 250.0
    assert lengths["options"]["max"] == len("A, B, C, D")
    assert rows(report.candidates, "candidates", "rationales") == [(0, 1), (2, 2), (3, 1), (4, 1)]
    assert rows(report.clusters, "size", "clusters", "flagged") == [(2, 1, 1)]
    teacher = {row["purpose"]: row for row in report.teacher.iter_rows(named=True)}
    assert (teacher["rationale"]["calls"], teacher["rationale"]["ok"]) == (5, 4)
    assert teacher["rationale"]["errors"] == 1
    assert teacher["rationale"]["prompt_tokens"] == 4000
    assert teacher["rationale"]["latency_max"] == 4.0
    assert teacher["judge"]["model"] == "judge-model"
    assert sorted(report.latencies.to_list()) == [0.5, 1.0, 1.0, 2.0, 3.0, 4.0]


def test_report_of_one_run(store: Store) -> None:
    runs = fill(store)
    generated = build_report(store, run_id=runs["generate"])
    assert dict(generated.summary)["rationales"] == 4  # not the imported r5
    assert generated.teacher["purpose"].to_list() == ["rationale"]
    assert generated.scope == f"generate run {runs['generate']}"

    verified = build_report(store, run_id=runs["verify"])
    assert sorted(verified.profiles["rationale_id"]) == ["r1", "r2", "r3", "r4"]
    assert verified.teacher["purpose"].to_list() == ["judge"]

    deduplicated = build_report(store, run_id=runs["dedup"])
    assert sorted(deduplicated.profiles["rationale_id"]) == ["r1", "r4"]
    assert deduplicated.checks["verdicts"].to_list() == [2, 2, 2]
    assert deduplicated.teacher.height == 0

    with pytest.raises(CotforgeError, match="has no run 'nope'"):
        build_report(store, run_id="nope")


def test_printed_tables(store: Store) -> None:
    fill(store)
    console = Console(record=True, width=200)
    print_report(build_report(store), console)
    text = console.export_text()
    for title in ("Pass rate per check", "Failure reasons", "Teacher usage", "Duplicate clusters"):
        assert title in text
    assert "75.0%" in text and "66.7%" in text
    assert "r1, r2, r3" in text


def test_html_page_and_plots(store: Store, tmp_path: Path) -> None:
    fill(store)
    out = tmp_path / "report"
    page = write_html(build_report(store), out)
    assert page == out / "index.html"
    text = page.read_text(encoding="utf-8")
    plots = sorted(path.name for path in out.glob("*.png"))
    assert plots == ["candidates.png", "checks.png", "latency.png", "lengths.png"]
    for name in plots:
        assert f'src="{name}"' in text
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(out / name) as image:
            image.verify()
    assert str(tmp_path) not in text
    assert 'src="/' not in text and "file:" not in text
    assert "<script>" not in text and "&lt;script&gt;as stated&lt;/script&gt;" in text
    assert "中文" in text and '<meta charset="utf-8">' in text
    assert "Pass rate per class" in text and "Chihuahua" in text


def test_empty_store_says_so(store: Store, tmp_path: Path) -> None:
    report = build_report(store)
    assert report.empty
    console = Console(record=True, width=200)
    print_report(report, console)
    assert "Nothing to report: the whole store has no rationales" in console.export_text()

    out = tmp_path / "report"
    fill_then_empty = out / "lengths.png"
    out.mkdir()
    fill_then_empty.write_bytes(b"stale plot of an earlier report")
    page = write_html(report, out)
    assert "Nothing to report" in page.read_text(encoding="utf-8")
    assert list(out.glob("*.png")) == []


def test_report_folder_that_is_a_file(store: Store, tmp_path: Path) -> None:
    blocker = tmp_path / "report"
    blocker.write_text("not a folder")
    with pytest.raises(CotforgeError, match="is a file"):
        write_html(build_report(store), blocker)
