"""A local stand-in for the Hugging Face Hub's HTTP API: push datasets to it and load them back.

``cotforge export --push-to-hub`` and ``datasets.load_dataset("org/name")`` talk to the Hub, which
tests cannot reach. This server speaks the part of the Hub protocol those two use, as
``huggingface_hub`` 2.x and ``datasets`` 5.x send it (read off their source and their requests,
not guessed): repo creation, README validation, preupload, the git-LFS batch API with a signed
upload URL that checks each object's sha256, the NDJSON commit, repo info, the tree listing,
``paths-info`` and ``resolve`` (HEAD and GET, with ranges, and the ``ETag``, ``X-Repo-Commit``,
``X-Linked-Etag`` and ``X-Linked-Size`` headers the client caches by). Xet storage is not spoken:
clients must run with ``HF_HUB_DISABLE_XET=1``.

Commits are atomic, as on the Hub: a commit that names an LFS object the server does not hold
(never uploaded, or refused because its bytes did not hash to its oid) is rejected whole and the
branch stays where it was; a commit with a ``parentCommit`` other than the head is refused.
Uploaded LFS objects are kept whether or not a commit uses them, so a push that failed half way
and is run again sends only what is missing. Writes need ``Authorization: Bearer <token>`` with
the configured token, and only into the namespaces that token owns; an invalid token gets a 401
whose message repeats it (as some proxies do), so tests can check a client never passes it on.
Faults are injected on demand (:meth:`HubServer.fail_upload`), and every request is recorded.

In a test, run it in a background thread and point the client's ``HF_ENDPOINT`` at it::

    with HubServer(token="hf_test") as hub:
        ...  # HF_ENDPOINT=hub.url HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_test python push.py
        assert hub.head("org/name", repo_type="dataset").title == "export"

Or on its own, for trying the client by hand::

    python -m cotforge.testing.hub_server --port 8080 --token hf_test
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

import yaml
from aiohttp import web

from cotforge.testing._threaded import ThreadedServer

REPO_TYPES = ("model", "dataset", "space")
_URL_PREFIX = {"dataset": "datasets/", "space": "spaces/", "model": ""}
_API_SEGMENT = {"datasets": "dataset", "spaces": "space", "models": "model"}

# The .gitattributes the Hub writes into every new repo (abridged): it is what makes *.parquet,
# images and archives LFS files, so the preupload answer below reads it from the repo.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.arrow", "*.bin", "*.bz2", "*.gz", "*.h5", "*.jpeg", "*.jpg", "*.npy", "*.npz",
        "*.onnx", "*.parquet", "*.pkl", "*.png", "*.pt", "*.safetensors", "*.tar", "*.tfrecord",
        "*.wav", "*.webp", "*.zip", "*.zst",
    )
)  # fmt: skip
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores any file of 10 MB or more in LFS
_LFS_BATCH = ["info", "lfs", "objects", "batch"]
_OID = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def git_blob_id(content: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a regular file's ``oid``/ETag.

    >>> git_blob_id(b"")
    'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'
    """
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-LFS pointer file that stands in git for an LFS object."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file of a commit. ``sha256`` is the LFS oid (None for a file kept in git), whose bytes
    are in the repo's object store; ``content`` holds a git file's bytes. ``blob_id`` is the git
    object id: of the content, or of the LFS pointer."""

    path: str
    size: int
    blob_id: str
    sha256: str | None = None
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit: its files are the whole tree at that point (paths to files)."""

    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: Mapping[str, StoredFile]


@dataclass
class Repo:
    """A repo: one branch, ``main``, whose history is ``commits`` (oldest first); ``objects``
    are the LFS objects uploaded to it, by sha256, committed or not."""

    repo_id: str
    repo_type: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    objects: dict[str, bytes] = field(default_factory=dict)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def commit(self, revision: str) -> Commit | None:
        """The commit a revision names: ``main`` (the head) or a commit id (40 hex digits)."""
        if revision == "main":
            return self.head
        return next((c for c in reversed(self.commits) if c.oid == revision), None)


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the server saw it and what it answered; ``authorization`` is the header as
    sent (None without one), ``body_size`` the bytes of its body."""

    method: str
    path: str
    query: str
    authorization: str | None
    status: int
    body_size: int
    arrived_s: float


class Refusal(Exception):
    """An error answer: the status, the Hub's ``X-Error-Code`` (if any) and a message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass
class _Fault:
    oid: str
    times: int
    status: int


class HubServer(ThreadedServer):
    """The Hub stand-in; see the module docstring.

    ``token`` is the one valid write token, owned by ``user``, who may write into the namespaces
    ``user`` and ``orgs``; ``token=None`` makes every write refused. Anyone may read public repos.
    """

    thread_name = "hub-server"

    def __init__(
        self,
        *,
        token: str | None = "hf_test_token",
        user: str = "tester",
        orgs: tuple[str, ...] = ("org",),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if token is not None and not token.strip():
            msg = "token must be a non-empty string or None"
            raise ValueError(msg)
        self.token = token
        self.user = user
        self.orgs = orgs
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._received: list[ReceivedRequest] = []
        self._faults: list[_Fault] = []
        self._signing_key = secrets.token_bytes(32)
        self._runner: web.AppRunner | None = None

    # -- state and inspection (any thread) ---------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The endpoint clients use as ``HF_ENDPOINT``."""
        return f"http://{self.host}:{self._port}"

    @property
    def received(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._received)

    def repo(self, repo_id: str, *, repo_type: str = "dataset") -> Repo | None:
        """The repo, or None if it was never created."""
        with self._lock:
            return self._repos.get((repo_type, repo_id))

    def head(self, repo_id: str, *, repo_type: str = "dataset") -> Commit:
        """The head commit of a repo that exists."""
        repo = self.repo(repo_id, repo_type=repo_type)
        if repo is None:
            msg = f"no {repo_type} repo {repo_id!r} on this server"
            raise KeyError(msg)
        with self._lock:
            return repo.head

    def read(self, repo_id: str, path: str, *, repo_type: str = "dataset") -> bytes:
        """The bytes of a file at the head of a repo."""
        repo = self.repo(repo_id, repo_type=repo_type)
        if repo is None:
            msg = f"no {repo_type} repo {repo_id!r} on this server"
            raise KeyError(msg)
        with self._lock:
            return self._bytes(repo, repo.head.files[path])

    def create(self, repo_id: str, *, repo_type: str = "dataset", private: bool = False) -> Repo:
        """Create a repo directly (e.g. one owned by someone else), as the Hub does: with one
        commit holding the default ``.gitattributes``."""
        with self._lock:
            return self._create(repo_id, repo_type, private)

    def fail_upload(self, oid: str, *, times: int = 1, status: int = 400) -> None:
        """Make the next ``times`` uploads of the LFS object ``oid`` (its sha256) fail with
        ``status``, before the object is stored. A 5xx is retried by clients; a 4xx is not."""
        if not _OID.fullmatch(oid):
            msg = f"oid must be a sha256 in 64 lowercase hex digits, got {oid!r}"
            raise ValueError(msg)
        if times < 1 or not 400 <= status <= 599:
            msg = f"times must be 1 or more and status an HTTP error, got {times} and {status}"
            raise ValueError(msg)
        with self._lock:
            self._faults.append(_Fault(oid, times, status))

    # -- running ----------------------------------------------------------------------------------

    async def start_async(self) -> None:
        """Listen on ``host:port`` (a free port when 0) in the running loop."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        app = web.Application(client_max_size=1024**3, middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing ---------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            response = await handler(request)
        except Refusal as err:
            response = _error(err)
        # The body is cached once read; one refused early is read here, so its size is known.
        body_size = len(await request.read())
        received = ReceivedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            authorization=request.headers.get("Authorization"),
            status=response.status,
            body_size=body_size,
            arrived_s=arrived,
        )
        with self._lock:
            self._received.append(received)
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        # Route on the raw path, split before unquoting: clients quote a revision or a folder
        # whole (``refs%2Fconvert%2Fparquet``, ``data%2Fsft``), which is then one segment.
        raw = request.raw_path.split("?", 1)[0]
        parts = [unquote(p) for p in raw.split("/")[1:]]
        method = request.method
        if parts[:1] == ["api"]:
            return await self._api(request, method, parts[1:])
        if parts[:1] == ["_lfs"] and len(parts) >= 5:
            return await self._lfs_object(request, method, parts[1:])
        repo_type = _API_SEGMENT.get(parts[0], "model") if parts else "model"
        rest = parts[1:] if repo_type != "model" else parts
        if len(rest) == 6 and rest[1].endswith(".git") and rest[2:] == _LFS_BATCH:
            repo_id = f"{rest[0]}/{rest[1][: -len('.git')]}"
            return await self._lfs_batch(request, repo_type, repo_id)
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(request, repo_type, f"{rest[0]}/{rest[1]}", rest[3], rest[4:])
        raise Refusal(404, f"no route for {method} {request.path}")

    async def _api(self, request: web.Request, method: str, parts: list[str]) -> web.Response:
        if parts == ["whoami-v2"] and method == "GET":
            return self._whoami(request)
        if parts == ["repos", "create"] and method == "POST":
            return self._create_repo(request, await _json(request))
        if parts == ["validate-yaml"] and method == "POST":
            return _validate_yaml(await _json(request))
        if len(parts) < 3 or parts[0] not in _API_SEGMENT:
            raise Refusal(404, f"no route for {method} {request.path}")
        repo_type, repo_id, action = _API_SEGMENT[parts[0]], f"{parts[1]}/{parts[2]}", parts[3:]
        if method == "GET" and not action:
            return self._info(request, repo_type, repo_id, "main")
        if method == "GET" and action[:1] == ["revision"] and len(action) >= 2:
            return self._info(request, repo_type, repo_id, "/".join(action[1:]))
        if method == "POST" and action[:1] == ["preupload"] and len(action) == 2:
            return self._preupload(request, repo_type, repo_id, action[1], await _json(request))
        if method == "POST" and action[:1] == ["commit"] and len(action) == 2:
            return self._commit(request, repo_type, repo_id, action[1], await request.read())
        if method == "GET" and action[:1] == ["tree"] and len(action) >= 2:
            return self._tree(request, repo_type, repo_id, action[1], "/".join(action[2:]))
        if method == "POST" and action[:1] == ["paths-info"] and len(action) == 2:
            return await self._paths_info(request, repo_type, repo_id, action[1])
        raise Refusal(404, f"no route for {method} {request.path}")

    # -- auth -------------------------------------------------------------------------------------

    def _caller(self, request: web.Request) -> str | None:
        """The user a request authenticates as: None without a token, 401 for a wrong one."""
        given = request.headers.get("Authorization")
        if given is None:
            return None
        expected = f"Bearer {self.token}".encode()
        if self.token is not None and hmac.compare_digest(given.encode(errors="replace"), expected):
            return self.user
        raise Refusal(401, f"Invalid credentials in Authorization header (got {given!r})")

    def _writer(self, request: web.Request, repo_id: str) -> None:
        """Refuse a write without the token (401) or outside the token's namespaces (403)."""
        if self._caller(request) is None:
            raise Refusal(401, "You must be authenticated to write to the Hub")
        namespace = repo_id.split("/", 1)[0]
        if namespace not in self._own():
            raise Refusal(403, f"You don't have the rights to write to the namespace {namespace}")

    def _readable(self, request: web.Request, repo_type: str, repo_id: str) -> Repo:
        caller = self._caller(request)
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        namespace = repo_id.split("/", 1)[0]
        if repo is None or (repo.private and (caller is None or namespace not in self._own())):
            raise Refusal(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _own(self) -> tuple[str, ...]:
        return (self.user, *self.orgs)

    def _whoami(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if caller is None:
            raise Refusal(401, "Invalid username or password.")
        return web.json_response(
            {
                "type": "user",
                "name": caller,
                "orgs": [{"type": "org", "name": org} for org in self.orgs],
                "auth": {"type": "access_token", "accessToken": {"role": "write"}},
            }
        )

    # -- repos and commits ------------------------------------------------------------------------

    def _create(self, repo_id: str, repo_type: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
        attributes = GITATTRIBUTES.encode()
        first = StoredFile(
            ".gitattributes", len(attributes), git_blob_id(attributes), None, attributes
        )
        repo.commits.append(_make_commit(None, "initial commit", "", {first.path: first}))
        self._repos[(repo_type, repo_id)] = repo
        return repo

    def _create_repo(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        name, organization = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if not isinstance(name, str) or not _NAME.fullmatch(name) or repo_type not in REPO_TYPES:
            raise Refusal(400, f"invalid repo name or type: {name!r}, {repo_type!r}")
        caller = self._caller(request)
        repo_id = f"{organization or caller}/{name}"
        self._writer(request, repo_id)
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return web.json_response(
                    {"error": f"You already created this {repo_type} repo", "url": url},
                    status=409,
                )
            self._create(repo_id, repo_type, body.get("visibility") == "private")
        return web.json_response({"url": url, "name": repo_id, "id": repo_id})

    def _info(
        self, request: web.Request, repo_type: str, repo_id: str, revision: str
    ) -> web.Response:
        repo = self._readable(request, repo_type, repo_id)
        with self._lock:
            commit = _at(repo, revision)
            siblings = [
                {
                    "rfilename": f.path,
                    "size": f.size,
                    "blobId": f.blob_id,
                    **({"lfs": _lfs_info(f)} if f.sha256 else {}),
                }
                for f in sorted(commit.files.values(), key=lambda f: f.path)
            ]
        return web.json_response(
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/", 1)[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.commits[0].date,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
        )

    def _preupload(
        self,
        request: web.Request,
        repo_type: str,
        repo_id: str,
        revision: str,
        body: dict[str, Any],
    ) -> web.Response:
        self._writer(request, repo_id)
        repo = self._readable(request, repo_type, repo_id)
        files = body.get("files")
        if not isinstance(files, list):
            raise Refusal(400, "the body must be a JSON object with a 'files' list")
        with self._lock:
            commit = _at(repo, revision)
            patterns = _lfs_patterns(commit)
            answer = []
            for item in files:
                if not isinstance(item, dict):
                    raise Refusal(400, f"each file must be a JSON object, got {item!r}")
                path, size, sample = item.get("path"), item.get("size"), item.get("sample", "")
                if not isinstance(path, str) or not isinstance(size, int):
                    raise Refusal(400, f"each file needs a 'path' and a 'size', got {item!r}")
                lfs = (
                    size >= LFS_SIZE_THRESHOLD
                    or b"\0" in base64.b64decode(sample)
                    or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in patterns)
                )
                stored = commit.files.get(path)
                oid = None if stored is None else (stored.sha256 or stored.blob_id)
                answer.append(
                    {
                        "path": path,
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
        return web.json_response({"files": answer, "commitOid": commit.oid})

    def _commit(
        self, request: web.Request, repo_type: str, repo_id: str, revision: str, raw: bytes
    ) -> web.Response:
        self._writer(request, repo_id)
        repo = self._readable(request, repo_type, repo_id)
        if revision != "main":
            raise Refusal(400, f"commits go to 'main' on this server, got {revision!r}")
        try:
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as err:
            raise Refusal(400, f"the commit body is not NDJSON: {err}") from None
        if not all(isinstance(line, dict) for line in lines):
            raise Refusal(400, "each line of the commit body must be a JSON object")
        if not lines or lines[0].get("key") != "header":
            raise Refusal(400, "the commit's first line must be its header")
        header = lines[0].get("value") or {}
        title = header.get("summary")
        if not isinstance(title, str) or not title.strip():
            raise Refusal(400, "the commit needs a summary")
        with self._lock:
            parent = header.get("parentCommit")
            if parent is not None and parent != repo.head.oid:
                raise Refusal(
                    412, f"A commit has happened since. Please refresh and try again. ({parent})"
                )
            files = dict(repo.head.files)
            for line in lines[1:]:
                _apply(repo, files, line.get("key"), line.get("value") or {})
            commit = _make_commit(repo.head.oid, title, header.get("description") or "", files)
            repo.commits.append(commit)
        url = f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}"
        return web.json_response(
            {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}
        )

    # -- LFS --------------------------------------------------------------------------------------

    async def _lfs_batch(self, request: web.Request, repo_type: str, repo_id: str) -> web.Response:
        body = await _json(request)
        self._writer(request, repo_id)
        repo = self._readable(request, repo_type, repo_id)
        if body.get("operation") != "upload":
            raise Refusal(400, "only the 'upload' operation is served")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise Refusal(400, "the body must have an 'objects' list")
        answer = []
        for item in objects:
            oid, size = item.get("oid"), item.get("size")
            if not isinstance(oid, str) or not _OID.fullmatch(oid) or not isinstance(size, int):
                answer.append(
                    {
                        "oid": str(oid),
                        "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "oid must be a sha256, size an int"},
                    }
                )
                continue
            with self._lock:
                held = oid in repo.objects and len(repo.objects[oid]) == size
            if held:
                answer.append({"oid": oid, "size": size})
                continue
            base = f"{self.url}/_lfs/{repo_type}/{repo_id}/{oid}"
            answer.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{base}?size={size}&sig={self._sign(repo, oid, size)}"},
                        "verify": {"href": f"{base}/verify", "header": {}},
                    },
                }
            )
        return web.json_response(
            {"transfer": "basic", "objects": answer},
            content_type="application/vnd.git-lfs+json",
        )

    def _sign(self, repo: Repo, oid: str, size: int) -> str:
        """The signature of an upload URL: like S3's presigned URLs, it authorises one object of
        one size into one repo without the user's token (clients send no token there)."""
        message = f"{repo.repo_type}/{repo.repo_id}/{oid}/{size}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    async def _lfs_object(
        self, request: web.Request, method: str, parts: list[str]
    ) -> web.Response:
        repo_type, repo_id, oid, tail = parts[0], f"{parts[1]}/{parts[2]}", parts[3], parts[4:]
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None or not _OID.fullmatch(oid):
            raise Refusal(404, "no such upload")
        if method == "POST" and tail == ["verify"]:
            self._writer(request, repo_id)
            body = await _json(request)
            with self._lock:
                data = repo.objects.get(oid)
            if data is None or body.get("size") != len(data):
                raise Refusal(404, f"object {oid} was not uploaded")
            return web.json_response({"success": True})
        if method != "PUT" or tail:
            raise Refusal(404, f"no route for {method} {request.path}")
        size = request.query.get("size", "")
        expected = self._sign(repo, oid, int(size)) if size.isdigit() else ""
        if not hmac.compare_digest(request.query.get("sig", ""), expected):
            raise Refusal(403, "SignatureDoesNotMatch")
        data = await request.read()
        fault = self._take_fault(oid)
        if fault is not None:
            raise Refusal(fault, f"injected failure of the upload of {oid}")
        if len(data) != int(size) or hashlib.sha256(data).hexdigest() != oid:
            raise Refusal(400, f"BadDigest: the uploaded bytes do not hash to {oid}")
        with self._lock:
            repo.objects[oid] = data
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def _take_fault(self, oid: str) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.oid == oid and fault.times > 0:
                    fault.times -= 1
                    return fault.status
        return None

    # -- reading ----------------------------------------------------------------------------------

    def _tree(
        self, request: web.Request, repo_type: str, repo_id: str, revision: str, folder: str
    ) -> web.Response:
        repo = self._readable(request, repo_type, repo_id)
        recursive = request.query.get("recursive", "").lower() in ("1", "true")
        folder = folder.strip("/")
        with self._lock:
            commit = _at(repo, revision)
            entries = _listing(commit, folder, recursive=recursive)
        if folder and not entries:
            raise Refusal(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        return web.json_response(entries)

    async def _paths_info(
        self, request: web.Request, repo_type: str, repo_id: str, revision: str
    ) -> web.Response:
        repo = self._readable(request, repo_type, repo_id)
        if request.content_type == "application/json":
            paths = (await _json(request)).get("paths", [])
        else:
            paths = (await request.post()).getall("paths", [])
        with self._lock:
            commit = _at(repo, revision)
            folders = _folders(commit)
            found = []
            for path in paths:
                path = str(path).strip("/")
                if path in commit.files:
                    found.append(_file_entry(commit.files[path]))
                elif path in folders:
                    found.append(_folder_entry(path, commit))
        return web.json_response(found)

    def _resolve(
        self,
        request: web.Request,
        repo_type: str,
        repo_id: str,
        revision: str,
        path: list[str],
    ) -> web.StreamResponse:
        repo = self._readable(request, repo_type, repo_id)
        name = "/".join(path)
        with self._lock:
            commit = _at(repo, revision)
            stored = commit.files.get(name)
            if stored is None:
                raise Refusal(404, f"{name} does not exist on {revision}", "EntryNotFound")
            data = self._bytes(repo, stored)
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{stored.blob_id}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if stored.sha256 is not None:
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(stored.size)
        status, body = 200, data
        wanted = request.headers.get("Range")
        if wanted is not None:
            span = _range(wanted, len(data))
            if span is None:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return web.Response(status=416, headers=headers)
            start, end = span
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers)

    def _bytes(self, repo: Repo, stored: StoredFile) -> bytes:
        if stored.sha256 is None:
            assert stored.content is not None
            return stored.content
        return repo.objects[stored.sha256]

    # -- running on its own -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (for ``python -m``)."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.start_async())
            print(f"Hub stand-in at {self.url} (Ctrl-C to stop)", flush=True)
            loop.run_forever()
        except KeyboardInterrupt:
            pass
        finally:
            loop.run_until_complete(self.stop_async())
            loop.close()


# -- helpers ---------------------------------------------------------------------------------------


def _error(err: Refusal) -> web.Response:
    headers = {"X-Error-Message": err.message.replace("\n", " ")}
    if err.code is not None:
        headers["X-Error-Code"] = err.code
    return web.json_response({"error": err.message}, status=err.status, headers=headers)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise Refusal(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refusal(400, "the body must be a JSON object")
    return body


def _validate_yaml(body: dict[str, Any]) -> web.Response:
    """Refuse a README whose YAML header does not parse to a mapping, as the Hub does."""
    content = body.get("content", "")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
    if match is not None:
        try:
            header = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            message = f"the YAML header does not parse: {err}".replace("\n", " ")
            return web.json_response({"errors": [{"message": message}]}, status=400)
        if header is not None and not isinstance(header, dict):
            message = "the YAML header must be a mapping"
            return web.json_response({"errors": [{"message": message}]}, status=400)
    return web.json_response({"errors": [], "warnings": []})


def _make_commit(parent: str | None, title: str, description: str, files: dict) -> Commit:
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    tree = sorted((path, f.blob_id) for path, f in files.items())
    digest = hashlib.sha1(
        json.dumps([parent, title, description, date, tree, secrets.token_hex(4)]).encode()
    ).hexdigest()
    return Commit(digest, parent, title, description, date, MappingProxyType(dict(files)))


def _apply(repo: Repo, files: dict[str, StoredFile], key: Any, value: dict[str, Any]) -> None:
    """Apply one commit operation to ``files``, or refuse the whole commit."""
    path = value.get("path")
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        raise Refusal(400, f"invalid path in the commit: {path!r}")
    if key == "file":
        if value.get("encoding") != "base64":
            raise Refusal(400, f"{path}: only base64 file content is accepted")
        content = base64.b64decode(value.get("content", ""))
        files[path] = StoredFile(path, len(content), git_blob_id(content), None, content)
    elif key == "lfsFile":
        oid, size = value.get("oid"), value.get("size")
        data = repo.objects.get(oid) if isinstance(oid, str) else None
        if data is None or (size is not None and size != len(data)):
            raise Refusal(
                422,
                f"Your push was rejected because an LFS pointer pointed to a file that does not"
                f" exist. For instance: {path} ({oid})",
            )
        pointer = lfs_pointer(oid, len(data))
        files[path] = StoredFile(path, len(data), git_blob_id(pointer), oid, None)
    elif key == "deletedFile":
        if files.pop(path, None) is None:
            raise Refusal(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
    elif key == "deletedFolder":
        prefix = path.rstrip("/") + "/"
        gone = [p for p in files if p.startswith(prefix)]
        if not gone:
            raise Refusal(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
        for p in gone:
            del files[p]
    else:
        raise Refusal(400, f"unknown commit operation {key!r}")


def _at(repo: Repo, revision: str) -> Commit:
    commit = repo.commit(revision)
    if commit is None:
        raise Refusal(404, f"Invalid rev id: {revision}", "RevisionNotFound")
    return commit


def _lfs_patterns(commit: Commit) -> list[str]:
    attributes = commit.files.get(".gitattributes")
    if attributes is None or attributes.content is None:
        return []
    return [
        line.split()[0]
        for line in attributes.content.decode(errors="replace").splitlines()
        if "filter=lfs" in line and line.split()
    ]


def _lfs_info(stored: StoredFile) -> dict[str, Any]:
    assert stored.sha256 is not None
    return {
        "size": stored.size,
        "sha256": stored.sha256,
        "oid": stored.sha256,
        "pointerSize": len(lfs_pointer(stored.sha256, stored.size)),
    }


def _file_entry(stored: StoredFile) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "file",
        "oid": stored.blob_id,
        "size": stored.size,
        "path": stored.path,
    }
    if stored.sha256 is not None:
        entry["lfs"] = _lfs_info(stored)
    return entry


def _folders(commit: Commit) -> set[str]:
    return {
        "/".join(parts[:i])
        for parts in (path.split("/") for path in commit.files)
        for i in range(1, len(parts))
    }


def _folder_entry(folder: str, commit: Commit) -> dict[str, Any]:
    inside = sorted(f.blob_id for p, f in commit.files.items() if p.startswith(folder + "/"))
    tree_id = hashlib.sha1(f"{folder}:{','.join(inside)}".encode()).hexdigest()
    return {"type": "directory", "oid": tree_id, "size": 0, "path": folder}


def _listing(commit: Commit, folder: str, *, recursive: bool) -> list[dict[str, Any]]:
    """The tree entries under ``folder`` ('' for the root): its children, or everything below
    it when ``recursive``, folders first as the Hub lists them."""
    prefix = f"{folder}/" if folder else ""
    folders = {f for f in _folders(commit) if f.startswith(prefix)}
    paths = [p for p in commit.files if p.startswith(prefix)]
    if not recursive:
        folders = {f for f in folders if "/" not in f[len(prefix) :]}
        paths = [p for p in paths if "/" not in p[len(prefix) :]]
    return [_folder_entry(f, commit) for f in sorted(folders)] + [
        _file_entry(commit.files[p]) for p in sorted(paths)
    ]


def _range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a single-range ``Range`` header, None if unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default="hf_test_token", help="the one valid write token")
    parser.add_argument("--user", default="tester")
    parser.add_argument("--org", action="append", default=None, help="writable orgs (repeat)")
    args = parser.parse_args(argv)
    orgs = tuple(args.org) if args.org else ("org",)
    HubServer(
        token=args.token, user=args.user, orgs=orgs, host=args.host, port=args.port
    ).serve_forever()


if __name__ == "__main__":
    main()
