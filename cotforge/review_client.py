"""Reaching an Argilla server with the SDK, and turning its failures into messages that say
what to do: an unreachable server, a refused key, a missing or incompatible dataset.

The URL and key come from :class:`~cotforge.config.ReviewOptions`, else Argilla's own
``ARGILLA_API_URL`` / ``ARGILLA_API_KEY``; the key is passed to the SDK and never printed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from cotforge.errors import ReviewError
from cotforge.review_records import review_settings, sdk, settings_signature

if TYPE_CHECKING:
    import argilla as rg

    from cotforge.config import ReviewOptions

SERVE_HINT = "start a local one with `cotforge review serve`"


@dataclass
class Connection:
    """An SDK client that answered ``/me``, and the server it talks to."""

    client: rg.Argilla
    url: str


def dataset_key(options: ReviewOptions) -> str:
    """How the store names an Argilla dataset in ``review_pushes``: ``workspace/name``."""
    return f"{options.workspace}/{options.dataset_name}"


@contextmanager
def server_errors(url: str, doing: str) -> Iterator[None]:
    """Translate the SDK's transport and HTTP failures while ``doing`` into :class:`ReviewError`."""
    rg_errors = sdk()._exceptions
    try:
        yield
    except httpx.TransportError as err:
        msg = (
            f"the Argilla server at {url} stopped answering while {doing} "
            f"({type(err).__name__}); check it is running, or {SERVE_HINT}"
        )
        raise ReviewError(msg) from err
    except httpx.HTTPStatusError as err:
        # a request cotforge sends itself rather than through an SDK method
        raise _status_error(url, doing, err.response.status_code, err) from err
    except (rg_errors.UnauthorizedError, rg_errors.ArgillaCredentialsError) as err:
        raise _status_error(url, doing, 401, err) from err
    except rg_errors.ForbiddenError as err:
        raise _status_error(url, doing, 403, err) from err
    except rg_errors.ArgillaAPIError as err:
        raise _status_error(url, doing, getattr(err, "status_code", "?"), err) from err
    except rg_errors.ArgillaError as err:
        # the SDK wraps some transport failures in its own base class
        if isinstance(err.__cause__, httpx.TransportError | OSError):
            msg = (
                f"the Argilla server at {url} stopped answering while {doing}; check it is "
                f"running, or {SERVE_HINT}"
            )
            raise ReviewError(msg) from err
        raise


def _status_error(url: str, doing: str, status: int | str, err: Exception) -> ReviewError:
    """The message for an HTTP error answer, by status."""
    if status == 401:
        msg = (
            f"the Argilla server at {url} refused the API key (401) while {doing}; set "
            f"ARGILLA_API_KEY (or [review] api_key) to an owner or admin key"
        )
    elif status == 403:
        msg = (
            f"the Argilla user of this API key may not do this ({doing}, 403); use an owner or "
            f"admin key"
        )
    else:
        msg = f"the Argilla server at {url} failed while {doing} (HTTP {status}): {err}"
    return ReviewError(msg)


def connect(options: ReviewOptions) -> Connection:
    """A client for the configured server, checked with one ``/me`` call."""
    rg = sdk()
    url = options.api_url or os.environ.get("ARGILLA_API_URL")
    key = options.api_key or os.environ.get("ARGILLA_API_KEY")
    if not url:
        msg = (
            "no Argilla server is configured: set ARGILLA_API_URL (or [review] api_url), or "
            + SERVE_HINT
        )
        raise ReviewError(msg)
    if not key:
        msg = "no Argilla API key: set ARGILLA_API_KEY (or [review] api_key) to an owner's key"
        raise ReviewError(msg)
    url = url.rstrip("/")
    with server_errors(url, "connecting"):
        try:
            # the constructor checks the URL and key with a GET /api/v1/me
            client = rg.Argilla(api_url=url, api_key=key, timeout=int(options.timeout_s), retries=1)
        except ValueError as err:  # the SDK checks the key's form
            msg = f"the Argilla API key was refused by the SDK ({err}); check ARGILLA_API_KEY"
            raise ReviewError(msg) from err
    return Connection(client, url)


def find_dataset(connection: Connection, options: ReviewOptions) -> rg.Dataset | None:
    """The review dataset, or None when it (or its workspace) does not exist yet."""
    with server_errors(connection.url, "looking for the dataset"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK warns before returning None for "missing"
        workspace = connection.client.workspaces(options.workspace)
        if workspace is None:
            return None
        return connection.client.datasets(name=options.dataset_name, workspace=workspace)


def open_or_create_dataset(
    connection: Connection, options: ReviewOptions
) -> tuple[rg.Dataset, bool]:
    """The review dataset and whether it was just created (with its workspace); an existing
    dataset of that name must have cotforge's settings, or :class:`ReviewError` says how they
    differ."""
    rg = sdk()
    expected = review_settings(min_submitted=options.reviewers_per_record)
    dataset = find_dataset(connection, options)
    where = f"dataset {options.dataset_name!r} in workspace {options.workspace!r}"
    if dataset is not None:
        found = settings_signature(dataset.settings)
        wanted = settings_signature(expected)
        if found != wanted:
            differ = ", ".join(key for key in wanted if found[key] != wanted[key])
            msg = (
                f"{where} exists with other settings ({differ} differ from cotforge's review "
                f"dataset); pass --dataset-name NEW, or delete that dataset in Argilla"
            )
            raise ReviewError(msg)
        return dataset, False
    with server_errors(connection.url, f"creating {where}"):
        workspace = _workspace(connection, options.workspace)
        dataset = rg.Dataset(
            name=options.dataset_name,
            workspace=workspace,
            settings=expected,
            client=connection.client,
        )
        dataset.create()
    return dataset, True


def _workspace(connection: Connection, name: str) -> Any:
    rg = sdk()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = connection.client.workspaces(name)
    return found or rg.Workspace(name=name, client=connection.client).create()


def require_dataset(connection: Connection, options: ReviewOptions) -> rg.Dataset:
    """The review dataset, or :class:`ReviewError` saying to push first."""
    dataset = find_dataset(connection, options)
    if dataset is None:
        msg = (
            f"Argilla at {connection.url} has no dataset {options.dataset_name!r} in workspace "
            f"{options.workspace!r}; run `cotforge review push` first (or fix --dataset-name)"
        )
        raise ReviewError(msg)
    return dataset


def usernames(connection: Connection) -> dict[str, str]:
    """Every user's name by id (string), to name reviewers in the store."""
    with server_errors(connection.url, "listing users"):
        return {str(user.id): user.username for user in connection.client.users}
