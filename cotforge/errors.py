"""Errors a user can cause, each carrying a message that says what is wrong and what to do.

The CLI catches :class:`CotforgeError` and prints its message on one line with a non-zero exit,
so expected failures never show a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CotforgeError(Exception):
    """Base class of every failure the user can fix; ``str(err)`` is the whole message."""

    exit_code: int = 2


class DatasetNotFoundError(CotforgeError):
    """A dataset folder is missing, half-extracted, or not in the official layout."""


class UnknownDatasetError(CotforgeError):
    """A dataset name that the registry does not know."""


class CorruptImageError(CotforgeError):
    """An image file that Pillow cannot decode (truncated, empty, not an image)."""


class DownloadError(CotforgeError):
    """A download failed, its checksum did not match, or its archive is unsafe to extract."""


class StoreError(CotforgeError):
    """The DuckDB store cannot be opened or written (newer schema, read-only path, locked)."""


class PlanError(CotforgeError):
    """A sampling request the data cannot satisfy (e.g. more shots than a class has images)."""


class ConfigError(CotforgeError):
    """A bad option value, config file, or environment variable."""


class MissingExtraError(CotforgeError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class TeacherUnavailableError(CotforgeError):
    """No teacher answers where one is configured; the message says what to start or set."""


class HubError(CotforgeError):
    """A push to the Hugging Face Hub failed (no or refused token, no write access, no network);
    the message says what to do and never contains the token."""


class ExportError(CotforgeError):
    """Nothing to export, or an output folder the export must not write into."""


class ReviewError(CotforgeError):
    """Human review in Argilla failed: no server or server environment, a refused API key, a
    dataset that does not match, or a server that stopped mid-way; the message says what to do
    and never contains the key."""


class VerifyError(CotforgeError):
    """Verification stopped for a reason outside any one rationale (a worker process died)."""
