"""``cotforge import``: the 12 real Fine-R1 records round trip, JSON Lines in the plain and the
sharegpt shapes, and every kind of bad input skipped with its line or record number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from cotforge.errors import CotforgeError, UnknownDatasetError
from cotforge.importer import ImportSummary, import_file, rationale_id
from cotforge.rationale import parse, same_text
from cotforge.store import Store

SAMPLE = Path(__file__).parent / "data" / "fine_r1_stage1_sample.json"
RECORDS: list[dict[str, Any]] = json.loads(SAMPLE.read_text(encoding="utf-8"))
BANK_SWALLOW = RECORDS[6]  # bird_200/images_train/135.Bank_Swallow/...


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "cotforge.duckdb") as opened:
        yield opened


def tagged(record: dict[str, Any]) -> str:
    """A rationale in the tagged format carrying a real record's stages and answer."""
    r = parse(record["messages"][2]["content"])
    options = "\n".join(f"- {name}" for name in r.candidates)
    return (
        f"<analysis>{r.analysis}</analysis>\n<options>\n{options}\n</options>\n"
        f"<comparison>{r.comparison}</comparison>\n<prediction>{r.prediction}</prediction>\n"
        f"<answer>{r.answer}</answer>"
    )


def plain(image: str, label: str, rationale: str | None = None) -> dict[str, Any]:
    return {"image": image, "label": label, "rationale": rationale or tagged(BANK_SWALLOW)}


def write_lines(path: Path, lines: list[Any]) -> Path:
    """JSON Lines; a ``bytes`` item is written as is (a malformed line)."""
    with path.open("wb") as file:
        for line in lines:
            file.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            file.write(b"\n")
    return path


def skipped_reasons(summary: ImportSummary) -> str:
    return "\n".join(summary.reasons)


def test_fine_r1_release_round_trip(store: Store) -> None:
    first = import_file(store, SAMPLE)
    assert (first.records, first.imported, first.already_present, first.skipped_total) == (
        12,
        12,
        0,
        0,
    )
    assert first.datasets == dict.fromkeys(
        ["aircraft", "cars", "cub", "dogs", "flowers", "pets"], 2
    )
    assert first.missing_images == 12  # the sample ships without its images

    images = store.table("images").sort("image_id")
    rationales = store.table("rationales").sort("rationale_id")
    assert images.height == rationales.height == 12
    bengal = images.filter(pl.col("key") == "oxford-pet-train/train/Bengal_156.jpg").row(
        0, named=True
    )
    assert bengal["image_id"] == "pets/import/oxford-pet-train/train/Bengal_156.jpg"
    assert (bengal["dataset"], bengal["split"], bengal["class_name"]) == (
        "pets",
        "import",
        "Bengal",
    )
    assert set(rationales["sample_id"]) == set(images["image_id"])
    assert rationales["request_id"].is_null().all()
    assert set(rationales["raw_text"]) == {r["messages"][2]["content"] for r in RECORDS}
    for column in ("analysis", "comparison", "prediction"):
        assert rationales[column].is_not_null().all(), column
    assert (rationales["candidates"].list.len() == 4).all()
    assert store.table("runs")["kind"].to_list() == ["import"]

    second = import_file(store, SAMPLE)
    assert (second.imported, second.already_present, second.skipped_total) == (0, 12, 0)
    assert store.table("images").sort("image_id").equals(images)
    assert store.table("rationales").sort("rationale_id").equals(rationales)
    runs = store.table("runs").sort("started_at")
    assert runs["status"].to_list() == ["ok", "ok"]
    # each import run reports on the rows it wrote, and only those
    assert store.rationale_profiles(run_id=first.run_id).height == 12
    assert store.rationale_profiles(run_id=second.run_id).height == 0


def test_sharegpt_json_lines_are_the_same_records(store: Store, tmp_path: Path) -> None:
    import_file(store, SAMPLE)
    as_lines = write_lines(tmp_path / "release.txt", RECORDS)  # detected by content
    summary = import_file(store, as_lines)
    assert (summary.records, summary.imported, summary.already_present) == (12, 0, 12)


def test_plain_json_lines_with_malformed_lines(store: Store, tmp_path: Path) -> None:
    (tmp_path / "imgs" / "birds").mkdir(parents=True)
    (tmp_path / "imgs" / "birds" / "b.jpg").write_bytes(b"jpeg")
    conversations = {
        "conversations": [
            {"from": "human", "value": "<image>Which bird?"},
            {"from": "gpt", "value": BANK_SWALLOW["messages"][2]["content"]},
        ],
        "images": ["birds/c.jpg"],
    }
    path = write_lines(
        tmp_path / "cot.jsonl",
        [
            plain("birds/a.jpg", "Bank Swallow"),  # line 1
            b'{"image": "birds/x.jpg", "label": ',  # line 2: truncated
            {"image": "birds/y.jpg", "label": "Bank Swallow"},  # line 3: no rationale
            {"image": "birds/z.jpg", "label": 7, "rationale": "text"},  # line 4: label not str
            plain("birds/e.jpg", "Bank Swallow", rationale="  \n "),  # line 5: empty
            b"",  # line 6: blank, not a record
            ["a", "list"],  # line 7: not an object
            plain(".\\birds\\b.jpg", "135.Bank_Swallow"),  # line 8: Windows path, official label
            conversations,  # line 9: sharegpt, LLaMA-Factory's default spelling
            {"messages": "oops", "images": ["birds/w.jpg"]},  # line 10: wrong type
        ],
    )
    summary = import_file(store, path, image_root=tmp_path / "imgs")

    assert (summary.records, summary.imported, summary.skipped_total) == (9, 3, 6)
    assert summary.skipped == {
        "invalid JSON": 1,
        "missing keys": 1,
        "wrong type": 2,
        "empty rationale": 1,
        "not an object": 1,
    }
    reasons = skipped_reasons(summary)
    assert "line 2: invalid JSON" in reasons
    assert "line 3: no 'rationale'" in reasons
    assert "line 4: label must be a string; got a number" in reasons
    assert "line 5: the rationale is empty" in reasons
    assert "line 7: expected a JSON object; got a list" in reasons
    assert "line 10: messages must be a list; got a string" in reasons
    assert summary.missing_images == 2  # a.jpg and c.jpg; b.jpg exists under the root
    keys = sorted(store.table("images")["key"])
    assert keys == ["birds/a.jpg", "birds/b.jpg", "birds/c.jpg"]
    assert set(store.table("images")["class_name"]) == {"Bank Swallow"}
    stages = store.table("rationales").filter(pl.col("sample_id") == "cub/import/birds/a.jpg")
    assert same_text(stages["analysis"][0], parse(BANK_SWALLOW["messages"][2]["content"]).analysis)
    assert ("skip reason", "line 2: invalid JSON (Expecting value at column 35)") in summary.rows()


def test_dataset_from_path_label_or_option(store: Store, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "cot.jsonl",
        [
            plain("photos/1.jpg", "Chihuahua"),  # dogs and pets both have one
            plain("photos/2.jpg", "Bank Swallow"),  # only cub
            plain("fgvc-aircraft-2013b/images/3.jpg", "Boeing 999"),  # no such aircraft
            plain("photos/4.jpg", "Quokka"),  # no dataset at all
            plain("dogs_120/Images/5.jpg", "Chihuahua"),  # the path decides
        ],
    )
    summary = import_file(store, path)
    assert summary.imported == 2
    assert summary.skipped == {"ambiguous dataset": 1, "unknown label": 2}
    reasons = skipped_reasons(summary)
    assert "line 1: ambiguous dataset (label 'Chihuahua' is a class of dogs and pets); pass " in (
        reasons
    )
    assert "line 3: label 'Boeing 999' names no class of aircraft" in reasons
    assert "line 4: label 'Quokka' names no class of any dataset" in reasons
    assert sorted(store.table("images")["image_id"]) == [
        "cub/import/photos/2.jpg",
        "dogs/import/dogs_120/Images/5.jpg",
    ]

    forced = import_file(store, path, dataset="pet")  # an alias resolves to pets
    assert forced.imported == 2  # the Chihuahuas, as pets
    assert "pets/import/photos/1.jpg" in set(store.table("images")["image_id"])
    assert forced.skipped["unknown label"] == 3
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'birds'"):
        import_file(store, path, dataset="birds")


def test_invalid_utf8_skips_only_its_record(store: Store, tmp_path: Path) -> None:
    good = json.dumps(plain("birds/a.jpg", "Bank Swallow")).encode()
    bad = json.dumps(plain("birds/b.jpg", "Bank Swallow", rationale="AAAA")).encode()
    lines = tmp_path / "cot.jsonl"
    lines.write_bytes(good + b"\n" + bad.replace(b"AAAA", b"Bank \xff\xfe") + b"\n")
    summary = import_file(store, lines)
    assert (summary.imported, summary.skipped) == (1, {"invalid UTF-8": 1})
    assert summary.reasons[0].startswith("line 2: invalid UTF-8 at byte ")

    # in a JSON list the bad bytes are confined to their record; so is an unpaired surrogate
    records = [plain(f"birds/{n}.jpg", "Bank Swallow", rationale=f"R{n}") for n in range(3)]
    text = json.dumps(records).encode()
    listing = tmp_path / "cot.json"
    listing.write_bytes(text.replace(b'"R1"', b'"R\xc3("').replace(b'"R2"', b'"R\\ud800"'))
    summary = import_file(store, listing)
    assert summary.imported == 1
    assert summary.skipped == {"invalid UTF-8": 2}
    assert [reason.split(":")[0] for reason in summary.reasons] == ["record 2", "record 3"]


def test_truncated_json_list_keeps_what_came_before(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(RECORDS[:3], indent=1)[:-400], encoding="utf-8")
    summary = import_file(store, path)
    assert (summary.imported, summary.skipped) == (2, {"invalid JSON": 1})
    assert summary.reasons[0].startswith("record 3 (line ")
    assert "the rest of the file could not be read" in summary.reasons[0]


def test_absolute_paths_and_relabelled_images_are_skipped(store: Store, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "cot.jsonl",
        [
            plain(str(tmp_path / "birds" / "a.jpg"), "Bank Swallow"),
            plain("birds/b.jpg", "Bank Swallow"),
            plain("birds/b.jpg", "Tree Swallow", rationale="another text"),
        ],
    )
    summary = import_file(store, path)
    assert summary.imported == 1
    assert summary.skipped == {"absolute path": 1, "conflicting label": 1}
    assert "line 3: image 'birds/b.jpg' was imported as 'Bank Swallow'" in summary.reasons[1]
    assert str(tmp_path) not in "".join(store.table("images")["key"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"id,label\n1,Bank Swallow\n", "neither a JSON list of records nor JSON Lines"),
        (b"[{'single': 'quotes'}]", "is not valid JSON"),
    ],
)
def test_unreadable_files_are_one_line_errors(
    store: Store, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "data.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CotforgeError, match=expected) as caught:
        import_file(store, path)
    assert "\n" not in str(caught.value)
    assert store.table("runs").height == 0  # nothing was started for a file with nothing in it


def test_crash_mid_import_then_rerun_imports_the_rest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = Store.add_rationales

    def crash_on_second_batch(self: Store, rows: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, rows)

    monkeypatch.setattr(Store, "add_rationales", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        import_file(store, SAMPLE, batch_size=5)
    assert store.table("rationales").height == 5
    assert store.table("images").height == 5  # the failed batch left nothing behind
    assert store.table("runs")["status"].to_list() == ["interrupted"]

    monkeypatch.setattr(Store, "add_rationales", original)
    rerun = import_file(store, SAMPLE, batch_size=5)
    assert (rerun.imported, rerun.already_present) == (7, 5)
    assert store.table("rationales").height == 12


def test_rationale_id_depends_on_dataset_image_and_text() -> None:
    base = rationale_id("cub", "a.jpg", "text")
    assert base != rationale_id("dogs", "a.jpg", "text")
    assert base != rationale_id("cub", "b.jpg", "text")
    assert base != rationale_id("cub", "a.jpg", "text2")
    assert rationale_id("cub", "a", "b\0c") != rationale_id("cub", "a\0b", "c")
