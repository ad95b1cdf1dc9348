"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.argilla import argilla_stack  # noqa: F401 (fixture)
from tests.fixtures.fgvr_layouts import LayoutInfo, write_official_layout
from tests.fixtures.models import tiny_qwen, transformers_server  # noqa: F401 (fixtures)


@pytest.fixture
def official_layout(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., LayoutInfo]:
    """Factory: ``official_layout("cars", corrupt=1)`` writes a fresh official layout in its own
    temporary folder (so one test can build several) and returns its :class:`LayoutInfo`."""

    def make(name: str, **options: Any) -> LayoutInfo:
        return write_official_layout(name, tmp_path_factory.mktemp(name), **options)

    return make


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the internet or send telemetry, whatever the calling shell sets."""
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(name, value)
