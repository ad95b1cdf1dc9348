"""Export the curated records as a Hugging Face dataset folder (configs ``sft``, ``tapo``,
``eval``) or LLaMA-Factory's layout; :func:`run_export` is the entry point."""

from cotforge.errors import ExportError
from cotforge.export.run import ExportSummary, run_export

__all__ = ["ExportError", "ExportSummary", "run_export"]
