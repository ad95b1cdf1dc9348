"""The judge check over a store: ``cotforge verify --judge`` against the scripted teacher."""

from __future__ import annotations

import functools
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cotforge.cli import app
from cotforge.judge import read_judgement
from cotforge.store import Store
from cotforge.testing.openai_server import ScriptedServer
from tests import teacher_answers
from tests.fixtures.fgvr_layouts import LayoutInfo, write_official_layout

runner = CliRunner()
MODEL = "test-model"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("COTFORGE_STORE", "COTFORGE_CONFIG", "COTFORGE_TEACHER_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def aircraft(tmp_path_factory: pytest.TempPathFactory) -> LayoutInfo:
    return write_official_layout(
        "aircraft", tmp_path_factory.mktemp("aircraft"), n_classes=None, train_per_class=3
    )


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout + result.stderr


def judge_verdicts() -> pl.DataFrame:
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        return db.table("verdicts", where={"check_name": "judge"})


def test_verify_judge_grades_what_passed_and_resumes(aircraft: LayoutInfo) -> None:
    unfaithful = frozenset({"Boeing 727-200"})
    responder = functools.partial(teacher_answers.answer, unfaithful=unfaithful)
    with ScriptedServer(responder=responder, models=(MODEL,)) as server:
        teacher = f"openai:{MODEL}@{server.url}"
        code, out = invoke(
            "generate",
            "--dataset",
            "aircraft",
            "--root",
            str(aircraft.root),
            "--shots",
            "2",
            "--teacher",
            teacher,
            "--classes",
            "Boeing 727-200,Boeing 737-200",
            "--no-concepts",
        )
        assert code == 0, out
        asked_before = len(server.chat_requests)
        code, out = invoke("verify", "--judge", "--teacher", teacher)
        assert code == 0, out
        judged = judge_verdicts()
        assert judged.height == 4
        assert sorted(judged["passed"].to_list()) == [False, False, True, True]
        assert len(server.chat_requests) == asked_before + 4
        # Nothing left to judge: no call, no new verdict.
        code, out = invoke("verify", "--judge", "--teacher", teacher)
        assert code == 0, out
        assert "nothing to judge" in out
        assert len(server.chat_requests) == asked_before + 4
    with Store.open(Path("cotforge.duckdb"), read_only=True) as db:
        calls = db.table("requests", where={"purpose": "judge"})
    assert calls.height == 4
    assert set(calls["status"]) == {"ok"}


def test_judge_without_images_records_why(aircraft: LayoutInfo, tmp_path: Path) -> None:
    with ScriptedServer(responder=teacher_answers.answer, models=(MODEL,)) as server:
        teacher = f"openai:{MODEL}@{server.url}"
        code, out = invoke(
            "generate",
            "--dataset",
            "aircraft",
            "--root",
            str(aircraft.root),
            "--shots",
            "2",
            "--teacher",
            teacher,
            "--limit",
            "2",
            "--no-concepts",
        )
        assert code == 0, out
        code, out = invoke("verify", "--judge", "--teacher", teacher, "--root", str(tmp_path))
        assert code == 0, out
    judged = judge_verdicts()
    assert judged.height == 2
    assert not judged["passed"].any()
    assert all("not found; pass --root" in reason for reason in judged["reason"])


def test_unreadable_judgements_fail() -> None:
    assert not read_judgement(None).passed
    assert not read_judgement("verdict: maybe").passed
    assert read_judgement("  Verdict - faithful\nReason: fine").passed
