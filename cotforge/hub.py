"""Push a finished export folder to a dataset repo on the Hugging Face Hub, in one commit.

The folder is what ``cotforge export`` writes: ``README.md`` (the card, whose YAML header names
the configs) and ``data/<config>/<split>-NNNNN-of-NNNNN.parquet``. Pushing it must leave the
repo either at its previous commit or at the new export, never in between, so every file goes
into one ``create_commit`` (not ``upload_folder``, which splits large folders into several
commits when ``hf_xet`` is installed) whose parent is the commit the push started from; shards
of an earlier export that the new one no longer has are deleted in that same commit, otherwise
the card's ``data/sft/train-*`` pattern would load them too.

A push that fails half way is resumed by running it again: ``huggingface_hub`` asks the Hub which
LFS objects it already holds (preupload and the LFS batch API, or Xet's chunk dedup) and sends
only the rest, and a file that did not change is left out of the commit.

``HF_TOKEN`` (or the token ``hf auth login`` saved) and ``HF_ENDPOINT`` are honoured; both are
read when :func:`push_folder` runs, so setting them after ``huggingface_hub`` was imported works.
The token is sent to the endpoint and nowhere else: it is never printed, logged, written, or put
in an error message, even when the server's own error message repeats it. ``huggingface_hub`` is
imported on first use, so ``cotforge`` commands that never push do not pay for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotforge.errors import ConfigError, HubError

if TYPE_CHECKING:
    from rich.console import Console

PROBE_TIMEOUT_S = 10.0
"""How long the first request (``whoami``) may take before the endpoint counts as not answering;
``huggingface_hub`` itself waits forever."""

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9]{8,}")
_MESSAGE_LIMIT = 200


def push_folder(
    folder: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str,
    console: Console | None = None,
) -> str:
    """Upload an export folder to the dataset repo ``repo_id`` in one commit; return its URL.

    The repo is created if it does not exist (``private`` applies then; a push with
    ``private=True`` into an existing public repo is refused rather than publishing the data).
    ``token`` defaults to ``HF_TOKEN`` or the saved login. Every failure the user can fix
    (no token, a refused token, no write access, no network, an endpoint that does not answer)
    raises :class:`~cotforge.errors.HubError` with a one-line message; running the same push
    again after a failure sends only the files the Hub does not have yet.
    """
    folder = Path(folder)
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        msg = f"--push-to-hub wants ORG/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}"
        raise ConfigError(msg)
    if not commit_message.strip():
        msg = "commit_message must not be empty"
        raise ValueError(msg)
    files = _export_files(folder)

    import huggingface_hub as hub  # lazily: a second or more to import, needed only to push

    endpoint = (os.environ.get("HF_ENDPOINT") or hub.constants.ENDPOINT).rstrip("/")
    if hub.is_offline_mode():
        msg = "HF_HUB_OFFLINE is set, which forbids any request to the Hub: unset it to push"
        raise HubError(msg)
    token = token or hub.get_token()
    if not token:
        msg = (
            f"no Hugging Face token to push {repo_id} with: set HF_TOKEN to a token with write"
            f" access (or run `hf auth login`)"
        )
        raise HubError(msg)

    size = sum(path.stat().st_size for path in files.values())
    with _hub_errors(endpoint, repo_id, token):
        api = hub.HfApi(
            endpoint=endpoint, token=token, library_name="cotforge", library_version=_version()
        )
        _probe(hub, endpoint, token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.dataset_info(repo_id)
        if private and not info.private:
            msg = (
                f"{repo_id} already exists and is public, so --private would not keep this"
                f" export private: make the repo private on the Hub or push to a new repo"
            )
            raise HubError(msg)
        stale = sorted(
            sibling.rfilename
            for sibling in info.siblings or []
            if sibling.rfilename.startswith("data/") and sibling.rfilename not in files
        )
        operations: list[Any] = [
            hub.CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
            for name, path in files.items()
        ]
        operations += [hub.CommitOperationDelete(path_in_repo=name) for name in stale]
        if console is not None:
            gone = f", removing {len(stale)} old file(s)" if stale else ""
            console.print(
                f"pushing {len(files)} files ({size / 1e6:.1f} MB) to"
                f" {endpoint}/datasets/{repo_id}{gone}",
                highlight=False,
            )
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            repo_type="dataset",
            parent_commit=info.sha,
        )
    return str(commit.commit_url)


def _export_files(folder: Path) -> dict[str, Path]:
    """The files to push by their path in the repo, sorted; hidden files and folders (``.git``,
    ``.cache``) stay behind. Refuses a folder that is not an export."""
    if not folder.is_dir():
        msg = f"{folder} is not a folder: run `cotforge export --out {folder}` first"
        raise HubError(msg)
    files = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts)
    }
    if "README.md" not in files or not any(name.startswith("data/") for name in files):
        msg = (
            f"{folder} is not an export folder (it needs README.md and data/): run"
            f" `cotforge export --out {folder}` to write one"
        )
        raise HubError(msg)
    return files


def _probe(hub: Any, endpoint: str, token: str) -> None:
    """Ask who the token belongs to, with a timeout: a wrong token, a dead network or an endpoint
    that does not answer then fails in seconds, before any file is hashed or sent."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    response = get_session().get(
        f"{endpoint}/api/whoami-v2",
        headers=build_hf_headers(token=token, library_name="cotforge"),
        timeout=PROBE_TIMEOUT_S,
    )
    if response.status_code == 404:
        return  # an endpoint without whoami (a mirror or proxy): the push itself will tell
    hf_raise_for_status(response)
    role = ((response.json().get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        msg = "the token is read-only: set HF_TOKEN to a token with write access"
        raise HubError(msg)


@contextmanager
def _hub_errors(endpoint: str, repo_id: str, token: str) -> Iterator[None]:
    """Turn what ``huggingface_hub`` and its HTTP library raise into one-line HubErrors.

    The original is dropped (``from None``), not chained: its text can quote the server's reply,
    which may repeat the token.
    """
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        message = _explain(err, endpoint, repo_id)
        if message is None:
            raise
        raise HubError(" ".join(_redact(message, token).split())) from None


def _explain(err: BaseException, endpoint: str, repo_id: str) -> str | None:
    """What went wrong and what to do, or None for an error that is a bug, not the user's."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    again = "run the same push again: files the Hub already has are not sent again"
    uploading = _uploading(err)
    causes = _causes(err)
    http = next((e for e in causes if isinstance(e, HfHubHTTPError)), None)
    if http is not None and http.response is not None:
        status = http.response.status_code
        said = _server_said(http)
        where = f" while uploading {uploading}" if uploading else ""
        if status == 401:
            return (
                f"the Hub at {endpoint} refused the token (HTTP 401): set HF_TOKEN to a valid"
                f" token with write access to {repo_id.split('/')[0]}"
            )
        if status == 403:
            return (
                f"the token may not write to {repo_id} (HTTP 403{said}): push to a namespace"
                f" you own, or use a token with write access to it"
            )
        if status == 404:
            return (
                f"{repo_id} was not found on {endpoint} (HTTP 404{said}): check the repo id"
                f" and that the token can see it"
            )
        if status == 412:
            return f"{repo_id} changed on the Hub during the push (HTTP 412): {again}"
        if status == 429:
            return f"the Hub at {endpoint} rate-limited the push (HTTP 429): wait, then {again}"
        if status >= 500:
            return f"the Hub at {endpoint} failed{where} (HTTP {status}{said}): {again}"
        return f"the Hub at {endpoint} refused the push{where} (HTTP {status}{said}): {again}"
    if any(isinstance(e, OfflineModeIsEnabled) for e in causes):
        return "HF_HUB_OFFLINE is set, which forbids any request to the Hub: unset it to push"
    transport = next((e for e in causes if _is_transport_error(e)), None)
    if transport is not None:
        kind = type(transport).__name__
        if "Connect" in kind:
            return (
                f"cannot reach the Hub at {endpoint} ({kind}): check the network connection"
                f" and HF_ENDPOINT"
            )
        if "Timeout" in kind:
            return (
                f"the Hub at {endpoint} did not answer in time ({kind}): check the network"
                f" and HF_ENDPOINT, then {again}"
            )
        return f"the connection to the Hub at {endpoint} broke ({kind}): {again}"
    # hf_xet (the default transfer when installed) raises the builtin errors, from Rust.
    broken = next((e for e in causes if isinstance(e, ConnectionError | TimeoutError)), None)
    if broken is not None:
        said = " ".join(str(broken).split())[:_MESSAGE_LIMIT] or type(broken).__name__
        return (
            f"the transfer to the Hub at {endpoint} failed ({said}): check the network and"
            f" HF_ENDPOINT, then {again}"
        )
    text = str(err)
    if isinstance(err, ValueError) and text.startswith("Invalid metadata in README.md"):
        return f"the Hub refused the card's YAML header: {text}: fix README.md and push again"
    return None


def _causes(err: BaseException) -> list[BaseException]:
    """The error and what caused it: ``huggingface_hub`` wraps an upload's HTTP error in a
    RuntimeError naming the file."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _uploading(err: BaseException) -> str | None:
    """The file whose upload failed, from ``huggingface_hub``'s "Error while uploading 'x'"."""
    for cause in _causes(err):
        match = re.search(r"Error while uploading '([^']+)'", str(cause))
        if match:
            return match.group(1)
    return None


def _server_said(err: Any) -> str:
    said = (getattr(err, "server_message", None) or "").strip()
    if not said:
        return ""
    said = " ".join(said.split())
    return f": {said[:_MESSAGE_LIMIT]}{'...' if len(said) > _MESSAGE_LIMIT else ''}"


def _is_transport_error(err: BaseException) -> bool:
    """A connection, timeout or protocol failure of the HTTP library ``huggingface_hub`` uses:
    ``httpx2`` since 2.0, ``httpx`` before; both name their base class TransportError."""
    return any(
        cls.__name__ == "TransportError" and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(err).__mro__
    )


def _redact(text: str, token: str) -> str:
    """The text without the token, nor anything else shaped like a Hub token."""
    return _TOKEN_LIKE.sub("hf_***", text.replace(token, "***"))


def _version() -> str:
    try:
        return version("cotforge")
    except PackageNotFoundError:
        return "0+unknown"
