"""``cotforge review push / pull / status`` against a real Argilla 2.8 server (redis, osmem and
argilla-server started once per session), with a store made by ``cotforge generate``.

Each test pushes to a dataset of its own on the shared server and answers records as the
stack's annotators through the REST calls the UI makes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cotforge.argilla_stack import ArgillaStack
from cotforge.cli import app
from cotforge.errors import ReviewError
from cotforge.review import pull, push, status
from cotforge.review_records import sdk
from cotforge.store import Store
from tests.fixtures.argilla import CuttableProxy
from tests.review_helpers import (
    copy_store,
    edited,
    generate_store,
    options,
    record_uuids,
    respond,
    runner,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_store(tmp_path_factory.mktemp("review"))[0]


@pytest.fixture
def store(generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("COTFORGE_CONFIG", "ARGILLA_API_URL", "ARGILLA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return copy_store(generated, tmp_path)


def dataset_of(stack: ArgillaStack, name: str) -> Any:
    """The SDK's view of a dataset on the stack, as its owner."""
    client = sdk().Argilla(api_url=stack.url, api_key=stack.owner.api_key)
    return client.datasets(name=name, workspace="cotforge")


def snapshot(path: Path) -> dict[str, pl.DataFrame]:
    with Store.open(path, read_only=True) as db:
        return {
            name: db.table(name)
            for name in ("runs", "rationales", "verdicts", "reviews", "review_pushes")
        }


# --- push -------------------------------------------------------------------------------------


def test_push_shows_each_rationale_and_a_second_push_updates(
    argilla_stack: ArgillaStack, store: Path
) -> None:
    opts = options(argilla_stack, "push-update", batch_size=4)
    with Store.open(store) as db:
        summary = push(db, opts)
        candidates = db.review_candidates(only="accepted")
    assert summary.sent == candidates.height == 6
    records = {r.id: r for r in dataset_of(argilla_stack, "push-update").records}
    assert set(records) == set(candidates["rationale_id"])
    row = candidates.row(0, named=True)
    shown = records[row["rationale_id"]]
    assert shown.fields["image"].format == "JPEG"  # the SDK decodes the data URI it got
    assert max(shown.fields["image"].size) <= opts.image_side
    assert shown.fields["analysis"] == row["analysis"]
    assert shown.fields["comparison"] == row["comparison"]
    assert row["class_name"] in shown.fields["true_class"]
    assert shown.metadata["class"] == row["class_name"]
    assert shown.metadata["failed_checks"] == ["none"]
    assert shown.suggestions["edited_rationale"].value == row["text"]

    with Store.open(store) as db:
        again = push(db, opts)
        assert (again.sent, again.unchanged, again.run_id) == (0, 6, None)
        flagged = candidates["rationale_id"][1]
        db.upsert_duplicates(
            [
                {
                    "rationale_id": flagged,
                    "cluster_id": "c",
                    "kind": "near",
                    "kept": False,
                    "run_id": "test",
                }
            ]
        )
        changed = push(db, options(argilla_stack, "push-update", only="all"))
    assert (changed.sent, changed.unchanged) == (1, 5)
    records = {r.id: r for r in dataset_of(argilla_stack, "push-update").records}
    assert len(records) == 6  # updated in place, not duplicated
    assert records[flagged].metadata["duplicate"] == "flagged"


def test_push_through_cli_reports_counts(argilla_stack: ArgillaStack, store: Path) -> None:
    result = runner.invoke(
        app,
        [
            *("review", "push", "--store", str(store), "--dataset-name", "cli-push"),
            *("--api-url", argilla_stack.url),
        ],
        env={"ARGILLA_API_KEY": argilla_stack.owner.api_key},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "records sent (new or changed)" in result.stdout
    assert argilla_stack.owner.api_key not in result.stdout + result.stderr


# --- pull -------------------------------------------------------------------------------------


def test_pull_keeps_each_reviewer_curates_and_versions_edits(
    argilla_stack: ArgillaStack, store: Path
) -> None:
    name = "pull"
    opts = options(argilla_stack, name)
    owner, (first, second) = argilla_stack.owner, argilla_stack.annotators
    with Store.open(store) as db:
        push(db, opts)
        texts = dict(db.review_candidates(only="all").select("rationale_id", "text").iter_rows())
    ids = sorted(texts)
    uuids = record_uuids(argilla_stack, dataset_of(argilla_stack, name).id)
    respond(argilla_stack, first, uuids[ids[0]], decision="accept")
    respond(argilla_stack, second, uuids[ids[0]], decision="reject", problems=["label_leakage"])
    respond(argilla_stack, first, uuids[ids[1]], decision="accept")
    respond(argilla_stack, second, uuids[ids[1]], decision="accept", notes="fine")
    new_text = edited(texts[ids[2]])
    respond(argilla_stack, first, uuids[ids[2]], decision="needs_edit", edited_rationale=new_text)
    respond(argilla_stack, owner, uuids[ids[3]], decision="accept")
    respond(argilla_stack, first, uuids[ids[3]], decision="accept")
    respond(argilla_stack, second, uuids[ids[3]], decision="reject")

    with Store.open(store) as db:
        summary = pull(db, opts)
        reviews = db.table("reviews")
        latest = {r: d for r, d in reviews.filter(reviewer="cotforge:majority")
                  .select("rationale_id", "decision").iter_rows()}  # fmt: skip
        version = db.table("rationales", where={"parent_id": ids[2]})
        verdicts = db.table("verdicts", where={"rationale_id": f"{ids[2]}@v2"})
        exported = set(db.export_rationale_images(review="require")["rationale_id"])
    assert (summary.responded, summary.responses) == (4, 8)
    # every reviewer's decision is kept, disagreements included
    mine = reviews.filter(pl.col("rationale_id") == ids[0]).sort("reviewer")
    assert mine["reviewer"].to_list() == ["annotator", "annotator2", "cotforge:majority"]
    assert mine["decision"].to_list() == ["accept", "reject", "reject"]  # a tie goes strict
    assert mine["problems"].to_list()[1] == ["label_leakage"]
    assert latest[ids[1]] == "accept" and latest[ids[3]] == "accept"  # 2 of 3 accept
    assert latest[ids[2]] == "edit"
    # the edit is a new version, linked to the original and verified like any rationale
    assert version.height == 1
    assert version["rationale_id"][0] == f"{ids[2]}@v2"
    assert version["raw_text"][0] == new_text and version["version"][0] == 2
    assert version["request_id"][0] is None
    assert verdicts.height == 7 and verdicts["passed"].all()
    assert summary.new_versions == summary.new_versions_accepted == 1
    # an export acts on the curated decisions: rejected and superseded ones stay out
    assert exported == {ids[1], f"{ids[2]}@v2", ids[3]}

    before = snapshot(store)
    with Store.open(store) as db:
        again = pull(db, opts)
    assert again.run_id is None and again.reviews_written == 0
    after = snapshot(store)
    for table, frame in before.items():
        assert frame.equals(after[table]), table


def test_policy_any_reject_rejects_on_one_rejection(
    argilla_stack: ArgillaStack, store: Path
) -> None:
    name = "policy"
    with Store.open(store) as db:
        push(db, options(argilla_stack, name))
        first_id = db.review_candidates(only="all")["rationale_id"][0]
    uuid = record_uuids(argilla_stack, dataset_of(argilla_stack, name).id)[first_id]
    respond(argilla_stack, argilla_stack.owner, uuid, decision="accept")
    respond(argilla_stack, argilla_stack.annotators[0], uuid, decision="accept")
    respond(argilla_stack, argilla_stack.annotators[1], uuid, decision="reject")
    with Store.open(store) as db:
        pull(db, options(argilla_stack, name, policy="any_reject"))
        pull(db, options(argilla_stack, name, policy="majority"))
        curated = dict(
            db.table("reviews", where={"rationale_id": first_id})
            .filter(pl.col("reviewer").str.starts_with("cotforge:"))
            .select("reviewer", "decision")
            .iter_rows()
        )
    assert curated == {"cotforge:any_reject": "reject", "cotforge:majority": "accept"}


def test_status_counts_progress_and_agreement(argilla_stack: ArgillaStack, store: Path) -> None:
    name = "status"
    with Store.open(store) as db:
        push(db, options(argilla_stack, name))
        rows = db.review_candidates(only="all").select("rationale_id", "class_name")
    uuids = record_uuids(argilla_stack, dataset_of(argilla_stack, name).id)
    first, second = argilla_stack.annotators
    a, b = rows["rationale_id"][0], rows["rationale_id"][2]
    respond(argilla_stack, first, uuids[a], decision="accept")
    respond(argilla_stack, second, uuids[a], decision="accept")
    respond(argilla_stack, first, uuids[b], decision="accept")
    respond(argilla_stack, second, uuids[b], decision="reject")
    report = status(options(argilla_stack, name))
    by_class = {entry.class_name: entry for entry in report.classes}
    assert sum(entry.records for entry in report.classes) == 6
    assert by_class[rows["class_name"][0]].reviewed == 1
    assert by_class[rows["class_name"][2]].decisions == {"accept": 1, "reject": 1}
    assert (report.agreement.records, report.agreement.unanimous) == (2, 1)
    assert report.reviewers == {"annotator": 2, "annotator2": 2}
    result = runner.invoke(
        app,
        ["review", "status", "--dataset-name", name],
        env={"ARGILLA_API_URL": argilla_stack.url, "ARGILLA_API_KEY": argilla_stack.owner.api_key},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Fleiss' kappa" in result.stdout


# --- faults -----------------------------------------------------------------------------------


def test_unreachable_server_and_wrong_key(argilla_stack: ArgillaStack, store: Path) -> None:
    with CuttableProxy(argilla_stack.url) as proxy:
        proxy.cut()
        with Store.open(store) as db, pytest.raises(ReviewError, match="stopped answering"):
            push(db, options(argilla_stack, "x", api_url=proxy.url))
    wrong = options(argilla_stack, "x", api_key="not-the-key-at-all")
    with Store.open(store) as db, pytest.raises(ReviewError, match="refused the API key") as err:
        push(db, wrong)
    assert "not-the-key-at-all" not in str(err.value)
    result = runner.invoke(
        app,
        ["review", "pull", "--store", str(store)],
        env={"ARGILLA_API_URL": argilla_stack.url, "ARGILLA_API_KEY": "not-the-key-at-all"},
    )
    assert result.exit_code == 2
    assert "refused the API key" in result.stderr and "Traceback" not in result.stderr


def test_dataset_name_taken_with_other_settings(argilla_stack: ArgillaStack, store: Path) -> None:
    rg = sdk()
    client = rg.Argilla(api_url=argilla_stack.url, api_key=argilla_stack.owner.api_key)
    settings = rg.Settings(
        fields=[rg.TextField(name="text")],
        questions=[rg.LabelQuestion(name="sentiment", labels=["good", "bad"])],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workspace = client.workspaces("cotforge")
    rg.Dataset(name="taken", workspace=workspace, settings=settings, client=client).create()
    with Store.open(store) as db, pytest.raises(ReviewError, match="exists with other settings"):
        push(db, options(argilla_stack, "taken"))


def test_records_deleted_in_the_ui_are_pushed_again(
    argilla_stack: ArgillaStack, store: Path
) -> None:
    name = "deleted"
    opts = options(argilla_stack, name)
    with Store.open(store) as db:
        push(db, opts)
    dataset = dataset_of(argilla_stack, name)
    gone = sorted(dataset.records, key=lambda r: r.id)[0]
    dataset.records.delete([gone])
    with Store.open(store) as db:
        summary = pull(db, opts)
        assert summary.deleted == [gone.id]
        assert "deleted in the UI" in summary.notes()[0]
        assert gone.id not in set(db.review_pushes(f"cotforge/{name}")["rationale_id"])
        again = push(db, opts)
    assert (again.sent, again.unchanged) == (1, 5)
    assert len(list(dataset_of(argilla_stack, name).records)) == 6


def test_a_response_to_a_record_the_store_does_not_know(
    argilla_stack: ArgillaStack, store: Path
) -> None:
    name = "stranger"
    opts = options(argilla_stack, name)
    with Store.open(store) as db:
        push(db, opts)
    dataset = dataset_of(argilla_stack, name)
    model = next(iter(dataset.records))
    fields = dict(model.fields)
    dataset.records.log([sdk().Record(id="not-in-this-store", fields=fields)])
    uuids = record_uuids(argilla_stack, dataset.id)
    respond(argilla_stack, argilla_stack.annotators[0], uuids["not-in-this-store"],
            decision="accept")  # fmt: skip
    before = snapshot(store)
    with Store.open(store) as db:
        summary = pull(db, opts)
    assert summary.unknown == ["not-in-this-store"]
    assert "not rationales of this store" in summary.notes()[0]
    assert snapshot(store)["reviews"].equals(before["reviews"])


def test_a_push_cut_off_midway_resumes(argilla_stack: ArgillaStack, store: Path) -> None:
    """The server goes away after the first batch (every connection dropped, as when it is
    killed): what it confirmed is recorded, nothing else; the next push sends the rest."""
    name = "resume"
    with CuttableProxy(argilla_stack.url) as proxy:
        opts = options(argilla_stack, name, api_url=proxy.url, batch_size=2)
        import cotforge.review as review

        real = review._upsert
        calls = []

        def upsert_then_die(*args: object) -> None:
            calls.append(1)
            if len(calls) == 2:
                proxy.cut()
            real(*args)

        with Store.open(store) as db, pytest.MonkeyPatch.context() as patch:
            patch.setattr(review, "_upsert", upsert_then_die)
            with pytest.raises(ReviewError, match="2 of 6 records were pushed and recorded"):
                push(db, opts)
            assert db.review_pushes(f"cotforge/{name}").height == 2
            assert db.table("runs")["status"].to_list()[-1] == "failed"
        proxy.restore()
        with Store.open(store) as db:
            resumed = push(db, opts)
    assert (resumed.sent, resumed.unchanged) == (4, 2)
    assert len(list(dataset_of(argilla_stack, name).records)) == 6
