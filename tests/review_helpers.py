"""Helpers of the review tests: a store made the real way, and answering records as a given
Argilla user through the REST calls the UI makes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from cotforge.argilla_stack import ArgillaStack, ArgillaUser
from cotforge.cli import app
from cotforge.config import ReviewOptions
from cotforge.testing.openai_server import ScriptedServer
from tests import teacher_answers
from tests.fixtures.fgvr_layouts import LayoutInfo, write_official_layout

MODEL = "test-model"
runner = CliRunner()


def generate_store(base: Path) -> tuple[Path, LayoutInfo]:
    """``cotforge generate`` against the scripted teacher on a small official FGVC-Aircraft:
    two verified rationales of each of three seen classes (texts of the 12 real Fine-R1 records).
    """
    layout = write_official_layout(
        "aircraft", base / "fgvc-aircraft-2013b", n_classes=6, train_per_class=3, test_per_class=1
    )
    store = base / "store.duckdb"
    with ScriptedServer(responder=teacher_answers.answer, models=(MODEL,)) as server:
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
                "--teacher",
                f"openai:{MODEL}@{server.url}",
                "--store",
                str(store),
                "--no-concepts",
            ],
        )
    assert result.exit_code == 0, result.stdout + result.stderr
    return store, layout


def copy_store(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store.duckdb"
    shutil.copy(store, copy)
    return copy


def options(stack: ArgillaStack, name: str, **more: Any) -> ReviewOptions:
    """Review options for the session stack's owner and a dataset of the test's own."""
    given = {"api_url": stack.url, "api_key": stack.owner.api_key, "dataset_name": name}
    return ReviewOptions(**(given | more))


def record_uuids(stack: ArgillaStack, dataset_id: Any) -> dict[str, str]:
    """Server ids of a dataset's records by external id (the rationale id)."""
    response = httpx.get(
        f"{stack.url}/api/v1/datasets/{dataset_id}/records",
        params={"limit": 1000},
        headers={"X-Argilla-Api-Key": stack.owner.api_key},
    )
    response.raise_for_status()
    return {item["external_id"]: item["id"] for item in response.json()["items"]}


def respond(stack: ArgillaStack, user: ArgillaUser, record_uuid: str, **values: Any) -> None:
    """Submit ``values`` (question name: value) to a record as ``user``, as the UI does."""
    response = httpx.post(
        f"{stack.url}/api/v1/records/{record_uuid}/responses",
        headers={"X-Argilla-Api-Key": user.api_key},
        json={
            "values": {name: {"value": value} for name, value in values.items()},
            "status": "submitted",
        },
    )
    assert response.status_code == 201, response.text


def edited(text: str) -> str:
    """A reviewer's edit of a rationale that keeps it valid: one more sentence of analysis."""
    marker = "<analysis>\n"
    assert marker in text
    return text.replace(marker, marker + "A reviewer adds: the wing tips are clearly visible. ", 1)
