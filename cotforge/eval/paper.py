"""Fine-R1's published numbers, to print beside an evaluation of the same model.

Copied from the headline table of Fine-R1 (ICLR 2026, arXiv 2602.07605) as summarised in the
project's reference notes on the paper (the six-dataset average, seen / unseen, in percent).
Closed world: accuracy by text inclusion on the released manifests, options in their
truth-first order, averaged over 3 trials. Open world: SS_rel with SigLIP base's text tower
(``hf:google/siglip-base-patch16-256``), with the released script's super-category words.
Only averages are published here; per-dataset numbers are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAPER = "Fine-R1 (ICLR 2026, arXiv 2602.07605), six-dataset average"


@dataclass(frozen=True)
class PaperRow:
    """One model's published averages: (seen, unseen) in percent; None where not reported."""

    model: str
    closed: tuple[float, float]
    open_ss_rel: tuple[float, float] | None = None


PAPER_RESULTS: dict[str, PaperRow] = {
    row.model: row
    for row in (
        PaperRow("CLIP ViT-L", (77.10, 67.98)),
        PaperRow("SigLIP-L", (88.33, 80.54)),
        PaperRow("Qwen2.5-VL-7B", (83.98, 76.42), (56.50, 45.60)),
        PaperRow("Fine-R1-3B", (88.97, 81.41), (73.35, 61.29)),
        PaperRow("Fine-R1-7B", (91.71, 85.70), (82.62, 66.97)),
    )
}

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"fine[-_ ]?r1[-_ ]?3b", re.IGNORECASE), "Fine-R1-3B"),
    (re.compile(r"fine[-_ ]?r1[-_ ]?7b", re.IGNORECASE), "Fine-R1-7B"),
    (re.compile(r"qwen2\.?5[-_ ]?vl[-_ ]?7b", re.IGNORECASE), "Qwen2.5-VL-7B"),
    (re.compile(r"siglip2?[-_].*\b(l|large)\b", re.IGNORECASE), "SigLIP-L"),
    (re.compile(r"clip[-_ ]?vit[-_ ]?(l|large)\b", re.IGNORECASE), "CLIP ViT-L"),
)
"""How a model name or path is recognised; the first match wins."""


def paper_row(model: str, *, override: str | None = None) -> PaperRow | None:
    """The published row for ``model`` (a ``--model`` name or path), or for ``override``
    (a key of :data:`PAPER_RESULTS`); None when the paper did not evaluate it.

    >>> paper_row("openai:StevenHH2000/Fine-R1-7B").model
    'Fine-R1-7B'
    >>> paper_row("clip:openai/clip-vit-large-patch14").model
    'CLIP ViT-L'
    >>> paper_row("clip:google/siglip-large-patch16-384").model
    'SigLIP-L'
    >>> paper_row("local:/ckpt/my-run") is None
    True
    """
    if override is not None:
        found = {name.lower(): row for name, row in PAPER_RESULTS.items()}.get(override.lower())
        if found is None:
            from cotforge.errors import ConfigError

            msg = (
                f"--paper-model {override!r} is not in the paper; choose {', '.join(PAPER_RESULTS)}"
            )
            raise ConfigError(msg)
        return found
    for pattern, name in _PATTERNS:
        if pattern.search(model):
            return PAPER_RESULTS[name]
    return None
