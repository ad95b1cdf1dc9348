"""The teacher prompts: Jinja2 templates in ``prompts/``, one file per prompt, versioned by content.

A prompt's digest (of its template file) goes into every request id built from it, and so does
the rendered text: editing a template, or pointing ``--prompts`` at another folder, never reuses
an answer to the old wording. Templates render with ``StrictUndefined``, so a variable the
caller forgot is an error rather than an empty gap in what the teacher reads.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from cotforge.errors import ConfigError

PROMPT_NAMES = ("system", "questions", "concepts", "rationale", "judge")
"""Every prompt generation and the judge use; a prompts folder must hold all of them."""


def prompts_dir() -> Path:
    """Where ``prompts/`` is: ``$COTFORGE_PROMPTS``, the source tree, or the install."""
    override = os.environ.get("COTFORGE_PROMPTS")
    if override:
        return Path(override)
    source_tree = Path(__file__).resolve().parents[1] / "prompts"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "cotforge" / "prompts"


def indefinite(noun: str) -> str:
    """``noun`` with "a" or "an" (by its first letter, which is right for the super-categories).

    >>> indefinite("aircraft"), indefinite("bird")
    ('an aircraft', 'a bird')
    """
    article = "an" if noun[:1].lower() in "aeiou" else "a"
    return f"{article} {noun}"


@dataclass(frozen=True)
class Prompt:
    """One template: its name, file, and the digest that versions it."""

    name: str
    path: Path
    digest: str
    template: jinja2.Template = field(repr=False, compare=False)

    def render(self, **variables: Any) -> str:
        """The prompt text, stripped of surrounding whitespace.

        Raises ConfigError naming the template when it uses a variable not given, which
        happens when a user's own template asks for something cotforge does not provide.
        """
        try:
            return self.template.render(**variables).strip()
        except jinja2.UndefinedError as err:
            msg = (
                f"prompt template {self.path} uses {err.message}; the variables given to "
                f"{self.name!r} are {', '.join(sorted(variables))}"
            )
            raise ConfigError(msg) from None


@lru_cache(maxsize=32)
def load_prompt(name: str, directory: Path | None = None) -> Prompt:
    """The template ``<directory>/<name>.j2`` (default :func:`prompts_dir`), parsed once."""
    if name not in PROMPT_NAMES:
        msg = f"unknown prompt {name!r}; prompts are {', '.join(PROMPT_NAMES)}"
        raise ValueError(msg)
    folder = directory or prompts_dir()
    path = folder / f"{name}.j2"
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = (
            f"prompt template {path} does not exist; a prompts folder needs "
            f"{', '.join(n + '.j2' for n in PROMPT_NAMES)} (copy cotforge's prompts/ to start)"
        )
        raise ConfigError(msg) from None
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
    )
    environment.filters["an"] = indefinite
    try:
        template = environment.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        msg = f"prompt template {path} line {err.lineno}: {err.message}"
        raise ConfigError(msg) from None
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return Prompt(name=name, path=path, digest=digest, template=template)
