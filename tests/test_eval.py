"""``cotforge eval`` end to end: real servers, real models, the real store.

The scripted OpenAI-compatible server plays a model with the manifests' truth-first bias (it
always answers the first option), so the manifest order scores 100% and the shuffled order
exposes it. The tiny random Qwen2.5-VL runs in process and behind ``transformers serve``; a
tiny random CLIP plays the zero-shot baseline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from cotforge.cli import app
from cotforge.store import Store
from cotforge.testing.openai_server import Fault, ScriptedServer
from tests.fixtures.fgvr_layouts import LayoutInfo
from tests.test_eval_set import _paper_layout, _subset, _write_manifests

runner = CliRunner()
MODEL = "test-model"
_OPTIONS = re.compile(r"\['([^']+)'|Options: ([^;\n]+)")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COTFORGE_HOME", str(tmp_path / "home"))
    for name in ("COTFORGE_STORE", "COTFORGE_CONFIG", "COTFORGE_TEACHER_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root, manifests folder): 2 seen and 2 unseen pet classes, 2 images each, at the
    paths the paper's manifests name, under the paper's folder name ``oxford-pet``."""
    base = tmp_path_factory.mktemp("paper")
    lines = _subset("pets")
    _paper_layout("pets", base / "data" / "oxford-pet", lines)
    return base / "data", _write_manifests(base / "eval", "pets", lines)


def first_option(body: dict[str, Any]) -> str:
    """A model that picks the first option it is shown, and names a Bengal in the open world."""
    text = body["messages"][-1]["content"][-1]["text"]
    found = _OPTIONS.search(text)
    name = (found.group(1) or found.group(2)).strip() if found else "Bengal"
    return f"<think>Looks like it.</think><answer>{name}</answer>"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(responder=first_option, models=(MODEL,)) as running:
        yield running


def eval_args(paper: tuple[Path, Path], url: str) -> list[str]:
    """``cotforge eval`` of the pets fixture, asking the server at ``url``."""
    data_root, manifests = paper
    return [
        "eval",
        "--model",
        f"openai:{MODEL}@{url}",
        "--dataset",
        "pets",
        "--data-root",
        str(data_root),
        "--manifests",
        str(manifests),
    ]


def evaluate(paper: tuple[Path, Path], url: str, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, [*eval_args(paper, url), *extra])
    return result.exit_code, result.stdout + result.stderr


def read(table: str, store: Path = Path("cotforge.duckdb")) -> pl.DataFrame:
    with Store.open(store, read_only=True) as db:
        return db.table(table)


def test_both_worlds_against_a_server_record_and_report_every_prediction(
    paper: tuple[Path, Path], server: ScriptedServer, tmp_path: Path
) -> None:
    code, out = evaluate(paper, server.url, "--trials", "2", "--out", str(tmp_path / "results"))
    assert code == 0, out
    predictions = read("predictions")
    # 8 images x 2 trials x (closed in manifest order, closed shuffled, open).
    assert predictions.height == 48
    assert Counter(predictions.select("mode", "option_order").iter_rows()) == {
        ("closed", "manifest"): 16,
        ("closed", "shuffled"): 16,
        ("open", None): 16,
    }
    requests = read("requests")
    assert set(requests["purpose"]) == {"eval"} and set(requests["status"]) == {"ok"}
    assert requests.height == len(server.chat_requests)
    # Greedy: the manifest order and the open world ask each image once for both trials.
    assert requests.height < 48
    manifest = predictions.filter(pl.col("option_order") == "manifest")
    assert manifest["correct"].all() and manifest["text_inclusion"].all()
    shuffled = predictions.filter(pl.col("option_order") == "shuffled")
    assert not shuffled["correct"].all()
    assert (shuffled["correct"] == shuffled["text_inclusion"]).all()
    open_world = predictions.filter(pl.col("mode") == "open")
    assert open_world["ss_rel"].is_between(0, 1).all()
    assert set(open_world["text_encoder"]) == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert set(open_world["parsed_answer"]) == {"Bengal"}
    bengal = open_world.filter(pl.col("ground_truth") == "Bengal")
    assert bengal["correct"].all() and (bengal["ss_rel"] > 0.99).all()
    assert set(predictions["reason"]) >= {"names the true class"}
    # The raw output lives on the request once; the store's reader joins it back.
    assert predictions["raw_output"].is_null().all()
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        joined = db.predictions(predictions["prediction_id"].to_list())
    assert joined["raw_output"].str.contains("<answer>").all()
    # Tables, JSON and markdown.
    assert "strict accuracy" in out and "SS_rel" in out
    (written,) = (tmp_path / "results").glob("*.json")
    data = json.loads(written.read_text())
    sections = {(s["mode"], s["option_order"]): s for s in data["sections"]}
    manifest_hm = sections[("closed", "manifest")]["metrics"]["correct"]["average"]["hm"]
    assert manifest_hm == {"mean": 100.0, "std": 0.0}
    assert sections[("open", None)]["answered"] == 16
    markdown = written.with_suffix(".md").read_text()
    assert "## closed world: options shuffled per image and trial: strict accuracy" in markdown


def test_a_rerun_asks_only_what_is_missing(
    paper: tuple[Path, Path], server: ScriptedServer
) -> None:
    code, out = evaluate(paper, server.url, "--mode", "closed", "--trials", "1")
    assert code == 0, out
    first = len(server.chat_requests)
    assert first == 16  # 8 images, in the manifests' order and shuffled with seed 0
    code, out = evaluate(paper, server.url, "--mode", "closed", "--trials", "1")
    assert code == 0, out
    assert len(server.chat_requests) == first
    assert re.search(r"scored earlier \(left alone\)\s*│\s*16", out), out
    # A third trial: only its new shuffles are asked; the manifest order is reused.
    code, out = evaluate(paper, server.url, "--mode", "closed", "--trials", "2")
    assert code == 0, out
    new = server.chat_requests[first:]
    assert 0 < len(new) <= 8
    assert read("predictions").height == 32


def test_a_failed_request_leaves_its_questions_unanswered_until_a_rerun(
    paper: tuple[Path, Path], server: ScriptedServer
) -> None:
    server.script(Fault("bad_request"))  # not retried: the first request fails for good
    code, out = evaluate(paper, server.url, "--mode", "open", "--trials", "1")
    assert code == 0, out
    answered = read("predictions").height
    assert 1 <= 8 - answered <= 2  # the fixture's images share bytes: a request may serve two
    assert f"{answered}/8 questions answered" in out
    assert f"{8 - answered} questions have no answer" in out
    sent = len(server.chat_requests)
    assert Counter(read("requests")["status"]) == {"ok": sent - 1, "error": 1}
    code, out = evaluate(paper, server.url, "--mode", "open", "--trials", "1")
    assert code == 0, out
    assert len(server.chat_requests) == sent + 1  # only the failed one was asked again
    assert "8/8 questions answered" in out
    assert read("predictions").height == 8


def test_the_answer_only_prompt_for_baselines(
    paper: tuple[Path, Path], server: ScriptedServer
) -> None:
    code, out = evaluate(
        paper, server.url, "--mode", "closed", "--trials", "1", "--prompt", "answer-only"
    )
    assert code == 0, out
    predictions = read("predictions")
    assert set(predictions["prompt_style"]) == {"answer-only"}
    assert predictions["prompt"].str.contains("Options: ").all()
    assert predictions.filter(pl.col("option_order") == "manifest")["correct"].all()


def test_a_server_asked_for_its_model_gets_the_api_key(
    paper: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model openai:@URL`` lists the server's models with the key from the environment, as
    the questions are asked with it."""
    data_root, manifests = paper
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer(responder=first_option, models=(MODEL,), api_key="sk-test") as keyed:
        result = runner.invoke(
            app,
            ["eval", "--model", f"openai:@{keyed.url}", "--dataset", "pets", "--data-root",
             str(data_root), "--manifests", str(manifests), "--mode", "closed", "--trials", "1"],
        )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    assert set(read("predictions")["model"]) == {f"openai:{MODEL}"}


def test_questions_from_the_test_images_of_a_layout(
    official_layout: Any, server: ScriptedServer
) -> None:
    layout: LayoutInfo = official_layout("pets", n_classes=4, test_per_class=2)
    args = ["eval", "--model", f"openai:{MODEL}@{server.url}", "--dataset", "pets"]
    args += ["--source", "test", "--data-root", str(layout.root), "--mode", "closed"]
    result = runner.invoke(app, [*args, "--trials", "1"])
    assert result.exit_code == 0, result.stdout + result.stderr
    predictions = read("predictions")
    assert predictions.height == layout.counts["test"] == 8
    assert set(predictions["option_order"]) == {"shuffled"}
    assert set(predictions["rows_source"]) == {"test"}
    assert set(predictions["class_split"]) == {"seen", "unseen"}


def test_questions_from_an_export(official_layout: Any, server: ScriptedServer) -> None:
    layout: LayoutInfo = official_layout("pets", n_classes=4, test_per_class=2)
    planned = runner.invoke(
        app, ["plan", "--dataset", "pets", "--root", str(layout.root), "--shots", "1"]
    )
    assert planned.exit_code == 0, planned.stdout + planned.stderr
    exported = runner.invoke(app, ["export", "--out", "exported", "--configs", "eval"])
    assert exported.exit_code == 0, exported.stdout + exported.stderr
    args = ["eval", "--model", f"openai:{MODEL}@{server.url}", "--dataset", "pets"]
    result = runner.invoke(
        app, [*args, "--export", "exported", "--mode", "closed", "--trials", "1"]
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    predictions = read("predictions")
    assert predictions.height == 8
    assert set(predictions["rows_source"]) == {"export"}
    # Every request carried an image decoded from the export's embedded bytes.
    bodies = [r.body for r in server.chat_requests if r.body]
    assert all(
        body["messages"][-1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg")
        for body in bodies
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--dataset", "birds"], "unknown dataset 'birds'"),
        (["--data-root", "/nonexistent/fgvr"], "--data-root /nonexistent/fgvr does not exist"),
        (["--dataset", "cub"], "CUB-200-2011: no official layout found"),
        (["--mode", "sideways"], "option 'mode'"),
    ],
)
def test_bad_input_is_one_line_that_says_what_to_do(
    paper: tuple[Path, Path], server: ScriptedServer, extra: list[str], expected: str
) -> None:
    code, out = evaluate(paper, server.url, *extra)
    assert code != 0
    assert expected in out
    assert "Traceback" not in out
    assert not server.chat_requests


def test_a_model_the_server_does_not_serve_and_a_server_that_is_down(
    paper: tuple[Path, Path], server: ScriptedServer
) -> None:
    data_root, manifests = paper
    base = ["eval", "--dataset", "pets", "--data-root", str(data_root), "--mode", "closed"]
    base += ["--manifests", str(manifests)]
    wrong = runner.invoke(app, [*base, "--model", f"openai:fine-r1@{server.url}"])
    assert wrong.exit_code != 0
    assert (
        "does not serve 'fine-r1'" in wrong.stderr and "--model openai:test-model@" in wrong.stderr
    )
    down = runner.invoke(app, [*base, "--model", "openai:fine-r1@http://127.0.0.1:9"])
    assert down.exit_code != 0
    assert "no OpenAI-compatible server answers at http://127.0.0.1:9" in down.stderr
    missing = runner.invoke(app, [*base, "--model", "local:/nonexistent/checkpoint"])
    assert missing.exit_code != 0
    assert "/nonexistent/checkpoint does not exist" in missing.stderr
    assert "Traceback" not in wrong.stderr + down.stderr + missing.stderr
    # The model is checked before anything is listed or recorded.
    assert not Path("cotforge.duckdb").exists() or read("runs").height == 0


def test_trainers_evaluate_runs_the_same_evaluation(
    paper: tuple[Path, Path], server: ScriptedServer, tmp_path: Path
) -> None:
    from cotforge.errors import ConfigError
    from trainers.evaluate import evaluate as evaluate_model

    data_root, manifests = paper
    results = evaluate_model(
        f"openai:{MODEL}@{server.url}",
        store=tmp_path / "train.duckdb",
        datasets=["pet"],
        mode="closed",
        data_root=data_root,
        manifests=manifests,
        trials=1,
    )
    assert results.score("closed", "correct", order="manifest").mean == 100.0
    assert read("predictions", tmp_path / "train.duckdb").height == 16
    with pytest.raises(ConfigError, match="trials"):
        evaluate_model(f"openai:{MODEL}@{server.url}", trials=0)


# --- killed mid-run ------------------------------------------------------------------------------


def _cli(paper: tuple[Path, Path], url: str, store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cotforge",
        *eval_args(paper, url),
        "--mode",
        "closed",
        "--trials",
        "3",
        "--concurrency",
        "2",
        "--store",
        str(store),
    ]


def _scores(store: Path) -> dict[str, tuple[bool, bool, str]]:
    with Store.open(store, read_only=True) as db:
        frame = db.table("predictions")
    return {
        row["prediction_id"]: (row["correct"], row["text_inclusion"], row["parsed_answer"])
        for row in frame.iter_rows(named=True)
    }


@pytest.mark.slow
def test_sigkill_then_rerun_asks_nothing_twice(paper: tuple[Path, Path], tmp_path: Path) -> None:
    reference = tmp_path / "reference.duckdb"
    interrupted = tmp_path / "interrupted.duckdb"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    # Answers are written every half second: at 0.1 s a request, two at a time, the kill
    # after 20 requests comes when one batch is written and more are in flight.
    with ScriptedServer(responder=first_option, models=(MODEL,), latency_s=0.1) as server:
        subprocess.run(_cli(paper, server.url, reference), env=env, check=True, capture_output=True)
        before = len(server.chat_requests)
        process = subprocess.Popen(
            _cli(paper, server.url, interrupted),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while len(server.chat_requests) < before + 20:
            assert process.poll() is None, "eval finished before it could be killed"
            assert time.monotonic() < deadline, "eval never reached the kill point"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        with Store.open(interrupted, read_only=True) as db:
            recorded = set(db.table("requests", where={"status": "ok"})["request_id"])
            kept = db.table("predictions").height
        killed_at = len(server.chat_requests)
        subprocess.run(
            _cli(paper, server.url, interrupted), env=env, check=True, capture_output=True
        )
        after = server.chat_requests[killed_at:]
    assert recorded and kept, "nothing was recorded before the kill"
    assert after, "the rerun sent nothing: the kill came too late to test anything"
    resent = [r.request_id for r in after if r.request_id in recorded]
    assert not resent, f"{len(resent)} recorded requests were sent again"
    assert _scores(interrupted) == _scores(reference)
    with Store.open(interrupted, read_only=True) as db:
        runs = db.table("runs", where={"kind": "eval"})
    assert sorted(runs["status"]) == ["ok", "running"]  # the killed run never ended


# --- real models ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from cotforge.testing.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def test_zero_shot_clip_chooses_among_the_options(
    paper: tuple[Path, Path], tiny_clip: Path
) -> None:
    data_root, manifests = paper
    base = ["eval", "--model", f"clip:{tiny_clip}", "--dataset", "pets"]
    base += ["--data-root", str(data_root), "--manifests", str(manifests), "--trials", "2"]
    result = runner.invoke(app, base)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "the open world was skipped" in result.stdout
    predictions = read("predictions")
    assert set(predictions["mode"]) == {"closed"} and predictions.height == 32
    assert set(predictions["prompt_style"]) == {"zero-shot"}
    assert predictions["request_id"].is_null().all()
    for row in predictions.iter_rows(named=True):
        scores = json.loads(row["raw_output"])
        assert sorted(scores) == sorted(row["options"])
        assert row["parsed_answer"] == max(scores, key=scores.get)
        assert row["correct"] == (row["parsed_answer"] == row["ground_truth"])
    # The choice does not depend on the order the options are listed in.
    by_image: dict[str, set[str]] = {}
    for row in predictions.iter_rows(named=True):
        by_image.setdefault(row["image_id"], set()).add(row["parsed_answer"])
    assert all(len(chosen) == 1 for chosen in by_image.values())
    again = runner.invoke(app, base)
    assert again.exit_code == 0
    assert re.search(r"scored in this run\s*│\s*0", again.stdout), again.stdout
    refused = runner.invoke(app, [*base, "--mode", "open"])
    assert refused.exit_code != 0 and "--mode closed" in refused.stderr


def test_a_clip_text_tower_as_the_ss_rel_encoder(
    paper: tuple[Path, Path], server: ScriptedServer, tiny_clip: Path
) -> None:
    code, out = evaluate(
        paper, server.url, "--mode", "open", "--trials", "1", "--text-encoder", f"hf:{tiny_clip}"
    )
    assert code == 0, out
    predictions = read("predictions")
    assert set(predictions["text_encoder"]) == {f"hf:{tiny_clip}"}
    bengal = predictions.filter(pl.col("ground_truth") == "Bengal")
    assert (bengal["ss_rel"] > 0.999).all()
    assert predictions["ss_rel"].is_between(0, 1).all()


@pytest.mark.slow
def test_the_tiny_model_in_process(paper: tuple[Path, Path], tiny_qwen: Path) -> None:
    data_root, manifests = paper
    args = ["eval", "--model", f"local:{tiny_qwen}", "--dataset", "pets", "--trials", "1"]
    args += ["--data-root", str(data_root), "--manifests", str(manifests), "--max-tokens", "8"]
    result = runner.invoke(app, [*args, "--batch-size", "4"])
    assert result.exit_code == 0, result.stdout + result.stderr
    _assert_gibberish_scored(read("predictions"), read("requests"), f"local:{tiny_qwen}")


@pytest.mark.slow
def test_the_tiny_model_behind_transformers_serve(
    paper: tuple[Path, Path], transformers_server: Any
) -> None:
    served = transformers_server
    code, out = evaluate(
        paper, served.url, "--model", f"openai:{served.model}@{served.url}", "--trials", "1",
        "--max-tokens", "8", "--concurrency", "4",
    )  # fmt: skip
    assert code == 0, out
    _assert_gibberish_scored(read("predictions"), read("requests"), f"openai:{served.model}")


def _assert_gibberish_scored(predictions: pl.DataFrame, requests: pl.DataFrame, model: str) -> None:
    """A random model's answers: every question answered, recorded and scored wrong, with why."""
    assert set(requests["model"]) == {model} and set(requests["status"]) == {"ok"}
    assert (requests["completion_tokens"] > 0).all()
    # 8 images: closed in the manifests' order and shuffled, and open.
    assert predictions.height == 24
    assert set(predictions["model"]) == {model}
    assert not predictions["correct"].any()
    assert set(predictions["reason"]) == {"no <answer> tag"}
    assert predictions.filter(pl.col("mode") == "open")["ss_rel"].is_between(0, 1).all()
