"""The dataset card (``README.md``): the YAML header the Hub and ``load_dataset`` read, then how
the data was made and what is in it.

The header lists each config's data files (``configs``), features and split sizes
(``dataset_info``), the license, task category and size category. The body gives the recipe
(teachers, prompt versions, required checks, dedup threshold, review policy), counts per
dataset, split and class, the verification pass rates of the store, and the command that
writes the same folder again. Everything in it comes from the store and the options, with no
time or machine path, so exporting the same store twice writes the same card.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from cotforge.export.features import DESCRIPTIONS, config_features
from cotforge.export.shards import Shard

GENERATOR_LINE = "This folder was written by `cotforge export`."
"""A line every card has: how ``--overwrite`` recognises a folder it may replace."""

_SIZE_CATEGORIES = (
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
)
_LEFT_OUT_SHOWN = 10


@dataclass
class SplitFacts:
    """One written split: its shards."""

    name: str
    shards: list[Shard]

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    @property
    def file_bytes(self) -> int:
        return sum(shard.file_bytes for shard in self.shards)

    @property
    def arrow_bytes(self) -> int:
        return sum(shard.arrow_bytes for shard in self.shards)


@dataclass
class ConfigFacts:
    """One written config: its splits, rows per (dataset, seen/unseen, class), and the
    selected records that could not become rows, with why."""

    name: str
    splits: list[SplitFacts]
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    left_out: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(split.rows for split in self.splits)


@dataclass(frozen=True)
class Recipe:
    """How the records were made and chosen, as the store and the options say."""

    prompts: list[tuple[str, str, str, int]]
    """(purpose, teacher, prompt hash, answered requests) behind the records."""
    system_prompt: str
    """Digest of the student's system prompt template."""
    required_checks: list[str]
    pass_rates: list[tuple[str, int, int, int]]
    """(check, rationales checked, passed, verdicts that counted it required)."""
    dedup: dict[str, Any] | None
    """Options of the last dedup run, or None when dedup never ran."""
    review: str
    eval_source: str
    seed: int
    license: str
    command: str
    version: str


_REVIEW_WORDS = {
    "ignore": "reviews were not consulted",
    "respect": "a rejecting review drops a record; an edited text replaces the rationale",
    "require": "only records a reviewer accepted (as is or edited) are included",
}


def size_category(rows: int) -> str:
    """The Hub's size category for ``rows`` examples.

    >>> size_category(404), size_category(20_000)
    ('n<1K', '10K<n<100K')
    """
    for bound, name in _SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>10M"


def header(configs: Sequence[ConfigFacts], recipe: Recipe, *, parquet: bool) -> dict[str, Any]:
    """The card's YAML metadata."""
    meta: dict[str, Any] = {
        "license": recipe.license,
        "language": ["en"],
        "task_categories": ["image-text-to-text"],
        "tags": ["fine-grained-visual-recognition", "chain-of-thought", "fine-r1", "cotforge"],
        "size_categories": [size_category(sum(config.rows for config in configs))],
        "pretty_name": "Fine-grained visual recognition chain-of-thought data",
    }
    if not parquet:
        return meta
    meta["configs"] = [
        {
            "config_name": config.name,
            "data_files": [
                {"split": split.name, "path": f"data/{config.name}/{split.name}-*"}
                for split in config.splits
            ],
            **({"default": True} if position == 0 else {}),
        }
        for position, config in enumerate(configs)
    ]
    meta["dataset_info"] = [
        {
            "config_name": config.name,
            "features": config_features(config.name)._to_yaml_list(),
            "splits": [
                {"name": split.name, "num_bytes": split.arrow_bytes, "num_examples": split.rows}
                for split in config.splits
            ],
            "download_size": sum(split.file_bytes for split in config.splits),
            "dataset_size": sum(split.arrow_bytes for split in config.splits),
        }
        for config in configs
    ]
    return meta


def render_card(configs: Sequence[ConfigFacts], recipe: Recipe, *, parquet: bool = True) -> str:
    """The whole ``README.md``: YAML header, then the recipe and the counts in Markdown.

    ``parquet`` false writes the card of a LLaMA-Factory folder (no parquet configs).
    """
    meta = yaml.safe_dump(
        header(configs, recipe, parquet=parquet),
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1000,
    )
    lines = [
        "---",
        meta.rstrip("\n"),
        "---",
        "",
        "# Fine-grained visual recognition chain-of-thought data",
        "",
        "Verified chain-of-thought records for fine-grained visual recognition in the shape of "
        "the Fine-R1 recipe (arXiv 2602.07605): label-conditioned four-stage rationales for "
        "supervised fine-tuning, triplets for TAPO, and a seen/unseen evaluation set. "
        + GENERATOR_LINE,
        "",
        *_configs_section(configs, parquet=parquet),
        *_recipe_section(recipe),
        *_counts_section(configs),
        *_rates_section(recipe),
        *_left_out_section(configs),
        "## Reproduce",
        "",
        f"With cotforge {recipe.version} and the same store (and dataset folders):",
        "",
        "```bash",
        recipe.command,
        "```",
        "",
        "Images belong to their source datasets and stay under those datasets' terms of use.",
        "",
    ]
    return "\n".join(lines)


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows),
        "",
    ]


def _configs_section(configs: Sequence[ConfigFacts], *, parquet: bool) -> list[str]:
    lines = ["## Configs", ""]
    rows = [
        (config.name, split.name, split.rows, len(split.shards), f"{split.file_bytes:,}")
        for config in configs
        for split in config.splits
    ]
    lines += _table(("config", "split", "rows", "files", "bytes"), rows)
    if parquet:
        lines += [
            "```python",
            "from datasets import load_dataset",
            "",
            *(
                f'{config.name}_rows = load_dataset("ORG/NAME or this folder", "{config.name}")'
                for config in configs
            ),
            "```",
            "",
        ]
    else:
        lines += [
            "LLaMA-Factory layout: `dataset_info.json` names the sharegpt file; images are "
            "files under `images/`, referenced by relative path.",
            "",
        ]
    for config in configs:
        lines += [f"### Columns of `{config.name}`", ""]
        lines += _table(("column", "meaning"), list(DESCRIPTIONS[config.name].items()))
    return lines


def _recipe_section(recipe: Recipe) -> list[str]:
    teachers = sorted({model for purpose, model, _, _ in recipe.prompts if purpose == "rationale"})
    dedup = recipe.dedup
    if dedup is None:
        dedup_text = "not run"
    else:
        dedup_text = (
            f"MinHash near-duplicates at Jaccard threshold {dedup.get('threshold')} "
            f"({dedup.get('shingle_size')}-word shingles, {dedup.get('num_perm')} permutations, "
            f"{'within each class' if dedup.get('same_class') else 'across classes'})"
        )
        if dedup.get("embeddings"):
            dedup_text += f", plus embedding cosine >= {dedup.get('embedding_threshold')}"
        dedup_text += "; flagged duplicates are left out"
    lines = [
        "## Recipe",
        "",
        f"- Teacher model(s): {', '.join(f'`{t}`' for t in teachers) or 'none (imported data)'}",
        f"- Required verification checks: {', '.join(recipe.required_checks) or 'none'}",
        f"- Deduplication: {dedup_text}",
        f"- Review policy: `{recipe.review}` ({_REVIEW_WORDS[recipe.review]})",
        f"- Student system prompt: template digest `{recipe.system_prompt}`",
        f"- Evaluation options: seeded order (seed {recipe.seed}), rows from "
        + ("Fine-R1's manifests" if recipe.eval_source == "paper" else "the test images"),
        "",
        "Teacher prompts (each template is versioned by the digest of its file):",
        "",
    ]
    lines += _table(
        ("purpose", "teacher", "prompt digest", "answered requests"),
        [(p, f"`{m}`", f"`{h}`", n) for p, m, h, n in recipe.prompts],
    )
    return lines


def _counts_section(configs: Sequence[ConfigFacts]) -> list[str]:
    lines = ["## Counts", ""]
    for config in configs:
        by_group: Counter[tuple[str, str]] = Counter()
        classes: dict[tuple[str, str], set[str]] = {}
        for (dataset, group, name), count in config.counts.items():
            by_group[(dataset, group)] += count
            classes.setdefault((dataset, group), set()).add(name)
        lines += [f"### `{config.name}`", ""]
        lines += _table(
            ("dataset", "classes", "split", "rows"),
            [
                (dataset, len(classes[(dataset, group)]), group, count)
                for (dataset, group), count in sorted(by_group.items())
            ],
        )
        lines += ["<details><summary>rows per class</summary>", ""]
        lines += _table(
            ("dataset", "split", "class", "rows"),
            [(d, g, n, count) for (d, g, n), count in sorted(config.counts.items())],
        )
        lines += ["</details>", ""]
    return lines


def _rates_section(recipe: Recipe) -> list[str]:
    lines = ["## Verification pass rates", "", "Over every verified rationale in the store:", ""]
    lines += _table(
        ("check", "required", "passed", "checked", "pass rate"),
        [
            (name, "yes" if required else "no", passed, checked, f"{passed / checked:.1%}")
            for name, checked, passed, required in recipe.pass_rates
        ],
    )
    return lines


def _left_out_section(configs: Sequence[ConfigFacts]) -> list[str]:
    lines: list[str] = []
    for config in configs:
        if not config.left_out:
            continue
        lines += [
            f"## Left out of `{config.name}`",
            "",
            f"{len(config.left_out)} selected record(s) could not be rendered as training "
            "targets and are not in the data:",
            "",
        ]
        lines += [f"- `{rid}`: {reason}" for rid, reason in config.left_out[:_LEFT_OUT_SHOWN]]
        if len(config.left_out) > _LEFT_OUT_SHOWN:
            lines.append(f"- and {len(config.left_out) - _LEFT_OUT_SHOWN} more")
        lines.append("")
    return lines
