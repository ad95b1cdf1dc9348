"""The DuckDB store: schema and migrations, every table's writes and reads, stats, errors, and
that a process killed mid-write leaves a consistent file."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

import cotforge.store as store_module
from cotforge.errors import StoreError
from cotforge.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "cotforge.duckdb") as opened:
        yield opened


def _request(request_id: str, run_id: str, **overrides) -> dict:
    row = {
        "request_id": request_id,
        "run_id": run_id,
        "sample_id": "cub/train/001.Black_footed_Albatross/a.jpg",
        "purpose": "rationale",
        "model": "qwen",
        "prompt_hash": "p" * 64,
        "attempt": 0,
        "params": {"temperature": 0.7, "max_tokens": 1024},
        "status": "ok",
        "response_text": f"<analysis>{request_id}</analysis>",
        "latency_s": 1.5,
        "prompt_tokens": 900,
        "completion_tokens": 300,
        "cost_usd": 0.001,
    }
    return {**row, **overrides}


def _rationale(rationale_id: str, request_id: str | None, **overrides) -> dict:
    row = {
        "rationale_id": rationale_id,
        "request_id": request_id,
        "sample_id": "cub/train/001.Black_footed_Albatross/a.jpg",
        "raw_text": "<analysis>dark bill</analysis><answer>Black-footed Albatross</answer>",
        "analysis": "dark bill",
        "candidates": ["Black-footed Albatross", "Laysan Albatross"],
        "comparison": "darker than Laysan",
        "prediction": "Black-footed Albatross",
    }
    return {**row, **overrides}


ROUND_TRIPS = {
    "images": (
        "add_images",
        [
            {
                "image_id": "cub/train/images/001/a.jpg",
                "dataset": "cub",
                "split": "train",
                "key": "images/001/a.jpg",
                "class_index": 0,
                "label": "001.Black_footed_Albatross",
                "class_name": "Black-footed Albatross",
            }
        ],
    ),
    "samples": (
        "add_samples",
        [
            {
                "sample_id": "cub/train/images/001/a.jpg",
                "run_id": "plan-1",
                "dataset": "cub",
                "class_index": 0,
                "label": "001.Black_footed_Albatross",
                "class_name": "Black-footed Albatross",
                "class_split": "seen",
                "shot": 0,
                "seed": 7,
            }
        ],
    ),
    "triplets": (
        "add_triplets",
        [
            {
                "anchor_id": "cub/train/images/001/a.jpg",
                "positive_id": "cub/train/images/001/b.jpg",
                "negative_id": "cub/train/images/002/c.jpg",
                "negative_class_index": 1,
                "negative_label": "002.Laysan_Albatross",
                "strategy": "sibling",
                "run_id": "plan-1",
            }
        ],
    ),
    "skipped": (
        "add_skipped",
        [{"image_id": "cub/train/images/001/z.jpg", "run_id": "plan-1", "reason": "truncated"}],
    ),
    "requests": ("upsert_requests", [_request("req-1", "generate-1")]),
    "rationales": ("add_rationales", [_rationale("rat-1", "req-1")]),
    "verdicts": (
        "upsert_verdicts",
        [
            {
                "rationale_id": "rat-1",
                "check_name": "structure",
                "passed": False,
                "required": True,
                "reason": "missing <answer>",
                "run_id": "verify-1",
            }
        ],
    ),
    "duplicates": (
        "upsert_duplicates",
        [
            {
                "rationale_id": "rat-1",
                "cluster_id": "c-1",
                "kind": "near",
                "similarity": 0.93,
                "kept": False,
                "run_id": "dedup-1",
            }
        ],
    ),
    "reviews": (
        "upsert_reviews",
        [
            {
                "rationale_id": "rat-1",
                "reviewer": "ana",
                "decision": "edited",
                "problems": ["leakage", "length"],
                "edited_text": "shorter",
                "notes": "fixed",
            }
        ],
    ),
    "exports": (
        "add_exports",
        [
            {
                "export_id": "export-1",
                "config": "sft",
                "split": "train",
                "shard": "train-00000-of-00001.parquet",
                "row_index": 0,
                "rationale_id": "rat-1",
                "sample_id": "cub/train/images/001/a.jpg",
            }
        ],
    ),
}


def _decoded(row: dict) -> dict:
    """A row as given, with JSON values as the store returns them (encoded text)."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()}


# --- schema and migrations ----------------------------------------------------------------------


LATEST = store_module.MIGRATIONS[-1][0]
VERSIONS = [version for version, _ in store_module.MIGRATIONS]


def test_new_store_has_the_latest_schema_and_every_table(store: Store) -> None:
    assert store.table("schema_version")["version"].to_list() == VERSIONS
    for name in [*ROUND_TRIPS, "runs", "dedup_index"]:
        assert store.table(name).height == 0


def _with_v2(statements: list[str]) -> list[tuple[int, list[str]]]:
    """The shipped migrations plus one more (named v2 when only v1 existed)."""
    return [*store_module.MIGRATIONS, (LATEST + 1, statements)]


def test_a_v1_store_gains_rationale_runs_and_the_dedup_index(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cotforge.duckdb"
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        with Store.open(path) as store:
            store.upsert_requests([_request("req-1", "generate-1")])
            store.add_rationales([_rationale("rat-1", "req-1")])
            assert "run_id" not in store.table("rationales").columns
    with Store.open(path) as store:
        assert store.table("schema_version")["version"].to_list() == VERSIONS
        assert store.table("rationales")["run_id"].to_list() == ["generate-1"]
        assert store.table("dedup_index").height == 0


def test_a_v5_store_drops_its_dedup_blob_for_per_document_rows(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cotforge.duckdb"
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:5])
        with Store.open(path) as store:
            store._con.execute(
                "INSERT INTO dedup_index (name, params, data, documents) "
                "VALUES ('minhash:x', '{}', 'old'::BLOB, 3)"
            )
    with Store.open(path) as store:
        assert store.table("schema_version")["version"].to_list() == VERSIONS
        assert store.table("dedup_index").columns == ["name", "params", "documents", "updated_at"]
        assert store.table("dedup_index").height == 0
        assert store.load_dedup_index("minhash:x") is None
        assert store.table("dedup_signatures").height == 0


def test_v1_file_is_migrated_when_a_v2_migration_is_added(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cotforge.duckdb"
    with Store.open(path) as store:
        store.upsert_requests([_request("req-1", "generate-1")])
    monkeypatch.setattr(
        store_module, "MIGRATIONS", _with_v2(["ALTER TABLE requests ADD COLUMN seed INTEGER"])
    )
    with Store.open(path) as store:
        assert store.table("schema_version")["version"].to_list() == [*VERSIONS, LATEST + 1]
        assert store.table("requests")["request_id"].to_list() == ["req-1"]
        store.upsert_requests([_request("req-2", "generate-1", seed=3)])  # the new column
        assert store.table("requests", where={"request_id": "req-2"})["seed"].to_list() == [3]


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cotforge.duckdb"
    Store.open(path).close()
    broken = _with_v2(["ALTER TABLE requests ADD COLUMN seed INTEGER", "NOT SQL AT ALL"])
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    with pytest.raises(duckdb.ParserException):
        Store.open(path)
    monkeypatch.undo()
    with Store.open(path) as store:
        assert store.table("schema_version")["version"].to_list() == VERSIONS
        assert "seed" not in store.table("requests").columns


def test_store_from_a_newer_cotforge_is_refused(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cotforge.duckdb"
    with monkeypatch.context() as patched:
        patched.setattr(store_module, "MIGRATIONS", _with_v2(["CREATE TABLE notes (x INTEGER)"]))
        Store.open(path).close()
    expected = (
        f"{path} was written by a newer cotforge (schema v{LATEST + 1}, this one knows up to "
        f"v{LATEST}); "
        "upgrade cotforge"
    )
    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert str(err.value) == expected
    with pytest.raises(StoreError, match="newer cotforge"):
        Store.open(path, read_only=True)


def test_read_only_open_of_an_old_schema_asks_for_a_writable_open(tmp_path, monkeypatch) -> None:
    path = tmp_path / "cotforge.duckdb"
    Store.open(path).close()
    monkeypatch.setattr(store_module, "MIGRATIONS", _with_v2(["CREATE TABLE notes (x INTEGER)"]))
    with pytest.raises(StoreError, match="without --read-only to upgrade it"):
        Store.open(path, read_only=True)


# --- writes and reads ---------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(ROUND_TRIPS))
def test_each_table_round_trips_its_rows(store: Store, table: str) -> None:
    method, rows = ROUND_TRIPS[table]
    assert getattr(store, method)(rows) == len(rows)
    frame = store.table(table)
    assert frame.select(list(rows[0])).to_dicts() == [_decoded(row) for row in rows]
    stamped = [c for c in ("created_at", "submitted_at", "finished_at") if c in frame.columns]
    assert all(frame[c].null_count() == 0 for c in stamped)


@pytest.mark.parametrize("table", sorted(ROUND_TRIPS))
def test_each_table_takes_a_polars_frame_like_dicts(store: Store, table: str) -> None:
    method, rows = ROUND_TRIPS[table]
    frame = pl.DataFrame([_decoded(row) for row in rows])
    getattr(store, method)(frame)
    assert store.table(table).select(frame.columns).to_dicts() == frame.to_dicts()


@pytest.mark.parametrize(
    ("table", "column", "changed"),
    [
        ("images", "class_name", "Another Name"),
        ("samples", "seed", 8),
        ("triplets", "negative_id", "cub/train/images/003/d.jpg"),
        ("skipped", "reason", "other"),
        ("rationales", "analysis", "rewritten"),
        ("exports", "rationale_id", "rat-2"),
    ],
)
def test_adding_an_existing_key_keeps_the_first_row(store, table, column, changed) -> None:
    method, rows = ROUND_TRIPS[table]
    getattr(store, method)(rows)
    assert getattr(store, method)(rows) == 0  # replanning the same plan is a no-op
    assert getattr(store, method)([{**rows[0], column: changed}]) == 0
    assert store.table(table).height == 1
    assert store.table(table)[column].to_list() == [rows[0][column]]


@pytest.mark.parametrize(
    ("table", "column", "changed"),
    [
        ("verdicts", "passed", True),
        ("duplicates", "kept", True),
        ("reviews", "problems", ["language"]),
        ("requests", "response_text", "a retried answer"),
    ],
)
def test_upserting_an_existing_key_replaces_the_row(store, table, column, changed) -> None:
    method, rows = ROUND_TRIPS[table]
    first = {**rows[0], "status": "error"} if table == "requests" else rows[0]
    getattr(store, method)([first])
    getattr(store, method)([{**rows[0], column: changed}])
    assert store.table(table).height == 1
    assert store.table(table)[column].to_list() == [changed]


def test_replace_plan_swaps_one_datasets_anchors_and_triplets(store: Store) -> None:
    image = ROUND_TRIPS["images"][1][0]
    sample = ROUND_TRIPS["samples"][1][0]
    triplet = ROUND_TRIPS["triplets"][1][0]

    def plan(dataset: str, keys: list[str], seed: int) -> dict:
        ids = [f"{dataset}/train/{key}" for key in keys]
        return {
            "images": [{**image, "image_id": i, "dataset": dataset, "key": i} for i in ids],
            "samples": [
                {**sample, "sample_id": i, "dataset": dataset, "shot": shot, "seed": seed}
                for shot, i in enumerate(ids)
            ],
            "triplets": [{**triplet, "anchor_id": i} for i in ids],
        }

    store.replace_plan("cub", **plan("cub", ["a", "b", "c"], seed=1))
    store.replace_plan("pets", **plan("pets", ["a"], seed=1))
    store.replace_plan("cub", **plan("cub", ["c", "d"], seed=2))
    samples = store.table("samples").sort("sample_id")
    assert samples.select("sample_id", "shot", "seed").rows() == [
        ("cub/train/c", 0, 2),
        ("cub/train/d", 1, 2),
        ("pets/train/a", 0, 1),
    ]
    assert sorted(store.table("triplets")["anchor_id"]) == samples["sample_id"].to_list()
    assert store.table("images").height == 5  # images are facts, only ever added
    bad = plan("cub", ["e"], seed=3)
    bad["samples"][0]["class_split"] = "maybe"
    with pytest.raises(ValueError, match=r"samples\.class_split"):
        store.replace_plan("cub", **bad)
    assert store.table("samples").height == 3  # a failed replan leaves the old plan


def test_last_row_of_a_key_wins_within_one_batch(store: Store) -> None:
    verdict = ROUND_TRIPS["verdicts"][1][0]
    store.upsert_verdicts([verdict, {**verdict, "passed": True, "reason": None}])
    assert store.table("verdicts").select("passed", "reason").rows() == [(True, None)]


def test_a_finished_request_is_never_downgraded(store: Store) -> None:
    store.upsert_requests([_request("req-1", "generate-1", status="pending", response_text=None)])
    pending = store.table("requests")
    assert pending["finished_at"].to_list() == [None]
    store.add_request_results([_request("req-1", "generate-1")], [_rationale("rat-1", "req-1")])
    done = store.table("requests")
    assert done["status"].to_list() == ["ok"]
    assert done["finished_at"].null_count() == 0
    assert done["created_at"].to_list() == pending["created_at"].to_list()
    # A rerun re-plans the request as pending: the finished answer must survive.
    store.upsert_requests([_request("req-1", "generate-2", status="pending", response_text=None)])
    again = store.table("requests")
    assert again.select("status", "run_id", "response_text").rows() == [
        ("ok", "generate-1", "<analysis>req-1</analysis>")
    ]


def test_request_results_are_all_or_nothing(store: Store) -> None:
    requests = [_request("req-1", "generate-1")]
    broken = [_rationale("rat-1", "req-1"), _rationale("rat-2", "req-1", sample_id=None)]
    with pytest.raises(ValueError, match="rationales do not fit its schema"):
        store.add_request_results(requests, broken)
    assert store.table("requests").height == 0
    assert store.table("rationales").height == 0


def test_request_results_refuse_orphans_and_pending_calls(store: Store) -> None:
    with pytest.raises(ValueError, match="name requests not in this call"):
        store.add_request_results([_request("req-1", "g")], [_rationale("rat-1", "req-9")])
    with pytest.raises(ValueError, match="use upsert_requests for pending"):
        store.add_request_results([_request("req-1", "g", status="pending")], [])


def test_transaction_groups_writes_and_rolls_back_on_error(store: Store) -> None:
    images = ROUND_TRIPS["images"][1]
    with pytest.raises(RuntimeError), store.transaction():
        store.add_images(images)
        store.add_skipped(ROUND_TRIPS["skipped"][1])
        raise RuntimeError
    assert store.table("images").height == 0
    assert store.table("skipped").height == 0
    with store.transaction():
        store.add_images(images)
        store.add_skipped(ROUND_TRIPS["skipped"][1])
    assert (store.table("images").height, store.table("skipped").height) == (1, 1)


def test_runs_start_and_finish(store: Store) -> None:
    run_id = store.start_run("generate", {"teacher": {"model": "qwen"}}, {"cotforge": "0.1.0"})
    assert run_id.startswith("generate-")
    started = store.table("runs")
    assert started.select("kind", "status", "ended_at").rows() == [("generate", "running", None)]
    assert json.loads(started["config"][0]) == {"teacher": {"model": "qwen"}}
    store.finish_run(run_id, "ok")
    assert store.table("runs").select("status").item() == "ok"
    assert store.table("runs")["ended_at"].null_count() == 0
    with pytest.raises(ValueError, match="one of plan, generate"):
        store.start_run("train", {}, {})
    with pytest.raises(ValueError, match="one of ok, failed, interrupted"):
        store.finish_run(run_id, "done")
    with pytest.raises(ValueError, match="no run 'nope'"):
        store.finish_run("nope", "ok")


def test_a_finishing_block_ends_its_run_by_how_the_block_ended(store: Store) -> None:
    def status_after(error: BaseException | None) -> str:
        run_id = store.start_run("verify", {}, {})
        with (
            pytest.raises(type(error)) if error else contextlib.nullcontext(),
            store.finishing(run_id),
        ):
            if error:
                raise error
        return store.table("runs", where={"run_id": run_id})["status"].item()

    assert status_after(None) == "ok"
    assert status_after(KeyboardInterrupt()) == "interrupted"
    assert status_after(OSError("disk full")) == "failed"


def test_secrets_are_never_stored(store: Store) -> None:
    with pytest.raises(ValueError, match=r"teacher\.api_key.*looks like a secret"):
        store.start_run("generate", {"teacher": {"api_key": "sk-123"}}, {})
    with pytest.raises(ValueError, match="hf_token"):
        store.upsert_requests([_request("req-1", "g", params={"hf_token": "hf_abc"})])
    frame = pl.DataFrame([_request("req-1", "g")])
    with pytest.raises(ValueError, match=r"requests\.params holds token"):
        store.upsert_requests(frame.with_columns(params=pl.struct(token=pl.lit("t"))))
    store.start_run("generate", {"max_tokens": 10, "api_key": None}, {})  # not secrets
    assert store.table("requests").height == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{**ROUND_TRIPS["images"][1][0], "colour": "red"}], "images has no column 'colour'"),
        ([{"image_id": "a", "dataset": "cub"}], "lack required column"),
        ([{**ROUND_TRIPS["images"][1][0], "class_index": "zero"}], "images.class_index"),
    ],
)
def test_bad_rows_are_refused_before_writing(store: Store, rows, message) -> None:
    with pytest.raises(ValueError, match=message):
        store.add_images(rows)
    assert store.table("images").height == 0


def test_enumerated_columns_are_checked(store: Store) -> None:
    sample = {**ROUND_TRIPS["samples"][1][0], "class_split": "maybe"}
    with pytest.raises(ValueError, match=r"samples\.class_split must be one of seen, unseen"):
        store.add_samples([sample])
    with pytest.raises(ValueError, match=r"requests\.status must be one of"):
        store.upsert_requests([_request("req-1", "g", status="done")])


def test_readers_filter_by_equality(store: Store) -> None:
    store.upsert_requests(
        [
            _request("req-1", "g1"),
            _request("req-2", "g1", model="llava"),
            _request("req-3", "g2", status="error", response_text=None, error="timeout"),
            _request("req-4", "g2", status="pending", response_text=None, sample_id=None),
        ]
    )
    ids = store.table("requests", where={"status": ["ok", "error"]})["request_id"]
    assert sorted(ids) == ["req-1", "req-2", "req-3"]
    assert store.table("requests", where={"sample_id": None})["request_id"].to_list() == ["req-4"]
    assert store.table("requests", where={"status": []}).height == 0
    assert store.finished_request_ids() == {"req-1", "req-2"}
    assert store.finished_request_ids(model="qwen") == {"req-1"}
    assert store.finished_request_ids(run_id="g2") == set()
    with pytest.raises(ValueError, match="requests has no column 'colour'"):
        store.table("requests", where={"colour": "red"})
    with pytest.raises(ValueError, match="no table 'colours'"):
        store.table("colours")


def test_request_results_join_rationales_with_their_calls(store: Store) -> None:
    store.add_request_results(
        [_request("req-1", "g1"), _request("req-2", "g1", model="llava")],
        [_rationale("rat-1", "req-1"), _rationale("rat-2", "req-2")],
    )
    store.add_rationales([_rationale("rat-3", None, parent_id="rat-1", version=2)])  # an edit
    joined = store.request_results()
    assert sorted(joined["rationale_id"]) == ["rat-1", "rat-2"]
    assert {"model", "latency_s", "raw_text", "candidates"} <= set(joined.columns)
    qwen = store.request_results(where={"model": "qwen"})
    assert qwen.select("rationale_id", "model").rows() == [("rat-1", "qwen")]


def test_stats_counts_accepted_and_failed(store: Store) -> None:
    samples = ROUND_TRIPS["samples"][1][0]
    store.add_samples([{**samples, "sample_id": f"s{i}", "shot": i} for i in range(3)])
    store.upsert_requests(
        [
            _request("req-p", "g", status="pending", response_text=None),
            _request("req-e", "g", status="error", response_text=None, error="timeout"),
        ]
    )
    names = ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]
    store.add_request_results(
        [_request("req-1", "g")], [_rationale(name, "req-1") for name in names]
    )

    def verdict(rationale_id: str, check: str, passed: bool, required: bool = True) -> dict:
        return {
            "rationale_id": rationale_id,
            "check_name": check,
            "passed": passed,
            "required": required,
            "run_id": "v",
        }

    store.upsert_verdicts(
        [
            verdict("r1", "structure", True),  # accepted
            verdict("r1", "correctness", True),
            verdict("r2", "correctness", False),  # fails two required checks
            verdict("r2", "language", False),
            verdict("r3", "correctness", True),  # an optional check failing does not reject
            verdict("r3", "judge", False, required=False),
            verdict("r4", "correctness", True),  # passes, but flagged as a duplicate
            verdict("r6", "correctness", True),  # passes, kept in its duplicate cluster
            verdict("r7", "correctness", False),
            verdict("r7", "judge", False, required=False),
            # r5 has no verdict: not verified, so not accepted
        ]
    )
    store.upsert_duplicates(
        [
            {
                "rationale_id": "r4",
                "cluster_id": "c",
                "kind": "exact",
                "kept": False,
                "run_id": "d",
            },
            {"rationale_id": "r6", "cluster_id": "c", "kind": "exact", "kept": True, "run_id": "d"},
        ]
    )
    review = ROUND_TRIPS["reviews"][1][0]
    store.upsert_reviews(
        [
            {**review, "rationale_id": "r1"},
            {**review, "rationale_id": "r1", "reviewer": "bo"},
            {**review, "rationale_id": "r3"},
        ]
    )
    export = ROUND_TRIPS["exports"][1][0]
    store.add_exports(
        [
            {**export, "rationale_id": "r1"},
            {**export, "rationale_id": "r1", "config": "tapo"},
            {**export, "rationale_id": "r3", "row_index": 1},
            {**export, "rationale_id": None, "config": "eval", "split": "test"},
        ]
    )
    stats = store.stats()
    assert stats["samples"] == 3
    assert stats["requests"] == {"error": 1, "ok": 1, "pending": 1}
    assert stats["rationales"] == 7
    assert stats["accepted"] == 3  # r1, r3, r6
    assert stats["failed"] == {"correctness": 2, "language": 1}
    assert stats["duplicates"] == 1
    assert stats["reviewed"] == 2  # r1 (two reviewers) and r3
    assert stats["exported"] == 2


# --- opening errors -----------------------------------------------------------------------------


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "cotforge.duckdb"
    with Store.open(path) as store:
        store.add_images(ROUND_TRIPS["images"][1])
    with Store.open(path, read_only=True) as store:
        assert store.table("images").height == 1
        with pytest.raises(StoreError, match="open read-only; open it without --read-only"):
            store.add_images(ROUND_TRIPS["images"][1])
        with pytest.raises(StoreError, match="read-only"):
            store.start_run("plan", {}, {})
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "missing.duckdb", read_only=True)


def test_unwritable_location_is_refused(tmp_path: Path) -> None:
    # chmod does not stop root; a path under a regular file fails for everyone.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = blocker / "cotforge.duckdb"
    with pytest.raises(StoreError) as err:
        Store.open(path)
    assert str(err.value) == (f"{path} is not writable; pass --store PATH to a writable location")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_path_on_a_read_only_filesystem_is_refused() -> None:
    with pytest.raises(StoreError, match="is not writable; pass --store PATH"):
        Store.open("/proc/cotforge-test.duckdb")


@pytest.mark.parametrize("content", [b"", b"id,label\n1,albatross\n"])
def test_a_file_that_is_not_duckdb_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="is not a DuckDB database; pass --store PATH"):
        Store.open(path)
    assert path.read_bytes() == content


def test_a_duckdb_file_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE birds (name VARCHAR)")
    con.close()
    with pytest.raises(StoreError, match="not a cotforge store"):
        Store.open(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(tmp_path)


def test_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cotforge.duckdb"
    with Store.open(path), pytest.raises(StoreError, match="already open in this process"):
        Store.open(path)
    Store.open(path).close()  # closing released it


def _python(code: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    return subprocess.Popen(command, env=env, text=True, **popen)


def test_store_held_by_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cotforge.duckdb"
    holder = _python(
        """
        import sys, time
        from cotforge.store import Store
        store = Store.open(sys.argv[1])
        print("ready", flush=True)
        time.sleep(60)
        """,
        str(path),
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as err:
            Store.open(path)
        assert str(err.value) == (
            f"another cotforge process (PID {holder.pid}) holds {path}; wait for it to finish or "
            "pass --store PATH to another file"
        )
        with pytest.raises(StoreError, match="another cotforge process"):
            Store.open(path, read_only=True)
    finally:
        holder.kill()
        holder.wait()


# --- crash safety -------------------------------------------------------------------------------

_WRITER = """
    import random, sys
    import cotforge.store as store_module
    # Checkpoint every few batches, so kills also land inside checkpoints.
    store_module._CHECKPOINT_THRESHOLD = "256KiB"
    path, batch = sys.argv[1], int(sys.argv[2])
    store = store_module.Store.open(path)
    run_id = store.start_run("generate", {}, {})
    rng = random.Random(run_id)
    words = ["wing", "bill", "crest", "tail", "nape", "breast", "primaries", "mantle"]
    n = 0
    while True:
        requests, rationales = [], []
        for i in range(batch):
            request_id = f"{run_id}/{n}/{i}"
            text = " ".join(rng.choices(words, k=400))
            requests.append({
                "request_id": request_id, "run_id": run_id, "sample_id": f"s/{n}/{i}",
                "purpose": "rationale", "model": "qwen", "prompt_hash": "h",
                "params": {"n": 2}, "status": "ok", "response_text": text,
            })
            rationales += [
                {"rationale_id": f"{request_id}#{j}", "request_id": request_id,
                 "sample_id": f"s/{n}/{i}", "raw_text": text[j:], "analysis": text[:j]}
                for j in range(2)
            ]
        store.add_request_results(requests, rationales)
        n += 1
        print(n, flush=True)
"""


def _write_until_killed(path: Path, batch: int, batches: int, rng: random.Random) -> int:
    """Run the writer until it reports ``batches`` commits, SIGKILL it at a random moment."""
    writer = _python(_WRITER, str(path), str(batch), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reported = 0
    try:
        deadline = time.monotonic() + 60
        while reported < batches and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                pytest.fail(f"the writer died: {writer.stderr.read()}")
            reported = int(line)
        time.sleep(rng.uniform(0, 0.05))  # land anywhere inside the next batch
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    return reported


def _assert_consistent(path: Path, batch: int) -> int:
    with Store.open(path) as store:
        requests = store.table("requests")
        rationales = store.table("rationales")
    assert set(requests["status"]) <= {"ok"}
    assert requests.height % batch == 0
    assert rationales.height == 2 * requests.height
    by_request = rationales.group_by("request_id").agg(pl.col("rationale_id").sort())
    expected = requests.select(
        "request_id",
        rationale_id=pl.concat_list(pl.col("request_id") + "#0", pl.col("request_id") + "#1"),
    )
    assert by_request.sort("request_id").to_dicts() == expected.sort("request_id").to_dicts()
    return requests.height


def test_a_killed_writer_leaves_a_consistent_store(tmp_path: Path) -> None:
    path, batch, rng = tmp_path / "cotforge.duckdb", 20, random.Random(0)
    committed = 0
    for _ in range(2):  # the second round writes on top of a recovered file
        committed += _write_until_killed(path, batch, batches=6, rng=rng) * batch
        count = _assert_consistent(path, batch)
        assert count >= committed  # every batch the writer reported survived the kill


def test_rationale_text_is_stored_once_and_read_back(store: Store) -> None:
    """A rationale made by a request keeps no copy of the response; readers coalesce it."""
    request = _request("req-1", "generate-1")
    store.add_request_results([request], [_rationale("rat-1", "req-1", raw_text=None)])
    assert store.table("rationales")["raw_text"].to_list() == [None]
    assert store.request_results()["raw_text"].to_list() == [request["response_text"]]


def test_generated_rationales_take_their_request_run(store: Store) -> None:
    store.add_request_results([_request("req-1", "generate-7")], [_rationale("rat-1", "req-1")])
    assert store.table("rationales")["run_id"].to_list() == ["generate-7"]


def test_rationale_without_request_must_carry_text(store: Store) -> None:
    with pytest.raises(ValueError, match="neither a request_id nor a raw_text"):
        store.add_rationales([_rationale("rat-1", None, raw_text=None)])


def test_reads_after_stats_still_work(store: Store) -> None:
    """DuckDB 2 refuses new work while a result is half-fetched; stats() must not leave one."""
    store.stats()
    assert store.table("rationales").height == 0
    assert store.rationales_for_verify(only_unverified=True).height == 0


def test_readers_of_texts_work_beyond_duckdbs_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 MB of text under a 32 MiB limit, as 100k real rationales are under the real 256 MiB:
    sorting them in DuckDB ran out of its memory; the readers return every row, in order."""
    monkeypatch.setattr(store_module, "_MEMORY_LIMIT", "32MiB")
    count = 15_000
    order = list(range(count))
    random.Random(0).shuffle(order)
    with Store.open(tmp_path / "big.duckdb") as db:
        db.add_images(
            [
                {
                    "image_id": f"cub/train/{k}.jpg",
                    "dataset": "cub",
                    "split": "train",
                    "key": f"{k}.jpg",
                    "class_index": k,
                    "label": str(k),
                    "class_name": f"class {k}",
                }
                for k in range(3)
            ]
        )
        db.add_rationales(
            [
                {
                    "rationale_id": f"r{n:05d}",
                    "sample_id": f"cub/train/{n % 3}.jpg",
                    "raw_text": (f"rationale {n} " * 400)[:4000],
                }
                for n in order
            ]
        )
        ids = [f"r{n:05d}" for n in range(count)]
        assert db.rationales_for_verify(only_unverified=True)["rationale_id"].to_list() == ids
        dedup = db.rationales_for_dedup()
        assert dedup.columns == ["rationale_id", "text", "dataset", "class_index"]
        assert sorted(dedup["rationale_id"].to_list()) == ids
        review = db.review_candidates(only="all")
        assert review.height == count
        assert review["class_index"].is_sorted()
        assert review.filter(pl.col("class_index") == 0)["rationale_id"].to_list() == ids[::3]
        db.add_rationales(
            [
                {"rationale_id": f"{root}-edit", "sample_id": "cub/train/0.jpg",
                 "raw_text": "edited", "parent_id": root, "version": 2}
                for root in ids[::7]
            ]
        )  # fmt: skip
        chains = db.version_chains(ids)
        assert chains.height == count + len(ids[::7])
        assert chains["root_id"].is_sorted()
        assert chains.filter(pl.col("root_id") == ids[7])["rationale_id"].to_list() == [
            ids[7],
            f"{ids[7]}-edit",
        ]
