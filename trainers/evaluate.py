"""Evaluate a trained model from training code: ``trainers.evaluate.evaluate``.

A thin door to :func:`cotforge.eval.run_eval` (the same run ``cotforge eval`` makes, recorded
in the same store), so a training script can score its checkpoint after each stage without
shelling out::

    from trainers.evaluate import evaluate

    results = evaluate("local:out/sft", store="cotforge.duckdb", datasets=["cub"],
                       mode="open", data_root="/data/fgvr")
    print(results.score("open", "ss_rel").mean)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cotforge.config import EvalOptions
from cotforge.errors import ConfigError
from cotforge.eval import EvalResults, run_eval
from cotforge.store import Store

__all__ = ["EvalOptions", "EvalResults", "evaluate", "run_eval"]


def evaluate(
    model: str,
    *,
    store: str | Path = "cotforge.duckdb",
    default_root: str | Path | None = None,
    **options: Any,
) -> EvalResults:
    """Evaluate ``model`` (``openai:NAME@URL``, ``local:PATH`` or ``clip:PATH``) with
    :class:`~cotforge.config.EvalOptions` given as keywords, recording it in ``store``.

    Raises :class:`~cotforge.errors.ConfigError` for an unknown or bad option, before any
    work starts.
    """
    try:
        settings = EvalOptions.model_validate({"model": model, **options})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in err.errors()
        )
        msg = f"evaluate(): {problems}; see cotforge.config.EvalOptions for the options"
        raise ConfigError(msg) from None
    with Store.open(store) as db:
        return run_eval(
            db, settings, default_root=Path(default_root) if default_root is not None else None
        )
