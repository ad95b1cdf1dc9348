"""``cotforge generate`` end to end against the scripted OpenAI-compatible server.

Real sockets, a real client, the real store: the server answers cotforge's prompts with
rationales built from the 12 real records (tests/teacher_answers.py) and misbehaves on demand.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from cotforge.cli import app
from cotforge.store import Store
from cotforge.testing.openai_server import Fault, ReceivedRequest, ScriptedServer
from tests import teacher_answers
from tests.fixtures.fgvr_layouts import LayoutInfo

runner = CliRunner()
MODEL = "test-model"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COTFORGE_HOME", str(tmp_path / "home"))
    for name in ("COTFORGE_STORE", "COTFORGE_CONFIG", "COTFORGE_TEACHER_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def aircraft(tmp_path_factory: pytest.TempPathFactory) -> LayoutInfo:
    """Every aircraft variant, three train images each (tiny generated JPEGs)."""
    from tests.fixtures.fgvr_layouts import write_official_layout

    return write_official_layout(
        "aircraft", tmp_path_factory.mktemp("aircraft"), n_classes=None, train_per_class=3
    )


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(responder=teacher_answers.answer, models=(MODEL,)) as running:
        yield running


def generate(root: Path, url: str, *extra: str) -> tuple[int, str]:
    """Run ``cotforge generate`` on ``root`` with the scripted teacher at ``url`` (a later
    ``--teacher`` in ``extra`` wins)."""
    args = [
        "generate",
        "--dataset",
        "aircraft",
        "--root",
        str(root),
        "--shots",
        "2",
        "--teacher",
        f"openai:{MODEL}@{url}",
        *extra,
    ]
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout + result.stderr


def read(table: str) -> pl.DataFrame:
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        return db.table(table)


def accepted_samples() -> set[str]:
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        return db.accepted_samples(model=f"openai:{MODEL}", required=["structure", "correct"])


def test_generate_verifies_and_records_every_call(
    aircraft: LayoutInfo, server: ScriptedServer
) -> None:
    code, out = generate(aircraft.root, server.url, "--limit", "6")
    assert code == 0, out
    assert "verified in this run" in out
    requests = read("requests")
    assert Counter(requests["purpose"]) == {"questions": 1, "concepts": 6, "rationale": 6}
    assert set(requests["status"]) == {"ok"}
    assert requests["prompt_tokens"].min() > 0
    rationales = read("rationales")
    assert rationales.height == 6
    assert rationales["rationale_id"].is_unique().all()
    verdicts = read("verdicts")
    assert verdicts.height == 6 * 7
    assert verdicts["passed"].all()
    assert len(accepted_samples()) == 6
    run = read("runs").filter(pl.col("kind") == "generate")
    assert run["status"].to_list() == ["ok"]

    # The paraphrased questions reached the rationale prompts; the concepts too.
    prompts = [teacher_answers.user_text(r.body) for r in server.chat_requests if r.body]
    rationale_prompts = [p for p in prompts if "of the kind" in p]
    assert all("Visual concepts" in p for p in rationale_prompts)
    asked = {
        q
        for p in rationale_prompts
        for q in ["Which aircraft variant", "What exact model"]
        if q in p
    }
    assert asked

    # A second run finds everything done and sends nothing.
    sent = len(server.chat_requests)
    code, out = generate(aircraft.root, server.url, "--limit", "6")
    assert code == 0, out
    assert len(server.chat_requests) == sent


def test_wrong_answers_are_resampled_until_verified(aircraft: LayoutInfo, tmp_path: Path) -> None:
    wrong = frozenset({"Boeing 727-200", "Boeing 737-200"})
    responder = functools.partial(teacher_answers.answer, wrong_first=wrong)
    with ScriptedServer(responder=responder, models=(MODEL,)) as server:
        code, out = generate(
            aircraft.root, server.url, "--classes", ",".join(sorted(wrong)), "--concurrency", "4"
        )
    assert code == 0, out
    requests = read("requests").filter(pl.col("purpose") == "rationale")
    assert sorted(requests["attempt"].to_list()) == [0, 0, 0, 0, 1, 1, 1, 1]
    verdicts = read("verdicts").filter(pl.col("check_name") == "correct")
    failed = verdicts.filter(~pl.col("passed"))
    assert failed.height == 4
    assert all("Boeing 747-400" in reason for reason in failed["reason"])
    assert len(accepted_samples()) == 4


def test_judge_grades_comparisons_and_a_required_judge_resamples(
    aircraft: LayoutInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    unfaithful = frozenset({"Boeing 727-200"})
    responder = functools.partial(teacher_answers.answer, unfaithful=unfaithful)
    monkeypatch.setenv("COTFORGE_VERIFY_REQUIRED", "structure,correct,candidates,judge")
    with ScriptedServer(responder=responder, models=(MODEL,)) as server:
        code, out = generate(
            aircraft.root,
            server.url,
            "--classes",
            "Boeing 727-200,Boeing 737-200",
            "--judge",
            "--max-attempts",
            "2",
            "--no-concepts",
        )
    assert code == 0, out
    requests = read("requests")
    judge_calls = requests.filter(pl.col("purpose") == "judge")
    # 737-200: two samples judged faithful at once; 727-200: two samples, two attempts each.
    assert judge_calls.height == 2 + 4
    judged = read("verdicts").filter(pl.col("check_name") == "judge")
    assert judged.height == 6
    failing = judged.filter(~pl.col("passed"))
    assert failing.height == 4
    assert all("winglets" in reason for reason in failing["reason"])
    assert "failed after every attempt" in out
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        accepted = db.accepted_samples(
            model=f"openai:{MODEL}", required=["structure", "correct", "judge"]
        )
    assert len(accepted) == 2


def test_required_judge_without_judging_is_refused(
    aircraft: LayoutInfo, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COTFORGE_VERIFY_REQUIRED", "structure,judge")
    code, out = generate(aircraft.root, server.url, "--limit", "1")
    assert code != 0
    assert "--judge" in out


def test_attempts_run_out_and_are_failures_with_reasons(aircraft: LayoutInfo) -> None:
    with ScriptedServer(responder=lambda body: "no tags at all", models=(MODEL,)) as server:
        code, out = generate(
            aircraft.root, server.url, "--limit", "2", "--max-attempts", "2", "--no-concepts"
        )
    assert code == 0, out
    assert "failed after every attempt" in out
    rationale_requests = read("requests").filter(pl.col("purpose") == "rationale")
    assert rationale_requests.height == 4
    structure = read("verdicts").filter(pl.col("check_name") == "structure")
    assert structure.height == 4
    assert not structure["passed"].any()
    assert all("missing section: analysis" in reason for reason in structure["reason"])


FAULTS = [
    Fault("rate_limit", retry_after="0"),
    Fault("server_error"),
    Fault("drop"),
    Fault("malformed_json"),
    Fault("hang", hang_s=30),
    Fault("empty"),
    Fault("refusal"),
    Fault("three_choices"),
]


def one_fault_per_rationale(faults: list[Fault]) -> Callable[[ReceivedRequest], Fault | None]:
    """A server rule: the first try of each new rationale request meets the next fault."""
    left = list(faults)

    def rule(received: ReceivedRequest) -> Fault | None:
        if received.try_number != 1 or not left or received.body is None:
            return None
        if "of the kind" not in teacher_answers.user_text(received.body):
            return None
        return left.pop(0)

    return rule


def test_faults_end_in_verified_or_failed_with_reason(
    aircraft: LayoutInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COTFORGE_GENERATE_TIMEOUT_S", "2")
    monkeypatch.setenv("COTFORGE_GENERATE_MAX_RETRIES", "3")
    rule = one_fault_per_rationale(FAULTS)
    with ScriptedServer(
        responder=teacher_answers.answer, models=(MODEL,), fault_for=rule
    ) as server:
        code, out = generate(
            aircraft.root, server.url, "--limit", "8", "--no-concepts", "--concurrency", "1"
        )
        received = server.chat_requests
    assert code == 0, out
    requests = read("requests")
    assert requests["request_id"].is_unique().all()
    rationale = requests.filter(pl.col("purpose") == "rationale")
    retried = rationale.filter(pl.col("retry_log").list.len() > 0)
    # 429, 500, dropped connection, malformed JSON and the hang were retried and then answered.
    assert retried.height >= 5
    logs = " | ".join(entry for log in retried["retry_log"] for entry in log)
    for seen in ("429", "500", "timeout"):
        assert seen in logs, logs
    samples = read("samples").height
    assert samples >= 8
    decided = len(accepted_samples())
    structure = read("verdicts").filter(pl.col("check_name") == "structure")
    # The empty answer and the refusal fail structure (then their resample verifies).
    assert (~structure["passed"]).sum() >= 2
    assert decided == 8
    assert sum(r.fault is not None for r in received) == len(FAULTS)


def _kill_after(server: ScriptedServer, count: int, process: subprocess.Popen) -> None:
    """SIGKILL ``process`` once the server has received ``count`` chat requests."""
    deadline = time.monotonic() + 60
    while len(server.chat_requests) < count:
        assert process.poll() is None, "generate finished before it could be killed"
        assert time.monotonic() < deadline, "generate never reached the kill point"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def _cli(root: Path, url: str, store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cotforge",
        "generate",
        "--dataset",
        "aircraft",
        "--root",
        str(root),
        "--shots",
        "2",
        "--limit",
        "10",
        "--teacher",
        f"openai:{MODEL}@{url}",
        "--concurrency",
        "2",
        "--store",
        str(store),
    ]


def _final_records(store: Path) -> set[tuple[str, str, str]]:
    with Store.open(store, read_only=True) as db:
        results = db.request_results(where={"purpose": "rationale", "status": "ok"})
        accepted = db.accepted_samples(model=f"openai:{MODEL}", required=["correct"])
    return {
        (row["sample_id"], row["request_id"], row["raw_text"])
        for row in results.iter_rows(named=True)
        if row["sample_id"] in accepted
    }


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 6, 14])
def test_sigkill_then_rerun_pays_nothing_twice(
    aircraft: LayoutInfo, tmp_path: Path, kill_at: int
) -> None:
    """Killed after the questions (1), among the concepts (6) or the rationales (14)."""
    reference = tmp_path / "reference.duckdb"
    interrupted = tmp_path / "interrupted.duckdb"
    responder = functools.partial(teacher_answers.answer, wrong_first=frozenset({"Boeing 727-200"}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    with ScriptedServer(responder=responder, models=(MODEL,), latency_s=0.05) as server:
        subprocess.run(
            _cli(aircraft.root, server.url, reference), env=env, check=True, capture_output=True
        )
        before = len(server.chat_requests)
        process = subprocess.Popen(
            _cli(aircraft.root, server.url, interrupted),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _kill_after(server, before + kill_at, process)
        with Store.open(interrupted, read_only=True) as db:
            recorded = set(db.table("requests", where={"status": "ok"})["request_id"])
        killed_at = len(server.chat_requests)
        subprocess.run(
            _cli(aircraft.root, server.url, interrupted), env=env, check=True, capture_output=True
        )
        after = server.chat_requests[killed_at:]
    assert after, "the rerun sent nothing: the kill came too late to test anything"
    assert all(r.request_id for r in after)
    resent = [r.request_id for r in after if r.request_id in recorded]
    assert not resent, f"{len(resent)} recorded requests were sent again"
    assert _final_records(interrupted) == _final_records(reference)
    with Store.open(interrupted, read_only=True) as db:
        runs = db.table("runs", where={"kind": "generate"})
    assert sorted(runs["status"]) == ["ok", "running"]  # the killed run never ended


def test_unreachable_teacher_says_what_to_start(aircraft: LayoutInfo) -> None:
    code, out = generate(aircraft.root, "http://127.0.0.1:9", "--limit", "1")
    assert code != 0
    assert "vllm serve" in out
    assert "Traceback" not in out


def test_dry_run_prints_prompts_and_sends_nothing(
    aircraft: LayoutInfo, server: ScriptedServer
) -> None:
    code, out = generate(aircraft.root, server.url, "--dry-run", "--limit", "3")
    assert code == 0, out
    assert "rationale prompt" in out
    assert "<analysis>" in out
    assert not server.chat_requests
    assert read("requests").height == 0


def test_bad_class_names_fail_with_a_hint(aircraft: LayoutInfo, server: ScriptedServer) -> None:
    code, out = generate(aircraft.root, server.url, "--classes", "Boeing 737")
    assert code != 0
    assert "is not a class of aircraft" in out
    assert "Boeing 737-200" in out


@pytest.mark.slow
def test_generate_with_transformers_serve_records_unverifiable_answers(
    aircraft: LayoutInfo, transformers_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real OpenAI-compatible server (transformers serve) running the tiny random model: its
    answers are gibberish, so every one is an answer that failed verification, with reasons."""
    monkeypatch.setenv("COTFORGE_GENERATE_MAX_TOKENS", "16")
    served = transformers_server
    args = ["--teacher", f"openai:{served.model}@{served.url}", "--limit", "2"]
    code, out = generate(aircraft.root, served.url, *args, "--max-attempts", "1")
    assert code == 0, out
    requests = read("requests")
    assert Counter(requests["purpose"]) == {"questions": 1, "concepts": 2, "rationale": 2}
    assert set(requests["status"]) == {"ok"}
    assert (requests["completion_tokens"] > 0).all()
    structure = read("verdicts").filter(pl.col("check_name") == "structure")
    assert structure.height == 2
    assert not structure["passed"].any()
    assert all(reason for reason in structure["reason"])
    assert "failed after every attempt" in out


@pytest.mark.slow
def test_generate_with_the_local_teacher(
    aircraft: LayoutInfo, tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COTFORGE_GENERATE_MAX_TOKENS", "16")
    args = ["--teacher", f"local:{tiny_qwen}", "--limit", "2", "--max-attempts", "2"]
    code, out = generate(aircraft.root, "unused", *args)
    assert code == 0, out
    requests = read("requests")
    assert requests.filter(pl.col("purpose") == "rationale").height == 4
    assert set(requests["model"]) == {f"local:{tiny_qwen}"}
    assert read("verdicts").height == 4 * 7


def test_images_reach_the_teacher_as_the_dataset_means_them(
    aircraft: LayoutInfo, official_layout: Callable[..., LayoutInfo]
) -> None:
    """A dataset that edits no pixel hands over the undecoded file (the client may send its
    bytes); FGVC-Aircraft hands over the image without its 20-px banner."""
    from cotforge.data.registry import get_source
    from cotforge.generate import select_samples

    pets = official_layout("pets", n_classes=2, train_per_class=2)
    for layout, edits in ((pets, False), (aircraft, True)):
        source = get_source(layout.name, layout.root)
        key = source.images("train")[0].key
        row = {
            "sample_id": f"{layout.name}/train/{key}",
            "class_index": 0,
            "class_split": "seen",
            "split": "train",
            "key": key,
            "negative_class_index": None,
        }
        row["class_index"] = source.images("train")[0].class_index
        (sample,) = select_samples([row], source, split="all", classes=[], limit=None)
        image = sample.image.load()
        with Image.open(source.root / key) as original:
            size = original.size
        if edits:
            assert image.size == (size[0], size[1] - 20)
        else:
            assert image.format == "JPEG" and image.tile, "expected an undecoded file"
