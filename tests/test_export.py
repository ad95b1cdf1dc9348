"""``cotforge export``: the folders it writes load with ``datasets`` (and LLaMA-Factory's JSON),
feed TRL's vision collator unchanged, are byte-identical across exports, and bad input stops it
before anything is written.

The store is made the real way: ``cotforge generate`` against the scripted teacher server on a
small official-layout FGVC-Aircraft (whose images carry the 20-pixel banner the export must
crop), so every row comes from a real rationale, request, verdict and plan.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from cotforge.cli import app
from cotforge.config import ExportOptions
from cotforge.data.annotations import load_annotations
from cotforge.data.registry import get_source
from cotforge.export.features import config_features
from cotforge.export.images import ImageFiles, ImageRef
from cotforge.export.rows import TAPO_SUFFIX
from cotforge.prompts import load_prompt
from cotforge.questions import seed_questions
from cotforge.store import Store
from cotforge.testing.openai_server import ScriptedServer
from tests import teacher_answers
from tests.fixtures.fgvr_layouts import HEIGHT, WIDTH, LayoutInfo, write_official_layout

runner = CliRunner()
MODEL = "test-model"
_ASKED = re.compile(r'is shown this image and asked: "([^"]+)"')
HAS_EVAL = importlib.util.find_spec("cotforge.eval_set") is not None


@dataclass(frozen=True)
class Generated:
    """A store made by ``cotforge generate``, the layout it read, and the question each
    rationale's prompt asked (by rationale id, which is its request id)."""

    store: Path
    layout: LayoutInfo
    asked: dict[str, str]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COTFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    for name in ("COTFORGE_STORE", "COTFORGE_CONFIG", "COTFORGE_TEACHER_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """Six aircraft classes (three seen), two shots each: six verified rationales, six
    triplets, and two test images per class. Generated in two runs, the second reusing the
    first one's stored 'questions' answer, as a resumed generation does."""
    base = tmp_path_factory.mktemp("generated")
    layout = write_official_layout(
        "aircraft", base / "fgvc-aircraft-2013b", n_classes=6, train_per_class=3, test_per_class=2
    )
    store = base / "store.duckdb"
    with ScriptedServer(responder=teacher_answers.answer, models=(MODEL,)) as server:
        for limit in ("3", "6"):
            result = runner.invoke(
                app,
                [
                    "generate",
                    "--dataset",
                    "aircraft",
                    "--root",
                    str(layout.root),
                    "--shots",
                    "2",
                    "--limit",
                    limit,
                    "--teacher",
                    f"openai:{MODEL}@{server.url}",
                    "--store",
                    str(store),
                ],
            )
            assert result.exit_code == 0, result.stdout + result.stderr
        asked = {
            r.request_id: found.group(1)
            for r in server.chat_requests
            if r.body and r.request_id
            for found in [_ASKED.search(teacher_answers.user_text(r.body))]
            if found
        }
    return Generated(store, layout, asked)


@pytest.fixture
def store_copy(generated: Generated, tmp_path: Path) -> Path:
    """A private copy of the generated store, for tests that change what it holds."""
    copy = tmp_path / "copy.duckdb"
    shutil.copy(generated.store, copy)
    return copy


def export(store: Path, out: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["export", "--store", str(store), "--out", str(out), *args])
    return result.exit_code, result.stdout + result.stderr


def load(out: Path, config: str, tmp_path: Path) -> Any:
    """``load_dataset(out, config)`` (datasets is imported here, after the offline fixture)."""
    from datasets import load_dataset

    return load_dataset(str(out), config, cache_dir=str(tmp_path / "hf-cache"))


def exports_table(store: Path) -> pl.DataFrame:
    with Store.open(store, read_only=True) as db:
        return db.table("exports")


def accepted(store: Path) -> pl.DataFrame:
    with Store.open(store, read_only=True) as db:
        return db.export_rationale_images(review="respect")


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- round trips ---------------------------------------------------------------------------


def test_sft_round_trip(generated: Generated, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text = export(generated.store, out, "--configs", "sft,tapo")
    assert code == 0, text
    sft = load(out, "sft", tmp_path)
    assert list(sft) == ["train"]
    train = sft["train"]
    assert train.features == config_features("sft")
    expected = accepted(generated.store)
    assert train.num_rows == expected.height == 6
    assert train["rationale_id"] == expected["rationale_id"].to_list()

    system = load_prompt("system").render()
    notes = load_annotations("aircraft")
    for row in train:
        (image,) = row["images"]
        # The dataset's own pixels: the 20-pixel banner is cropped, as generation showed it.
        assert image.size == (WIDTH, HEIGHT)
        messages = row["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"] == [{"type": "text", "text": system}]
        image_part, question_part = messages[1]["content"]
        assert image_part == {"type": "image", "text": None}
        # The question the teacher was told the student is asked, not a stand-in.
        assert question_part == {"type": "text", "text": generated.asked[row["rationale_id"]]}
        assert question_part["text"] not in seed_questions("aircraft")
        target = messages[2]["content"][0]["text"]
        info = next(c for c in notes.classes if c.label == row["label"])
        assert target.startswith("<think> Analysis of Visual Features:")
        assert target.endswith(f"</think>\n\n<answer>{info.name}</answer>")
        assert f"The prediction is: {info.name}\n" in target
        assert (row["dataset"], row["super_category"], row["split"]) == (
            "aircraft",
            "aircraft",
            "seen",
        )

    # Every row is recorded: which shard, which row, which rationale and sample.
    recorded = exports_table(generated.store).filter(pl.col("config") == "sft")
    latest = recorded.filter(pl.col("export_id") == recorded["export_id"].max())
    assert latest["shard"].unique().to_list() == ["data/sft/train-00000-of-00001.parquet"]
    shard = pq.read_table(out / latest["shard"][0], columns=["rationale_id"])
    by_row = dict(zip(latest["row_index"], latest["rationale_id"], strict=True))
    assert [by_row[n] for n in range(shard.num_rows)] == shard["rationale_id"].to_pylist()
    with Store.open(generated.store, read_only=True) as db:
        runs = db.table("runs", where={"kind": "export"})
    assert set(runs["status"]) == {"ok"}


def test_tapo_round_trip(generated: Generated, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text = export(generated.store, out, "--configs", "tapo")
    assert code == 0, text
    assert not (out / "data" / "sft").exists()
    train = load(out, "tapo", tmp_path)["train"]
    assert train.features == config_features("tapo")
    with Store.open(generated.store, read_only=True) as db:
        triplets = db.export_triplets()
    assert train.num_rows == triplets.height == 6
    notes = load_annotations("aircraft")
    by_label = {info.label: info for info in notes.classes}
    colours = generated.layout.colours
    for row, triplet in zip(train, triplets.iter_rows(named=True), strict=True):
        assert row["label"] == triplet["label"]
        assert row["answer"] == by_label[row["label"]].name
        assert row["aliases"] == list(by_label[row["label"]].aliases)
        assert row["negative_label"] == notes.classes[triplet["negative_class_index"]].label
        assert row["negative_label"] != row["label"]
        # Anchor and positive show the anchor's class colour, the negative another one.
        anchor_colour = colours[triplet["class_index"]]
        corner = (1, 1)
        for column, colour in (
            ("image", anchor_colour),
            ("image_positive", anchor_colour),
            ("image_negative", colours[triplet["negative_class_index"]]),
        ):
            assert row[column].size == (WIDTH, HEIGHT)
            got = row[column].convert("RGB").getpixel(corner)
            assert all(abs(a - b) < 24 for a, b in zip(got, colour, strict=True)), column
        (turn,) = row["prompt"]
        assert turn["role"] == "user"
        image_part, text_part = turn["content"]
        assert image_part == {"type": "image", "text": None}
        assert text_part["text"].endswith(" " + TAPO_SUFFIX)
        assert row["answer"] not in text_part["text"]


@pytest.mark.skipif(not HAS_EVAL, reason="cotforge.eval_set is not there yet")
def test_eval_round_trip(generated: Generated, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text = export(generated.store, out, "--configs", "eval", "--seed", "3")
    assert code == 0, text
    evaluation = load(out, "eval", tmp_path)
    assert sorted(evaluation) == ["seen", "unseen"]
    notes = load_annotations("aircraft")
    test_images = Counter(
        notes.classes[index].paper_split for _, index in generated.layout.records["test"]
    )
    for split in ("seen", "unseen"):
        rows = evaluation[split]
        assert rows.features == config_features("eval")
        assert rows.num_rows == test_images[split]
        for row in rows:
            assert row["image"].size == (WIDTH, HEIGHT)
            assert len(row["options"]) == 4
            assert row["options"].count(row["answer"]) == 1
    firsts = [row["options"][0] == row["answer"] for s in evaluation for row in evaluation[s]]
    assert not all(firsts)  # the seeded order does not put the truth first every time
    assert "--seed 3 --eval-source test" in (out / "README.md").read_text(encoding="utf-8")


def test_two_exports_are_byte_identical_and_name_no_local_path(
    generated: Generated, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    configs = "sft,tapo,eval" if HAS_EVAL else "sft,tapo"
    for out in (first, second):
        code, text = export(generated.store, out, "--configs", configs)
        assert code == 0, text
    one, two = files_of(first), files_of(second)
    assert sorted(one) == sorted(two)
    assert len(one) >= 3
    for name in one:
        assert one[name] == two[name], name
    local = [str(tmp_path), str(generated.layout.root), str(generated.store.parent), "/tmp"]
    for name, data in one.items():
        for path in local:
            assert path.encode() not in data, (name, path)
    # Nothing is left next to the folders (the staging folders were renamed into place).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_card_says_how_the_data_was_made(generated: Generated, tmp_path: Path) -> None:
    import yaml

    out = tmp_path / "out"
    code, text = export(generated.store, out, "--configs", "sft", "--review", "require")
    assert code != 0  # nothing is reviewed, so `require` selects nothing
    assert "nothing to export" in text
    assert not out.exists()
    code, text = export(generated.store, out, "--configs", "sft,tapo")
    assert code == 0, text
    card = (out / "README.md").read_text(encoding="utf-8")
    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert [c["config_name"] for c in meta["configs"]] == ["sft", "tapo"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/sft/train-*"}]
    info = {entry["config_name"]: entry for entry in meta["dataset_info"]}
    assert info["sft"]["splits"] == [
        {"name": "train", "num_bytes": info["sft"]["dataset_size"], "num_examples": 6}
    ]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["image-text-to-text"]
    assert meta["license"] == "other"
    with Store.open(generated.store, read_only=True) as db:
        requests = db.table("requests", where={"purpose": "rationale"})
    assert f"`openai:{MODEL}`" in body
    assert requests["prompt_hash"][0] in body
    assert load_prompt("system").digest in body
    assert "Required verification checks: candidates, correct" in body
    assert "Deduplication: not run" in body
    assert "| aircraft | 3 | seen | 6 |" in body
    assert "| correct | yes | 6 | 6 | 100.0% |" in body
    assert "cotforge export --store STORE --out OUT --configs sft,tapo" in body


# --- TRL and LLaMA-Factory -----------------------------------------------------------------


@pytest.mark.slow
def test_sft_rows_feed_trl_vision_collator_unchanged(
    generated: Generated, tiny_qwen: Path, tmp_path: Path
) -> None:
    import transformers
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    out = tmp_path / "out"
    code, text = export(generated.store, out, "--configs", "sft")
    assert code == 0, text
    train = load(out, "sft", tmp_path)["train"]
    processor = transformers.AutoProcessor.from_pretrained(tiny_qwen)
    collator = DataCollatorForVisionLanguageModeling(processor)
    batch = collator([train[0], train[1]])
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    per_row = (batch["input_ids"] == image_token).sum(dim=1)
    # One image each, expanded to its patch tokens; its pixels and grid are in the batch.
    assert batch["image_grid_thw"].shape == (2, 3)
    patches = batch["image_grid_thw"].prod(dim=1) // 4  # merged 2x2
    assert per_row.tolist() == patches.tolist()
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(dim=1).sum())
    decoded = processor.tokenizer.decode(batch["input_ids"][0])
    assert decoded.startswith("<|im_start|>system\nA conversation between User and Assistant")
    assert train[0]["messages"][2]["content"][0]["text"] in decoded
    assert (batch["labels"] != -100).any()

    # SFTTrainer takes the dataset as it loads: it keeps images + messages and collates them.
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_qwen)
    args = SFTConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        max_length=None,
        save_strategy="no",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=processor)
    trained_on = next(iter(trainer.get_train_dataloader()))
    assert {"input_ids", "pixel_values", "image_grid_thw", "labels"} <= set(trained_on)
    assert (trained_on["input_ids"] == image_token).any()


def test_llamafactory_variant_loads(generated: Generated, tmp_path: Path) -> None:
    from datasets import load_dataset

    out = tmp_path / "out"
    code, text = export(generated.store, out, "--format", "llamafactory")
    assert code == 0, text
    assert "llamafactory holds sft only" in text
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    entry = info["cotforge_sft"]
    assert entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    records = json.loads((out / entry["file_name"]).read_text(encoding="utf-8"))
    loaded = load_dataset("json", data_files=str(out / entry["file_name"]), split="train")
    assert loaded.num_rows == len(records) == 6
    sample = json.loads(Path(teacher_answers.SAMPLE_RECORDS).read_text(encoding="utf-8"))[
        0
    ]  # the Fine-R1 release's own shape
    tags = entry["tags"]
    for record in records:
        roles = [m[tags["role_tag"]] for m in record["messages"]]
        assert roles == [m["role"] for m in sample["messages"]]
        user = record["messages"][1][tags["content_tag"]]
        assert user.startswith("<image>") and user.count("<image>") == len(record["images"]) == 1
        (image,) = record["images"]
        assert not Path(image).is_absolute()
        with Image.open(out / image) as decoded:
            assert decoded.size == (WIDTH, HEIGHT)
        assert record["messages"][2]["content"].endswith("</answer>")
    assert not (out / "data").exists()
    recorded = exports_table(generated.store).filter(pl.col("shard") == "sft.json")
    assert sorted(recorded["row_index"].to_list())[-6:] == list(range(6))


# --- curation ------------------------------------------------------------------------------


def test_curation_follows_verdicts_dedup_versions_and_reviews(
    store_copy: Path, tmp_path: Path
) -> None:
    from datetime import datetime

    selected = accepted(store_copy)
    ids = selected["rationale_id"].to_list()
    failed, duplicate, rejected, edited, superseded, badly_edited = ids
    with Store.open(store_copy) as db:
        texts = db.export_rationales(review="ignore")
        original = {r["rationale_id"]: r["text"] for f in texts for r in f.iter_rows(named=True)}
        run = db.start_run("review", {}, {})
        db.upsert_verdicts(
            [
                {"rationale_id": failed, "check_name": "correct", "passed": False,
                 "required": True, "reason": "test", "run_id": run},
                # A failing check that is not required does not matter.
                {"rationale_id": badly_edited, "check_name": "judge", "passed": False,
                 "required": False, "reason": "test", "run_id": run},
            ]
        )  # fmt: skip
        db.upsert_duplicates(
            [
                {"rationale_id": duplicate, "cluster_id": "c", "kind": "exact", "kept": False,
                 "run_id": run},
                {"rationale_id": badly_edited, "cluster_id": "c", "kind": "exact", "kept": True,
                 "run_id": run},
            ]
        )  # fmt: skip
        # A newer version (an edit stored as a rationale of its own) supersedes its parent.
        db.add_rationales(
            [
                {"rationale_id": "version-2", "sample_id": selected["sample_id"][4],
                 "parent_id": superseded, "version": 2, "raw_text": original[superseded]},
            ]
        )  # fmt: skip
        good_edit = original[edited].replace("<analysis>\n", "<analysis>\nEDITED BY A REVIEWER. ")
        early, late = datetime(2026, 1, 1), datetime(2026, 1, 2)
        db.upsert_reviews(
            [
                # The latest decision counts: bob accepted, then ann rejected.
                {"rationale_id": rejected, "reviewer": "bob", "decision": "accept",
                 "submitted_at": early},
                {"rationale_id": rejected, "reviewer": "ann", "decision": "reject",
                 "submitted_at": late},
                {"rationale_id": edited, "reviewer": "ann", "decision": "edit",
                 "edited_text": good_edit, "submitted_at": early},
                {"rationale_id": badly_edited, "reviewer": "ann", "decision": "edit",
                 "edited_text": "A bird.", "submitted_at": early},
            ]
        )  # fmt: skip

    def exported(review: str) -> tuple[dict[str, str], str]:
        out = tmp_path / review
        code, text = export(store_copy, out, "--configs", "sft", "--review", review)
        assert code == 0, text
        rows = load(out, "sft", tmp_path)["train"]
        targets = {row["rationale_id"]: row["messages"][2]["content"][0]["text"] for row in rows}
        return targets, (out / "README.md").read_text(encoding="utf-8")

    respected, card = exported("respect")
    assert sorted(respected) == [edited]
    assert "EDITED BY A REVIEWER." in respected[edited]
    # An edit that no longer renders is left out, and the card says so.
    assert "## Left out of `sft`" in card
    assert f"`{badly_edited}`: cannot render a target with missing stage(s)" in card
    ignored, card = exported("ignore")
    assert sorted(ignored) == sorted([rejected, edited, badly_edited])
    assert "EDITED BY A REVIEWER." not in ignored[edited]
    assert "Left out" not in card
    required, _ = exported("require")
    assert sorted(required) == [edited]


def test_bounded_shards_keep_every_row_in_order(generated: Generated, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text = export(generated.store, out, "--configs", "sft", "--max-shard-size", "24KB")
    assert code == 0, text
    shards = sorted((out / "data" / "sft").iterdir())
    total = len(shards)
    assert total > 1
    assert [p.name for p in shards] == [
        f"train-{n:05d}-of-{total:05d}.parquet" for n in range(total)
    ]
    assert all(shard.stat().st_size <= 24_000 for shard in shards)
    assert max(pq.read_metadata(shard).num_rows for shard in shards) > 1  # packed, not 1 each
    sft = load(out, "sft", tmp_path)["train"]
    assert sft["rationale_id"] == accepted(generated.store)["rationale_id"].to_list()
    recorded = exports_table(generated.store)
    latest = recorded.filter(pl.col("export_id") == recorded["export_id"].max())
    assert sorted(set(latest["shard"])) == [f"data/sft/{p.name}" for p in shards]


# --- bad input -----------------------------------------------------------------------------


def test_empty_selection_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "empty.duckdb"
    Store.open(store).close()
    out = tmp_path / "out"
    code, text = export(store, out, "--configs", "sft,tapo")
    assert code != 0
    assert "nothing to export" in text
    assert "sft: none of the store's 0 rationales" in text
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [store]
    code, text = export(tmp_path / "absent.duckdb", out)
    assert code != 0
    assert "does not exist" in text


def test_output_folder_must_be_empty_or_an_earlier_export(
    generated: Generated, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code, text = export(generated.store, out, "--configs", "tapo")
    assert code != 0
    assert "is not empty; pass --overwrite" in text
    code, text = export(generated.store, out, "--configs", "tapo", "--overwrite")
    assert code != 0
    assert "did not write" in text
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"

    earlier = tmp_path / "earlier"
    code, text = export(generated.store, earlier, "--configs", "tapo")
    assert code == 0, text
    code, text = export(generated.store, earlier, "--configs", "sft")
    assert code != 0
    code, text = export(generated.store, earlier, "--configs", "sft", "--overwrite")
    assert code == 0, text
    assert sorted(p.name for p in (earlier / "data").iterdir()) == ["sft"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_image_is_named_and_nothing_is_written(store_copy: Path, tmp_path: Path) -> None:
    with Store.open(store_copy, read_only=True) as db:
        first = db.export_rationale_images(review="respect").row(0, named=True)
        root = Path(db.latest_plan("aircraft")["root"])
    moved = tmp_path / "moved.jpg"
    shutil.move(root / first["key"], moved)
    try:
        out = tmp_path / "out"
        code, text = export(store_copy, out, "--configs", "sft")
        assert code != 0
        assert f"aircraft/train/{first['key']}" in text
        assert f"rationale {first['rationale_id']}" in text
        assert "nothing was written" in text
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
        # The dataset moved elsewhere: --root points the export at it.
        elsewhere = tmp_path / "elsewhere"
        shutil.copytree(root, elsewhere)
        shutil.copy(moved, elsewhere / first["key"])
        code, text = export(store_copy, out, "--configs", "sft", "--root", f"aircraft={elsewhere}")
        assert code == 0, text
    finally:
        shutil.move(moved, root / first["key"])


def test_unreadable_image_met_while_writing_leaves_nothing(
    store_copy: Path, tmp_path: Path, generated: Generated
) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(generated.layout.root, elsewhere)
    with Store.open(store_copy, read_only=True) as db:
        last = db.export_rationale_images(review="respect").row(-1, named=True)
    (elsewhere / last["key"]).write_bytes(b"<html>not an image</html>")
    with Store.open(store_copy, read_only=True) as db:
        recorded = db.table("exports").height
        runs = db.table("runs", where={"kind": "export"}).height
    out = tmp_path / "out"
    code, text = export(store_copy, out, "--configs", "sft", "--root", f"aircraft={elsewhere}")
    assert code != 0
    assert f"{last['key']} of rationale {last['rationale_id']} is not a readable image" in text
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    with Store.open(store_copy, read_only=True) as db:
        assert db.table("exports").height == recorded
        export_runs = db.table("runs", where={"kind": "export"}).sort("started_at")
    assert export_runs.height == runs + 1
    assert export_runs["status"][-1] == "failed"


# --- images --------------------------------------------------------------------------------


def test_images_are_file_bytes_unless_the_dataset_edits_pixels(
    official_layout: Callable[..., LayoutInfo],
) -> None:
    cub = official_layout("cub")
    aircraft = official_layout("aircraft")
    sources = {
        "cub": get_source("cub", cub.root),
        "aircraft": get_source("aircraft", aircraft.root),
    }
    files = ImageFiles(sources, {})
    key, index = cub.records["train"][0]
    kept = files.encoded(ImageRef("cub", "train", key, index, "test"))
    assert kept == {"bytes": (cub.root / key).read_bytes(), "path": f"cub/train/{key}"}
    key, index = aircraft.records["train"][0]
    cropped = files.encoded(ImageRef("aircraft", "train", key, index, "test"))
    with Image.open(io.BytesIO(cropped["bytes"])) as image:
        assert (image.format, image.size) == ("JPEG", (WIDTH, HEIGHT))
    assert cropped["path"] == f"aircraft/train/{key}"


def test_roots_option_parses_names_and_a_bare_path() -> None:
    options = ExportOptions(out=Path("x"), roots="aircraft=/data/a,/data/b")
    assert options.roots == {"aircraft": Path("/data/a"), "*": Path("/data/b")}
    assert ExportOptions(out=Path("x"), configs="all").configs == ["sft", "tapo", "eval"]


@pytest.mark.skipif(not HAS_EVAL, reason="cotforge.eval_set is not there yet")
def test_eval_from_manifests_that_do_not_fit_the_layout_writes_nothing(
    generated: Generated, tmp_path: Path
) -> None:
    # The paper's manifests name the real test images, which the small layout does not have.
    out = tmp_path / "out"
    code, text = export(generated.store, out, "--configs", "sft,eval", "--eval-source", "paper")
    assert code != 0
    assert "error:" in text
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


_PUSH_ENV = (
    *("HF_ENDPOINT", "HF_HUB_DISABLE_XET", "HF_TOKEN", "HF_HOME"),
    *("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
)
"""What the push child gets its own values of (offline mode would forbid the push)."""


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("cotforge.hub") is None
    or importlib.util.find_spec("cotforge.testing.hub_server") is None,
    reason="cotforge.hub is not there yet",
)
def test_push_to_hub_uploads_the_finished_folder(generated: Generated, tmp_path: Path) -> None:
    """``--push-to-hub`` hands the finished folder to cotforge.hub; an empty selection stops
    before any repo is created. Run as a child process: huggingface_hub reads HF_ENDPOINT and
    HF_HUB_OFFLINE once, at import, and this session is offline."""
    import os
    import subprocess
    import sys

    from cotforge.testing.hub_server import HubServer

    token = "hf_ExportTest0123456789abcdef"
    empty = tmp_path / "empty.duckdb"
    Store.open(empty).close()
    with HubServer(token=token) as hub:
        env = {key: value for key, value in os.environ.items() if key not in _PUSH_ENV}
        env |= {
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_TOKEN": token,
            "HF_HOME": str(tmp_path / "hf-home"),
        }

        def push(store: Path, out: Path) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "cotforge", "export", "--store", str(store)]
            command += ["--out", str(out), "--configs", "sft", "--push-to-hub", "org/fgvr-cot"]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

        failed = push(empty, tmp_path / "nothing")
        assert failed.returncode != 0
        assert "nothing to export" in failed.stderr
        assert hub.repo("org/fgvr-cot") is None

        done = push(generated.store, tmp_path / "out")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "pushed to" in done.stdout
        assert token not in done.stdout + done.stderr
        local = files_of(tmp_path / "out")
        for name, data in local.items():
            assert hub.read("org/fgvr-cot", name) == data, name
