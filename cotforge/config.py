"""Options for every verb, resolved from one precedence order.

Highest wins:

1. command-line flags;
2. environment variables: ``COTFORGE_<OPTION>`` for the global options (``COTFORGE_STORE``,
   ``COTFORGE_HOME``) and ``COTFORGE_<VERB>_<OPTION>`` for a verb's own (``COTFORGE_PLAN_SHOTS``);
3. the config file: ``--config FILE``, else ``$COTFORGE_CONFIG``, else ``./cotforge.toml`` when it
   exists; global options at the top level, a verb's options in its table (``[plan]``);
4. the defaults below.

Each verb's options are a pydantic model that refuses unknown keys and checks ranges, so a typo
in the config file or a bad environment value fails with the name of the option and where the
value came from, before any work starts.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cotforge.errors import ConfigError

CONFIG_FILE_NAME = "cotforge.toml"


class Options(BaseModel):
    """Base of every options model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GlobalOptions(Options):
    """Options every verb shares."""

    store: Path = Field(Path("cotforge.duckdb"), description="DuckDB store file")
    home: Path = Field(
        Path("~/.cache/cotforge"),
        description="cotforge's home; datasets are downloaded to HOME/datasets/NAME by default",
    )

    def dataset_root(self, name: str) -> Path:
        """The default root of a dataset when ``--root`` is not given."""
        return self.home.expanduser() / "datasets" / name


class DatasetOptions(Options):
    """How a dataset is found and its classes split (``datasets show``, ``plan``)."""

    root: Path | None = Field(None, description="dataset folder in its official layout")
    download: bool = Field(True, description="download a dataset missing under the default root")
    split_mode: Literal["paper", "random"] = Field(
        "paper", description="'paper': Fine-R1's seen/unseen split; 'random': seeded split"
    )
    unseen_fraction: float = Field(0.4, gt=0.0, lt=1.0, description="share of unseen classes")
    split_seed: int = Field(0, description="seed of the random seen/unseen split")


class PlanOptions(DatasetOptions):
    """Options of ``cotforge plan``."""

    dataset: str = Field(..., description="dataset name")
    shots: int = Field(4, ge=1, description="images per seen class")
    seed: int = Field(0, description="sampling seed")
    from_split: str = Field("train", description="official split the shots are drawn from")
    strategy: Literal["hierarchy", "text", "image"] = Field(
        "hierarchy", description="how a negative's confusable class is chosen"
    )
    allow_fewer: bool = Field(
        False, description="take every image of a class with fewer than --shots instead of failing"
    )


OptionsT = TypeVar("OptionsT", bound=Options)


def config_file_path(explicit: Path | None = None) -> Path | None:
    """The config file in force: ``--config``, ``$COTFORGE_CONFIG``, or ``./cotforge.toml``."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("COTFORGE_CONFIG")
    if from_env:
        return Path(from_env)
    default = Path.cwd() / CONFIG_FILE_NAME
    return default if default.is_file() else None


def read_config_file(path: Path | None) -> dict[str, Any]:
    """Parse the TOML config file; a missing explicit file or bad TOML is a :class:`ConfigError`."""
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"config file {path} does not exist; fix --config or COTFORGE_CONFIG"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as err:
        msg = f"config file {path} is not valid TOML: {err}"
        raise ConfigError(msg) from None


def resolve(
    model: type[OptionsT],
    *,
    section: str | None,
    flags: dict[str, Any],
    config_file: Path | None = None,
) -> OptionsT:
    """Build ``model`` from flags, environment and config file, in that precedence.

    ``section`` is the verb (``"plan"``) whose table and ``COTFORGE_<VERB>_`` variables apply, or
    ``None`` for the global options. Flags whose value is ``None`` were not given.
    """
    path = config_file_path(config_file)
    document = read_config_file(path)
    table = document.get(section, {}) if section else document
    if section and not isinstance(table, dict):
        msg = f"config file {path}: [{section}] must be a table"
        raise ConfigError(msg)
    known = set(model.model_fields)
    if section is None:
        table = {key: value for key, value in table.items() if not isinstance(value, dict)}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, value in table.items():
        values[key] = value
        origins[key] = f"config file {path}" + (f" [{section}]" if section else "")
    prefix = "COTFORGE_" + (f"{section.upper()}_" if section else "")
    for key in known:
        env_name = prefix + key.upper()
        if env_name in os.environ:
            values[key] = os.environ[env_name]
            origins[key] = f"environment variable {env_name}"
    for key, value in flags.items():
        if value is not None:
            values[key] = value
            origins[key] = f"--{key.replace('_', '-')}"
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_describe(err, origins)) from None


def _describe(err: ValidationError, origins: dict[str, str]) -> str:
    """One line per bad option: which option, where its value came from, and what is allowed."""
    problems = []
    for error in err.errors():
        key = str(error["loc"][0]) if error["loc"] else "?"
        where = origins.get(key, "defaults")
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown option {key!r} in {where}")
        elif error["type"] == "missing":
            problems.append(f"option --{key.replace('_', '-')} is required")
        else:
            problems.append(f"option {key!r} from {where}: {error['msg']}")
    return "; ".join(problems)
