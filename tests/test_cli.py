"""The command line end to end on official-layout fixtures: happy paths and every user error."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cotforge.cli import app
from cotforge.data.annotations import load_annotations
from cotforge.store import Store
from tests.fixtures.fgvr_layouts import LayoutInfo

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COTFORGE_HOME", str(tmp_path / "home"))
    for name in ("COTFORGE_STORE", "COTFORGE_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pets(official_layout: Callable[..., LayoutInfo]) -> LayoutInfo:
    """Every Oxford-IIIT Pet class, as a real download has, with one corrupt image."""
    return official_layout("pets", n_classes=None, train_per_class=6, corrupt=1)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_help_on_every_verb() -> None:
    for verb in ([], ["datasets"], ["datasets", "list"], ["datasets", "show"], ["plan"], ["stats"]):
        code, out, _ = run(*verb, "--help")
        assert code == 0, verb
        assert "Usage" in out


def test_datasets_list_names_all_six() -> None:
    code, out, _ = run("datasets", "list")
    assert code == 0
    for name in ("aircraft", "cub", "cars", "dogs", "flowers", "pets"):
        assert name in out
    assert "60/40" in out


def test_datasets_show_counts(pets: LayoutInfo) -> None:
    code, out, _ = run("datasets", "show", "pets", "--root", str(pets.root))
    assert code == 0, out
    assert str(pets.counts["train"]) in out
    assert "22 seen, 15 unseen" in out


def test_plan_writes_shots_and_triplets(pets: LayoutInfo) -> None:
    code, out, err = run("plan", "--dataset", "pets", "--shots", "4", "--root", str(pets.root))
    assert code == 0, err
    assert "anchors planned" in out
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        samples = db.table("samples")
        triplets = db.table("triplets")
        images = db.table("images")
        skipped = db.table("skipped")
    notes = load_annotations("pets")
    seen = {info.index for info in notes.classes if info.paper_split == "seen"}
    assert samples.height == 4 * len(seen)
    assert set(samples["class_index"]) == seen
    assert samples.group_by("class_index").len()["len"].to_list() == [4] * len(seen)
    assert triplets.height == samples.height
    class_of = dict(zip(images["image_id"], images["class_index"], strict=True))
    for row in triplets.iter_rows(named=True):
        anchor_class = class_of[row["anchor_id"]]
        assert class_of[row["positive_id"]] == anchor_class
        assert row["positive_id"] != row["anchor_id"]
        assert class_of[row["negative_id"]] == row["negative_class_index"] != anchor_class
        assert row["negative_class_index"] in seen
    corrupt_ids = {f"pets/train/{key}" for key in pets.corrupt_keys}
    assert corrupt_ids.isdisjoint(samples["sample_id"])
    assert corrupt_ids.isdisjoint(set(triplets["positive_id"]) | set(triplets["negative_id"]))
    assert set(skipped["image_id"]) <= corrupt_ids

    code, out, _ = run("stats", "--json")
    figures = json.loads(out)
    assert figures["samples"] == 4 * len(seen)
    expected = (
        "requests",
        "rationales",
        "accepted",
        "failed",
        "duplicates",
        "reviewed",
        "exported",
    )
    assert set(expected) <= set(figures)


def test_plan_with_unseen_shots_adds_unseen_anchors_without_triplets(pets: LayoutInfo) -> None:
    args = ["plan", "--dataset", "pets", "--root", str(pets.root), "--shots", "2"]
    assert run(*args, "--unseen-shots", "1")[0] == 0
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        samples = db.table("samples")
        triplets = db.table("triplets")
    notes = load_annotations("pets")
    unseen = {info.index for info in notes.classes if info.paper_split == "unseen"}
    unseen_rows = samples.filter(pl.col("class_split") == "unseen")
    assert set(unseen_rows["class_index"]) == unseen
    assert unseen_rows.height == len(unseen)
    assert set(triplets["anchor_id"]).isdisjoint(unseen_rows["sample_id"])
    assert triplets.height == samples.height - len(unseen)


def test_replanning_replaces_and_is_deterministic(pets: LayoutInfo) -> None:
    args = ["plan", "--dataset", "pets", "--root", str(pets.root)]
    assert run(*args, "--shots", "2", "--seed", "3")[0] == 0
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        first = db.table("samples").sort("sample_id")["sample_id"]
    assert run(*args, "--shots", "3", "--seed", "9")[0] == 0
    assert run(*args, "--shots", "2", "--seed", "3")[0] == 0
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        again = db.table("samples").sort("sample_id")["sample_id"]
        runs = db.table("runs")
    assert again.to_list() == first.to_list()
    assert runs.filter(pl.col("kind") == "plan").height == 3


def test_config_file_and_env_drive_plan(pets: LayoutInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("cotforge.toml").write_text(
        f'store = "from-file.duckdb"\n[plan]\ndataset = "pets"\nshots = 3\nroot = "{pets.root}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("COTFORGE_PLAN_SHOTS", "2")
    code, _, err = run("plan")
    assert code == 0, err
    with Store.open(Path("from-file.duckdb"), read_only=True) as db:
        assert set(db.table("samples").group_by("class_index").len()["len"]) == {2}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["datasets", "show", "birds"], "unknown dataset 'birds'; choose one of"),
        (["plan", "--dataset", "pets", "--shots", "7"], "--shots 7 needs 7 usable images"),
        (["plan", "--dataset", "pets", "--shots", "0"], "'shots' from --shots"),
        (["plan", "--dataset", "pets", "--from-split", "val"], "--from-split 'val' is not a split"),
        (["plan", "--dataset", "pets", "--strategy", "nearest"], "'strategy' from --strategy"),
    ],
)
def test_user_errors_are_one_line(pets: LayoutInfo, args: list[str], expected: str) -> None:
    code, out, err = run(*args, "--root", str(pets.root))
    assert code != 0
    assert expected in err
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1


def test_missing_dataset_under_default_root_without_download() -> None:
    code, _, err = run("datasets", "show", "cub", "--no-download")
    assert code != 0
    assert "--no-download" in err and "cotforge datasets download cub" in err


def test_explicit_root_that_is_incomplete(pets: LayoutInfo) -> None:
    (pets.root / "annotations" / "test.txt").unlink()
    code, _, err = run("datasets", "show", "pets", "--root", str(pets.root))
    assert code != 0
    assert "annotations/test.txt" in err


def test_half_extracted_images_are_reported(pets: LayoutInfo) -> None:
    for image in sorted((pets.root / "images").iterdir())[::3]:
        image.unlink()
    code, _, err = run("plan", "--dataset", "pets", "--root", str(pets.root))
    assert code != 0
    assert "partly extracted" in err


def test_store_from_newer_schema(pets: LayoutInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("plan", "--dataset", "pets", "--root", str(pets.root))[0] == 0
    import duckdb

    con = duckdb.connect("cotforge.duckdb")
    con.execute("INSERT INTO schema_version (version) VALUES (999)")
    con.close()
    code, _, err = run("stats")
    assert code != 0
    assert "newer cotforge" in err and "cotforge.duckdb" in err


def test_unwritable_store_path(pets: LayoutInfo) -> None:
    Path("not-a-dir").write_text("x", encoding="utf-8")
    code, _, err = run(
        "plan", "--dataset", "pets", "--root", str(pets.root), "--store", "not-a-dir/s.duckdb"
    )
    assert code != 0
    assert "not-a-dir/s.duckdb" in err


def test_stats_on_missing_store() -> None:
    code, _, err = run("stats", "--store", "nowhere.duckdb")
    assert code != 0
    assert "nowhere.duckdb" in err


def test_console_script_reports_without_traceback(tmp_path: Path) -> None:
    """The installed entry point, not just the typer app, keeps expected errors one line."""
    result = subprocess.run(
        [sys.executable, "-m", "cotforge", "datasets", "show", "nope"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "unknown dataset 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


SAMPLE = Path(__file__).parent / "data" / "fine_r1_stage1_sample.json"


def test_import_verify_dedup_report_on_the_real_records() -> None:
    """The released records flow through every quality verb and end up accepted."""
    assert run("import", str(SAMPLE))[0] == 0
    code, out, err = run("import", str(SAMPLE))
    assert code == 0, err
    assert "already in the store" in out

    code, out, err = run("verify")
    assert code == 0, err
    assert run("verify")[1].count("nothing new") == 1

    code, out, err = run("dedup")
    assert code == 0, err
    code, out, err = run("report", "--out", "report")
    assert code == 0, err
    assert (Path("report") / "index.html").is_file()
    figures = json.loads(run("stats", "--json")[1])
    assert figures["rationales"] == figures["accepted"] == 12
    assert figures["duplicates"] == 0


def test_verify_workers_flag_reaches_the_run_and_rejects_zero() -> None:
    assert run("import", str(SAMPLE))[0] == 0
    code, _, err = run("verify", "--workers", "0")
    assert code != 0
    assert "--workers" in err
    code, _, err = run("verify", "--workers", "2")
    assert code == 0, err
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        runs = db.table("runs", where={"kind": "verify"})
        accepted = db.stats()["accepted"]
    assert json.loads(runs["config"][0])["workers"] == 2
    assert accepted == 12


def test_import_of_a_missing_file_is_one_line() -> None:
    code, _, err = run("import", "nowhere.json")
    assert code != 0
    assert "nowhere.json" in err
    assert len(err.strip().splitlines()) == 1


def test_verify_rejects_unknown_check_names() -> None:
    code, _, err = run("verify", "--required", "structure,vibes")
    assert code != 0
    assert "vibes" in err
