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
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from cotforge.errors import ConfigError

CONFIG_FILE_NAME = "cotforge.toml"


def _comma_list(value: object) -> object:
    """A list given as one comma-separated string (environment variables, flags) split into
    its items; anything else as it is, for pydantic to check."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _named_roots(value: object) -> object:
    """``NAME=PATH`` items (comma-separated in one string, or a list); a bare ``PATH`` is
    filed under ``*``, the root of every dataset."""
    value = _comma_list(value)
    if isinstance(value, list | tuple):
        roots: dict[str, str] = {}
        for item in value:
            name, sep, path = str(item).partition("=")
            roots[name.strip() if sep else "*"] = path.strip() if sep else name.strip()
        return roots
    return value


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
    unseen_shots: int = Field(
        0,
        ge=0,
        description="images per unseen class as well (anchors without triplets), e.g. to "
        "generate rationales for unseen classes",
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
    borrowed: bool = False,
) -> OptionsT:
    """Build ``model`` from flags, environment and config file, in that precedence.

    ``section`` is the verb (``"plan"``) whose table and ``COTFORGE_<VERB>_`` variables apply, or
    ``None`` for the global options. Flags whose value is ``None`` were not given. ``borrowed``
    reads a part of another verb's options (``verify --judge`` takes the teacher options of
    ``[generate]``): that table's other keys are not errors then.
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
    if borrowed:
        table = {key: value for key, value in table.items() if key in known}
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


class ImportOptions(Options):
    """Options of ``cotforge import`` (the file itself is the verb's argument)."""

    image_root: Path | None = Field(
        None,
        description="folder that relative image paths resolve against (default: the file's folder)",
    )
    dataset: str | None = Field(
        None, description="dataset of every record (default: inferred from path, else label)"
    )
    batch_size: int = Field(500, ge=1, description="records written per transaction")


class ReportOptions(Options):
    """Options of ``cotforge report``."""

    run_id: str | None = Field(None, description="report on this run only (default: whole store)")
    out_dir: Path | None = Field(
        None, description="write index.html and its PNG plots to this folder"
    )


VERIFY_CHECKS = (
    "structure",
    "correct",
    "candidates",
    "super_category",
    "leakage",
    "language",
    "length",
)
"""The checks ``cotforge verify`` runs (cotforge.verify), by name, in the order it reports them."""

OPTIONAL_CHECKS = ("judge",)
"""Checks that cost a teacher call (cotforge.judge): run only when asked (``--judge``), and
required only when listed in ``required``."""


class VerifyOptions(Options):
    """Options of ``cotforge verify`` and of the checks the generation loop runs per response.

    Every check runs on every rationale and is stored as a verdict; ``required`` only decides
    which of them a rationale must pass to be accepted, so changing it needs no re-verification
    of what the checks found. The length defaults leave room around the released Fine-R1 records
    (analysis 635-1,288, comparison 666-1,810, prediction 151-905 characters; 2.5-4.6k in all).
    """

    required: list[str] = Field(
        default_factory=lambda: list(VERIFY_CHECKS),
        description="checks a rationale must pass to be accepted (comma-separated on the CLI)",
    )
    analysis_min_chars: int = Field(100, ge=0, description="shortest analysis stage")
    analysis_max_chars: int = Field(
        6000, ge=1, validate_default=True, description="longest analysis stage"
    )
    comparison_min_chars: int = Field(100, ge=0, description="shortest comparison stage")
    comparison_max_chars: int = Field(
        8000, ge=1, validate_default=True, description="longest comparison stage"
    )
    prediction_min_chars: int = Field(1, ge=0, description="shortest prediction stage")
    prediction_max_chars: int = Field(
        2000, ge=1, validate_default=True, description="longest prediction stage"
    )
    max_total_chars: int = Field(20000, ge=1, description="longest whole response")
    leakage_phrases: list[str] = Field(
        default_factory=list,
        description="phrases that betray the given label, on top of the built-in list",
    )
    language: Literal["en"] = Field(
        "en", description="language the text must be written in (checked by its script)"
    )
    allow_missing_year: bool = Field(
        False, description="cars: accept a prediction that leaves out an unambiguous year"
    )
    batch_size: int = Field(
        2000, ge=1, description="rationales per verdict write; a crash loses at most one batch"
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="processes running the checks [one per core from 2,000 rationales, else 1]",
    )

    @field_validator("required", "leakage_phrases", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """Environment variables and flags give lists as one comma-separated string."""
        return _comma_list(value)

    @field_validator("required")
    @classmethod
    def _known_checks(cls, value: list[str]) -> list[str]:
        known = (*VERIFY_CHECKS, *OPTIONAL_CHECKS)
        unknown = [name for name in value if name not in known]
        if unknown:
            msg = (
                f"unknown check(s) {', '.join(map(repr, unknown))}; "
                f"known checks: {', '.join(known)}"
            )
            raise ValueError(msg)
        return list(dict.fromkeys(value))

    @field_validator("leakage_phrases")
    @classmethod
    def _non_blank(cls, value: list[str]) -> list[str]:
        if any(not phrase.strip() for phrase in value):
            msg = "leakage phrases must not be blank; remove the empty entry"
            raise ValueError(msg)
        return value

    @field_validator("analysis_max_chars", "comparison_max_chars", "prediction_max_chars")
    @classmethod
    def _above_minimum(cls, value: int, info: ValidationInfo) -> int:
        minimum = str(info.field_name).replace("_max_", "_min_")
        low = info.data.get(minimum)
        if low is not None and low > value:
            msg = f"{value} is below {minimum} ({low}); raise the maximum or lower the minimum"
            raise ValueError(msg)
        return value


class DedupOptions(Options):
    """Options of ``cotforge dedup``; changing the MinHash ones starts a fresh index."""

    threshold: float = Field(0.5, gt=0.0, le=1.0, description="near-duplicate Jaccard threshold")
    shingle_size: int = Field(3, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=16, description="MinHash permutations")
    same_class: bool = Field(False, description="compare rationales of the same class only")
    embeddings: bool = Field(False, description="also find MiniLM embedding near-duplicates")
    embedding_threshold: float = Field(0.95, gt=0.0, le=1.0, description="embedding cosine")
    seed: int = Field(0, description="MinHash seed")


DEFAULT_LOCAL_TEACHER = "local:Qwen/Qwen2.5-VL-7B-Instruct"
"""The teacher when none is configured and ``COTFORGE_TEACHER_URL`` is unset."""


class TeacherOptions(Options):
    """Which teacher answers, and how the client treats it (``generate``, ``verify --judge``).

    ``teacher`` is ``openai:MODEL@URL`` (more ``@URL`` s, or ``teacher_urls``, spread the load
    over several servers; without a URL, ``COTFORGE_TEACHER_URL``), or ``local:PATH_OR_ID`` for
    an in-process transformers model. Unset: the server at ``COTFORGE_TEACHER_URL`` when set,
    else ``local:Qwen/Qwen2.5-VL-7B-Instruct``.
    """

    teacher: str | None = Field(None, description="openai:MODEL@URL or local:PATH_OR_ID")
    teacher_urls: list[str] = Field(
        default_factory=list, description="more server URLs for an openai: teacher"
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="environment variable holding the API key (never stored)"
    )
    concurrency: int = Field(64, ge=1, description="requests in flight at once")
    timeout_s: float = Field(300.0, gt=0, description="per-request timeout in seconds")
    max_retries: int = Field(6, ge=0, description="retries of a request on transient faults")
    requests_per_minute: float | None = Field(None, gt=0, description="request rate limit")
    tokens_per_minute: float | None = Field(None, gt=0, description="token rate limit")
    max_image_side: int = Field(1024, ge=32, description="longer image side sent, in pixels")
    batch_size: int = Field(4, ge=1, description="local teacher: requests per generate() batch")
    price_input_per_million: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    price_output_per_million: float = Field(0.0, ge=0, description="USD per 1M completion tokens")

    @field_validator("teacher_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        return _comma_list(value)


class GenerateOptions(PlanOptions, TeacherOptions):
    """Options of ``cotforge generate``: the plan it works on, the teacher, and the loop."""

    split: Literal["seen", "unseen", "all"] = Field(
        "seen", description="generate for anchors of seen classes, unseen ones, or both"
    )
    classes: list[str] = Field(
        default_factory=list, description="only these classes (names or labels, comma-separated)"
    )
    limit: int | None = Field(None, ge=1, description="at most this many samples")
    max_attempts: int = Field(4, ge=1, description="rationale attempts per sample until verified")
    max_tokens: int = Field(2048, ge=16, description="longest teacher answer, in tokens")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="teacher sampling temperature")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="teacher nucleus sampling")
    questions: int = Field(10, ge=1, description="paraphrased student questions per dataset")
    concepts: bool = Field(True, description="ask for image-level visual concepts first")
    neighbours: int = Field(
        3, ge=0, description="confusable classes whose shared concepts are pruned"
    )
    prompts_dir: Path | None = Field(None, description="folder of prompt templates to use")
    judge: bool = Field(
        False, description="grade each comparison's faithfulness to the image (a teacher call)"
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _split_classes(cls, value: object) -> object:
        return _comma_list(value)


EXPORT_CONFIGS = ("sft", "tapo", "eval")
"""The configs ``cotforge export`` writes, in the order it writes them."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {f"{unit[0]}ib": 1024 ** (n + 1) for n, unit in enumerate(("kb", "mb", "gb", "tb"))}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def parse_size(value: str | int) -> int:
    """Bytes in a size written ``500MB``, ``1.5GB``, ``64MiB`` or a plain number of bytes
    (MB = 10**6 bytes, as ``datasets`` counts shard sizes; MiB = 2**20).

    >>> parse_size("500MB"), parse_size("64MiB"), parse_size(1000)
    (500000000, 67108864, 1000)
    """
    if isinstance(value, int):
        return value
    found = _SIZE.match(value)
    if not found:
        msg = f"{value!r} is not a size; write it like 500MB, 1GB or 64MiB"
        raise ValueError(msg)
    return int(float(found[1]) * _SIZE_UNITS[(found[2] or "b").lower()])


class ExportOptions(Options):
    """Options of ``cotforge export``."""

    out: Path = Field(..., description="folder to write the dataset into")
    configs: list[Literal["sft", "tapo", "eval"]] = Field(
        default_factory=lambda: list(EXPORT_CONFIGS),
        description="configs to write: sft, tapo, eval or all (comma-separated on the CLI)",
    )
    format: Literal["hf", "llamafactory"] = Field(
        "hf",
        description="'hf': Hugging Face parquet shards + dataset card; 'llamafactory': the sft "
        "config as LLaMA-Factory sharegpt JSON + dataset_info.json with image files",
    )
    review: Literal["ignore", "respect", "require"] = Field(
        "respect",
        description="human reviews: 'ignore' them, 'respect' rejections and edits, or "
        "'require' an accepting review",
    )
    roots: dict[str, Path] = Field(
        default_factory=dict,
        description="dataset folders (NAME=PATH, or a bare PATH for every dataset) when not "
        "where the latest plan found them",
    )
    max_shard_size: int = Field(
        500 * 10**6, ge=1, description="largest parquet shard, in bytes (500MB, 1GB, ...)"
    )
    overwrite: bool = Field(False, description="replace an earlier export in --out")
    push_to_hub: str | None = Field(None, description="also upload the folder to ORG/NAME")
    private: bool = Field(False, description="create the Hub repository as private")
    seed: int = Field(0, description="seed of the eval options' order")
    eval_source: Literal["test", "paper"] = Field(
        "test",
        description="eval rows from the dataset's test images ('test') or from Fine-R1's "
        "manifests ('paper')",
    )
    eval_manifests: Path | None = Field(
        None, description="folder of the paper's eval manifests (default: the shipped copy)"
    )
    eval_per_class: int | None = Field(None, ge=1, description="eval images per class (all)")
    license: str = Field("other", description="license identifier written in the dataset card")
    prompts_dir: Path | None = Field(None, description="folder holding the system prompt")
    workers: int = Field(4, ge=1, description="threads reading and encoding images")

    @field_validator("configs", mode="before")
    @classmethod
    def _expand_all(cls, value: object) -> object:
        value = _comma_list(value)
        if isinstance(value, list) and "all" in value:
            return list(EXPORT_CONFIGS)
        return value

    @field_validator("configs")
    @classmethod
    def _ordered(cls, value: list[str]) -> list[str]:
        if not value:
            msg = f"name at least one config: {', '.join(EXPORT_CONFIGS)} or all"
            raise ValueError(msg)
        return [name for name in EXPORT_CONFIGS if name in value]

    @field_validator("roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: object) -> object:
        return _named_roots(value)

    @field_validator("max_shard_size", mode="before")
    @classmethod
    def _parse_size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("push_to_hub")
    @classmethod
    def _repo_id(cls, value: str | None) -> str | None:
        if value is not None and not _REPO_ID.match(value):
            msg = f"{value!r} is not a Hub repository id; write it as ORG/NAME"
            raise ValueError(msg)
        return value


class ReviewOptions(Options):
    """Options of ``cotforge review push / pull / status`` (Argilla 2.8).

    The server and key come from here or from Argilla's own ``ARGILLA_API_URL`` and
    ``ARGILLA_API_KEY``; the key is never written to the store, logs or runs.
    """

    api_url: str | None = Field(None, description="Argilla server URL [env ARGILLA_API_URL]")
    api_key: str | None = Field(
        None, repr=False, description="Argilla API key [env ARGILLA_API_KEY]; never stored"
    )
    workspace: str = Field("cotforge", min_length=1, description="Argilla workspace")
    dataset_name: str = Field("cotforge-review", min_length=1, description="Argilla dataset")
    only: Literal["accepted", "failed", "all"] = Field(
        "accepted",
        description="push rationales that passed verification and dedup, that failed, or all",
    )
    run_id: str | None = Field(None, description="push only the rationales this run wrote")
    batch_size: int = Field(
        200, ge=1, le=500, description="records per request; the unit a dropped push resumes at"
    )
    image_side: int = Field(512, ge=32, description="longer image side sent, in pixels")
    reviewers_per_record: int = Field(
        1, ge=1, description="submitted reviews a record needs before Argilla calls it complete"
    )
    policy: Literal["majority", "any_reject"] = Field(
        "majority",
        description="how several reviewers' decisions become one: 'majority' (a tie goes to "
        "the stricter), or 'any_reject' (one rejection rejects, else one edit edits)",
    )
    roots: dict[str, Path] = Field(
        default_factory=dict,
        description="dataset folders (NAME=PATH) when not where the latest plan found them",
    )
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout in seconds")

    @field_validator("roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: object) -> object:
        """``NAME=PATH`` items, as ``cotforge export --root`` takes them."""
        return _named_roots(value)


class EvalOptions(Options):
    """Options of ``cotforge eval`` and ``trainers.evaluate``.

    Greedy decoding by default (temperature 0), as the paper evaluates: trials then differ only
    in the closed-world option order (trial ``t`` shuffles with ``seed + t``), and an open-world
    question is asked once and counted for every trial. With a temperature, each trial samples
    anew.
    """

    model: str = Field(
        ...,
        description="openai:NAME@URL (a server), local:PATH (transformers, in process) or "
        "clip:PATH (CLIP/SigLIP zero-shot on the closed-world options)",
    )
    datasets: list[str] = Field(
        default_factory=lambda: ["all"], description="datasets (comma-separated) or all"
    )
    mode: Literal["closed", "open", "both"] = Field("both", description="closed, open or both")
    source: Literal["paper", "test", "export"] | None = Field(
        None,
        description="questions from Fine-R1's manifests ('paper'), the datasets' test images "
        "('test', as `cotforge export` writes them) or an export's eval config ('export'); "
        "default: export when --export is given, else paper",
    )
    data_root: Path | None = Field(
        None, description="folder holding the datasets in their official layouts"
    )
    manifests: Path | None = Field(
        None, description="folder of Fine-R1's eval manifests (default: the shipped copy)"
    )
    export: Path | None = Field(None, description="an exported dataset folder with an eval config")
    trials: int = Field(3, ge=1, le=100, description="trials averaged (mean and std)")
    seed: int = Field(0, description="seed of the option order of trial 0")
    prompt: Literal["fine-r1", "answer-only"] = Field(
        "fine-r1",
        description="'fine-r1': the paper's reasoning prompt; 'answer-only': ask for the name "
        "alone (for baselines not trained to reason)",
    )
    text_encoder: str = Field(
        "minilm", description="SS_rel text encoder: minilm, or hf:PATH (a CLIP/SigLIP text tower)"
    )
    per_class: int | None = Field(
        None, ge=1, description="at most this many images per class (quick runs)"
    )
    split_mode: Literal["paper", "random"] = Field(
        "paper", description="--source test: the seen/unseen split (as the plan used)"
    )
    unseen_fraction: float = Field(0.4, gt=0.0, lt=1.0, description="random split: unseen share")
    split_seed: int = Field(0, description="random split: its seed")
    max_tokens: int = Field(2048, ge=1, description="longest answer, in tokens")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0: greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling (temperature > 0)")
    concurrency: int = Field(64, ge=1, description="server: requests in flight at once")
    timeout_s: float = Field(300.0, gt=0, description="server: per-request timeout in seconds")
    max_retries: int = Field(6, ge=0, description="server: retries on transient faults")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="environment variable holding the API key (never stored)"
    )
    max_image_side: int = Field(1024, ge=32, description="longer image side sent, in pixels")
    batch_size: int = Field(8, ge=1, description="local and clip models: images per batch")
    out: Path | None = Field(None, description="write <run id>.json and .md results here")
    paper_model: str | None = Field(
        None, description="the paper's row to show beside the results (default: from --model)"
    )

    @field_validator("datasets", mode="before")
    @classmethod
    def _split_datasets(cls, value: object) -> object:
        return _comma_list(value)

    @property
    def rows(self) -> Literal["paper", "test", "export"]:
        """Where the questions come from, the default resolved."""
        if self.source is not None:
            return self.source
        return "export" if self.export is not None else "paper"
