"""The one precedence order: flags > environment > config file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotforge.config import GlobalOptions, PlanOptions, resolve
from cotforge.errors import ConfigError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("COTFORGE_CONFIG", "COTFORGE_STORE", "COTFORGE_HOME", "COTFORGE_PLAN_SHOTS"):
        monkeypatch.delenv(name, raising=False)


def write_config(text: str) -> Path:
    path = Path("cotforge.toml")
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_nothing_is_given() -> None:
    options = resolve(PlanOptions, section="plan", flags={"dataset": "aircraft"})
    assert (options.shots, options.seed, options.strategy) == (4, 0, "hierarchy")
    assert resolve(GlobalOptions, section=None, flags={}).store == Path("cotforge.duckdb")


def test_file_then_env_then_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('store = "from-file.duckdb"\n[plan]\ndataset = "cub"\nshots = 2\nseed = 7\n')
    options = resolve(PlanOptions, section="plan", flags={})
    assert (options.dataset, options.shots, options.seed) == ("cub", 2, 7)

    monkeypatch.setenv("COTFORGE_PLAN_SHOTS", "3")
    assert resolve(PlanOptions, section="plan", flags={}).shots == 3
    assert resolve(PlanOptions, section="plan", flags={"shots": 5}).shots == 5
    assert resolve(PlanOptions, section="plan", flags={"shots": None}).shots == 3

    assert resolve(GlobalOptions, section=None, flags={}).store == Path("from-file.duckdb")
    monkeypatch.setenv("COTFORGE_STORE", "from-env.duckdb")
    assert resolve(GlobalOptions, section=None, flags={}).store == Path("from-env.duckdb")


def test_explicit_config_file_wins_over_cwd(tmp_path: Path) -> None:
    write_config("[plan]\nshots = 2\n")
    other = tmp_path / "other.toml"
    other.write_text("[plan]\nshots = 9\n", encoding="utf-8")
    options = resolve(PlanOptions, section="plan", flags={"dataset": "cub"}, config_file=other)
    assert options.shots == 9


def test_unknown_key_names_the_file() -> None:
    write_config("[plan]\nshotz = 2\n")
    with pytest.raises(ConfigError, match=r"unknown option 'shotz' in config file .*cotforge.toml"):
        resolve(PlanOptions, section="plan", flags={"dataset": "cub"})


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTFORGE_PLAN_SHOTS", "zero")
    with pytest.raises(ConfigError, match="COTFORGE_PLAN_SHOTS"):
        resolve(PlanOptions, section="plan", flags={"dataset": "cub"})


def test_range_checked_and_flag_named() -> None:
    with pytest.raises(ConfigError, match="'shots' from --shots"):
        resolve(PlanOptions, section="plan", flags={"dataset": "cub", "shots": 0})
    with pytest.raises(ConfigError, match="unseen_fraction"):
        resolve(PlanOptions, section="plan", flags={"dataset": "cub", "unseen_fraction": 1.5})


def test_missing_required_option() -> None:
    with pytest.raises(ConfigError, match="--dataset is required"):
        resolve(PlanOptions, section="plan", flags={})


def test_bad_toml_and_missing_explicit_file(tmp_path: Path) -> None:
    write_config("[plan\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve(PlanOptions, section="plan", flags={"dataset": "cub"})
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(GlobalOptions, section=None, flags={}, config_file=tmp_path / "nope.toml")


def test_default_dataset_root_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COTFORGE_HOME", str(tmp_path / "home"))
    options = resolve(GlobalOptions, section=None, flags={})
    assert options.dataset_root("cub") == tmp_path / "home" / "datasets" / "cub"
