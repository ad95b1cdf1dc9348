"""``cotforge eval``: score a model on the seen and unseen classes, closed and open world.

:func:`run_eval` is the entry point (``trainers.evaluate`` re-exports it). The pieces, each a
small module: :mod:`.items` (what is asked: rows from the datasets, the paper's manifests or an
``eval`` export), :mod:`.prompts` (Fine-R1's prompts and an answer-only one), :mod:`.backends`
(which model answers), :mod:`.metrics` and :mod:`.similarity` (how answers are scored),
:mod:`.run` (the resumable loop writing every prediction to the store) and :mod:`.results`
(tables, JSON and markdown, beside the paper's numbers from :mod:`.paper`).
"""

from cotforge.eval.results import EvalResults
from cotforge.eval.run import run_eval

__all__ = ["EvalResults", "run_eval"]
