"""How several reviewers' decisions on one rationale become one, and how much they agree.

Every reviewer's decision is kept in the store (disagreements are data); the curation policy
only decides which single decision an export acts on. Decisions are the store's: ``accept``,
``edit`` and ``reject``, in increasing strictness.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

STRICTNESS = {"accept": 0, "edit": 1, "reject": 2}
POLICIES = ("majority", "any_reject")


def curate(decisions: Sequence[str], *, policy: str) -> str:
    """One decision from reviewers' ``decisions`` (at least one).

    ``majority``: the most common decision; a tie goes to the stricter one, since a record two
    people disagree on should not train a model unexamined. ``any_reject``: one rejection
    rejects, else one edit edits, else accept.

    >>> curate(["accept", "reject", "accept"], policy="majority")
    'accept'
    >>> curate(["accept", "reject"], policy="majority")
    'reject'
    >>> curate(["accept", "edit", "accept"], policy="any_reject")
    'edit'
    """
    if not decisions:
        msg = "curate needs at least one decision"
        raise ValueError(msg)
    unknown = set(decisions) - set(STRICTNESS)
    if unknown:
        msg = f"decisions must be {', '.join(STRICTNESS)}; got {', '.join(sorted(unknown))}"
        raise ValueError(msg)
    if policy == "any_reject":
        return max(decisions, key=STRICTNESS.__getitem__)
    if policy == "majority":
        counts = Counter(decisions)
        return max(counts, key=lambda d: (counts[d], STRICTNESS[d]))
    msg = f"policy must be one of {', '.join(POLICIES)}; got {policy!r}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Agreement:
    """Agreement over the records that two or more reviewers decided."""

    records: int
    """Records with at least two decisions."""
    unanimous: int
    """Of those, records where every reviewer decided alike."""
    observed: float | None
    """Share of agreeing reviewer pairs, averaged over records (None without records)."""
    kappa: float | None
    """Fleiss' kappa: ``observed`` corrected for chance agreement given how often each
    decision is made overall (None when undefined: no records, or one decision only)."""


def agreement(decisions_per_record: Sequence[Sequence[str]]) -> Agreement:
    """Agreement between reviewers, Fleiss-style, which allows a different number of reviewers
    per record.

    >>> a = agreement([["accept", "accept"], ["accept", "reject"], ["reject", "reject"], ["edit"]])
    >>> a.records, a.unanimous, round(a.observed, 3), round(a.kappa, 3)
    (3, 2, 0.667, 0.333)
    """
    rated = [list(d) for d in decisions_per_record if len(d) >= 2]
    if not rated:
        return Agreement(0, 0, None, None)
    shares = []
    totals: Counter[str] = Counter()
    for decisions in rated:
        counts = Counter(decisions)
        n = len(decisions)
        shares.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
        totals.update(counts)
    observed = sum(shares) / len(shares)
    made = sum(totals.values())
    chance = sum((count / made) ** 2 for count in totals.values())
    kappa = (observed - chance) / (1 - chance) if chance < 1 else None
    unanimous = sum(1 for d in rated if len(set(d)) == 1)
    return Agreement(len(rated), unanimous, observed, kappa)
