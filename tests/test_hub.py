"""Pushing an export folder to the Hub (cotforge.hub) through the local stand-in
(cotforge.testing.hub_server), and loading it back with ``datasets.load_dataset``.

``huggingface_hub`` and ``datasets`` read ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once, at import,
and this test session is offline (tests/__init__.py), so every push runs in a child process
with its own environment: ``HF_ENDPOINT`` at the stand-in, ``HF_HUB_DISABLE_XET=1`` (the
stand-in speaks LFS, not Xet), a fresh ``HF_HOME``, and name resolution limited to the loopback
so nothing reaches the internet (``datasets`` asks the dataset viewer for infos and expects that
to fail quietly when it cannot).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from cotforge.errors import ConfigError, HubError
from cotforge.hub import _redact, push_folder
from cotforge.testing.hub_server import HubServer, git_blob_id

TOKEN = "hf_TestToken0123456789abcdefXYZ"
CARD = """---
configs:
- config_name: sft
  data_files:
  - split: train
    path: data/sft/train-*
license: cc-by-nc-4.0
---
# {title}
"""

# Run in the child: resolve only the loopback, push, report, and load the rows back if asked.
_CHILD = r"""
import hashlib, json, socket, sys, traceback

_resolve = socket.getaddrinfo
def _loopback_only(host, *args, **kwargs):
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise socket.gaierror(f"the test resolves only the loopback, not {host}")
    return _resolve(host, *args, **kwargs)
socket.getaddrinfo = _loopback_only

from rich.console import Console

import cotforge.hub
from cotforge.errors import CotforgeError

args = json.loads(sys.argv[1])
cotforge.hub.PROBE_TIMEOUT_S = args["probe_timeout_s"]
try:
    url = cotforge.hub.push_folder(
        args["folder"],
        args["repo"],
        private=args["private"],
        commit_message=args["message"],
        console=Console(file=sys.stdout, width=200),
    )
except CotforgeError as err:
    print("FAILED", type(err).__name__, err)
    traceback.print_exception(err)
    sys.exit(err.exit_code)
print("PUSHED", url)
if args["load"]:
    import datasets
    rows = datasets.load_dataset(args["repo"], args["load"], split="train")
    print("FEATURES", json.dumps(rows.features.to_dict()))
    for row in rows:
        image = row["images"][0]
        pixels = hashlib.sha256(image.tobytes()).hexdigest()
        print("ROW", json.dumps([row["label"], row["messages"], image.size, image.mode, pixels]))
"""


@pytest.fixture
def hub() -> Any:
    with HubServer(token=TOKEN, user="tester", orgs=("org",)) as server:
        yield server


def _png(seed: int) -> bytes:
    image = Image.frombytes("RGB", (12, 10), hashlib.sha256(b"%d" % seed).digest() * 12)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _rows(labels: list[str], *, seed: int = 0) -> dict[str, list[Any]]:
    return {
        "images": [[{"bytes": _png(seed + i), "path": None}] for i in range(len(labels))],
        "messages": [
            [
                {"role": "user", "content": "<image>What aircraft is this?"},
                {"role": "assistant", "content": f"<think>...</think><answer>{label}</answer>"},
            ]
            for label in labels
        ],
        "label": labels,
    }


def _export(folder: Path, shards: list[list[str]], *, title: str = "v1", seed: int = 0) -> Path:
    """Write an export-shaped folder: the card and ``data/sft/train-NNNNN-of-NNNNN.parquet``."""
    import datasets

    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "label": datasets.Value("string"),
        }
    )
    (folder / "data" / "sft").mkdir(parents=True)
    for index, labels in enumerate(shards):
        rows = datasets.Dataset.from_dict(_rows(labels, seed=seed + 100 * index), features=features)
        name = f"train-{index:05d}-of-{len(shards):05d}.parquet"
        rows.to_parquet(str(folder / "data" / "sft" / name))
    (folder / "README.md").write_text(CARD.format(title=title), encoding="utf-8")
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _push(
    folder: Path,
    endpoint: str,
    home: Path,
    *,
    repo: str = "org/name",
    token: str | None = TOKEN,
    private: bool = False,
    load: str | None = None,
    probe_timeout_s: float = 10.0,
    xet: bool = False,
) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HF_", "HUGGINGFACE_"))
        and name.lower() not in ("http_proxy", "https_proxy", "all_proxy", "transformers_offline")
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_UPDATE_DOWNLOAD_COUNTS="0",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    if token is not None:
        env["HF_TOKEN"] = token
    args = {
        "folder": str(folder),
        "repo": repo,
        "private": private,
        "message": "export",
        "load": load,
        "probe_timeout_s": probe_timeout_s,
    }
    return subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        env=env,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _failure(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line HubError message a failed push printed (and checks it failed that way)."""
    assert result.returncode == HubError.exit_code, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAILED"))
    assert line.startswith("FAILED HubError "), line
    return line.removeprefix("FAILED HubError ")


@pytest.mark.slow  # a few seconds: the child imports datasets to load the rows back
def test_push_then_load_dataset_returns_the_same_rows(hub: HubServer, tmp_path: Path) -> None:
    import datasets

    folder = _export(tmp_path / "export", [["Boeing 737-800", "Airbus A320", "ATR 72"]])
    result = _push(folder, hub.url, tmp_path / "home", load="sft")
    assert result.returncode == 0, result.stdout + result.stderr

    head = hub.head("org/name")
    assert f"PUSHED {hub.url}/datasets/org/name/commit/{head.oid}" in result.stdout
    assert "pushing 2 files" in result.stdout
    repo = hub.repo("org/name")
    assert repo is not None and not repo.private
    assert len(repo.commits) == 2 and head.title == "export"  # the Hub's first commit, then one
    shard = "data/sft/train-00000-of-00001.parquet"
    assert sorted(head.files) == [".gitattributes", "README.md", shard]
    assert head.files[shard].sha256 == _sha256(folder / shard)  # stored in LFS
    assert hub.read("org/name", "README.md") == (folder / "README.md").read_bytes()

    local = datasets.Dataset.from_parquet(str(folder / shard))
    assert json.loads(_line(result.stdout, "FEATURES")) == local.features.to_dict()
    loaded = [json.loads(line) for line in _lines(result.stdout, "ROW")]
    expected = []
    for row in local:
        image = row["images"][0]
        pixels = hashlib.sha256(image.tobytes()).hexdigest()
        expected.append([row["label"], row["messages"], list(image.size), image.mode, pixels])
    assert loaded == expected

    writes = [r for r in hub.received if r.method in ("POST", "PUT") and "/_lfs/" not in r.path]
    assert writes and all(r.authorization == f"Bearer {TOKEN}" for r in writes)
    # LFS uploads go to the signed URL without the token, as to S3.
    uploads = [r for r in hub.received if r.method == "PUT"]
    assert len(uploads) == 1 and uploads[0].authorization is None
    assert TOKEN not in result.stdout + result.stderr
    written = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert written and not any(TOKEN.encode() in p.read_bytes() for p in written)


def test_failed_upload_keeps_the_previous_commit_and_a_rerun_sends_only_the_rest(
    hub: HubServer, tmp_path: Path
) -> None:
    first = _export(tmp_path / "v1", [["A320"]])
    assert _push(first, hub.url, tmp_path / "home").returncode == 0
    before = hub.head("org/name")

    second = _export(tmp_path / "v2", [["A330", "A340"], ["B747"]], title="v2", seed=7)
    kept = second / "data/sft/train-00000-of-00002.parquet"
    failing = second / "data/sft/train-00001-of-00002.parquet"
    hub.fail_upload(_sha256(failing), status=400)

    result = _push(second, hub.url, tmp_path / "home")
    message = _failure(result)
    assert "data/sft/train-00001-of-00002.parquet" in message and "HTTP 400" in message
    assert "run the same push again" in message
    assert hub.head("org/name") == before  # nothing of v2 is visible
    held = hub.repo("org/name").objects
    assert _sha256(kept) in held and _sha256(failing) not in held  # kept, though uncommitted
    assert hub.read("org/name", "README.md") == (first / "README.md").read_bytes()

    result = _push(second, hub.url, tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    head = hub.head("org/name")
    assert head.parent == before.oid and head.title == "export"
    # The v1 shard is gone in the same commit: train-* must match only the new export.
    assert sorted(head.files) == [
        ".gitattributes",
        "README.md",
        "data/sft/train-00000-of-00002.parquet",
        "data/sft/train-00001-of-00002.parquet",
    ]
    puts = [r for r in hub.received if r.method == "PUT"]
    statuses = {
        oid: [r.status for r in puts if r.path.endswith(oid)]
        for oid in (_sha256(kept), _sha256(failing))
    }
    assert statuses == {_sha256(kept): [200], _sha256(failing): [400, 200]}
    assert hub.read("org/name", "data/sft/train-00001-of-00002.parquet") == failing.read_bytes()


def test_a_push_of_an_unchanged_folder_makes_no_commit(hub: HubServer, tmp_path: Path) -> None:
    folder = _export(tmp_path / "export", [["A320"]])
    assert _push(folder, hub.url, tmp_path / "home").returncode == 0
    head = hub.head("org/name")
    result = _push(folder, hub.url, tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert hub.head("org/name") == head
    assert sum(r.method == "PUT" for r in hub.received) == 1


def test_a_private_push_creates_a_private_repo_and_refuses_a_public_one(
    hub: HubServer, tmp_path: Path
) -> None:
    folder = _export(tmp_path / "export", [["A320"]])
    assert (
        _push(folder, hub.url, tmp_path / "home", repo="org/secret", private=True).returncode == 0
    )
    repo = hub.repo("org/secret")
    assert repo is not None and repo.private

    hub.create("org/open", private=False)
    message = _failure(_push(folder, hub.url, tmp_path / "home", repo="org/open", private=True))
    assert "org/open already exists and is public" in message
    assert not any("/org/open/preupload" in r.path for r in hub.received)
    assert len(hub.repo("org/open").commits) == 1


@pytest.mark.skipif(not find_spec("hf_xet"), reason="hf_xet is not installed")
def test_a_xet_push_to_an_endpoint_without_xet_fails_cleanly(
    hub: HubServer, tmp_path: Path
) -> None:
    # With hf_xet installed, huggingface_hub uploads through Xet unless HF_HUB_DISABLE_XET is
    # set; the stand-in does not speak Xet, and hf_xet's failure must still be one clear line.
    folder = _export(tmp_path / "export", [["A320"]])
    message = _failure(_push(folder, hub.url, tmp_path / "home", xet=True))
    assert message.startswith(f"the transfer to the Hub at {hub.url} failed")
    assert any(r.path.endswith("/xet-write-token/main") for r in hub.received)
    assert len(hub.repo("org/name").commits) == 1


def test_no_token_stops_before_any_request(hub: HubServer, tmp_path: Path) -> None:
    folder = _export(tmp_path / "export", [["A320"]])
    message = _failure(_push(folder, hub.url, tmp_path / "home", token=None))
    assert message.startswith("no Hugging Face token") and "HF_TOKEN" in message
    assert hub.received == []


def test_a_refused_token_is_never_shown(hub: HubServer, tmp_path: Path) -> None:
    folder = _export(tmp_path / "export", [["A320"]])
    wrong = "hf_WrongToken9876543210zyxwvuTS"
    result = _push(folder, hub.url, tmp_path / "home", token=wrong)
    message = _failure(result)
    assert "refused the token (HTTP 401)" in message and "HF_TOKEN" in message
    # The stand-in's 401 quotes the token it got; neither the message nor the traceback may.
    assert any(r.status == 401 for r in hub.received)
    assert wrong not in result.stdout + result.stderr
    assert hub.repo("org/name") is None


def test_a_repo_owned_by_someone_else_is_refused(hub: HubServer, tmp_path: Path) -> None:
    hub.create("someone/data")
    before = hub.head("someone/data")
    folder = _export(tmp_path / "export", [["A320"]])
    message = _failure(_push(folder, hub.url, tmp_path / "home", repo="someone/data"))
    assert "may not write to someone/data (HTTP 403" in message
    assert hub.head("someone/data") == before


def test_an_unreachable_endpoint_says_so(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    folder = _export(tmp_path / "export", [["A320"]])
    message = _failure(_push(folder, f"http://127.0.0.1:{port}", tmp_path / "home"))
    assert message.startswith(f"cannot reach the Hub at http://127.0.0.1:{port}")
    assert "HF_ENDPOINT" in message


def test_an_endpoint_that_does_not_answer_times_out(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export", [["A320"]])
    with socket.socket() as sock:  # accepts connections (the backlog) and never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = _push(folder, endpoint, tmp_path / "home", probe_timeout_s=0.5)
    message = _failure(result)
    assert message.startswith(f"the Hub at {endpoint} did not answer in time")


def test_bad_arguments_fail_before_the_hub_is_asked(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export", [["A320"]])
    with pytest.raises(ConfigError, match="ORG/NAME"):
        push_folder(folder, "just-a-name", commit_message="export")
    with pytest.raises(ConfigError, match="ORG/NAME"):
        push_folder(folder, "org/na--me", commit_message="export")
    with pytest.raises(ValueError, match="commit_message"):
        push_folder(folder, "org/name", commit_message=" ")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="not an export folder"):
        push_folder(tmp_path / "empty", "org/name", commit_message="export")
    with pytest.raises(HubError, match="is not a folder"):
        push_folder(tmp_path / "missing", "org/name", commit_message="export")


def test_offline_mode_refuses_to_push(tmp_path: Path) -> None:
    # This test session is offline (tests/__init__.py), as a user's shell can be.
    folder = _export(tmp_path / "export", [["A320"]])
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        push_folder(folder, "org/name", token=TOKEN, commit_message="export")


def test_redact_removes_the_token_and_anything_like_one() -> None:
    text = f"Bearer {TOKEN} and hf_OtherToken12345 and hf_short"
    assert _redact(text, TOKEN) == "Bearer *** and hf_*** and hf_short"
    assert _redact("sekrit in text", "sekrit") == "*** in text"


# -- the stand-in's own guarantees, spoken to directly -------------------------------------------


def _client(hub: HubServer, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=hub.url, headers=headers, trust_env=False, timeout=10)


def _commit_body(*operations: dict[str, Any], parent: str | None = None) -> bytes:
    header: dict[str, Any] = {"summary": "by hand", "description": ""}
    if parent is not None:
        header["parentCommit"] = parent
    lines = [{"key": "header", "value": header}, *operations]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _upload_url(client: httpx.Client, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    answer = client.post(
        "/datasets/org/name.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]},
    ).json()
    return answer["objects"][0]["actions"]["upload"]["href"]


def test_a_commit_naming_an_object_not_uploaded_is_rejected_whole(hub: HubServer) -> None:
    hub.create("org/name")
    before = hub.head("org/name")
    data = b"PAR1 not really parquet"
    oid = hashlib.sha256(data).hexdigest()
    readme = base64.b64encode(b"# card\n").decode()
    body = _commit_body(
        {"key": "file", "value": {"path": "README.md", "content": readme, "encoding": "base64"}},
        {"key": "lfsFile", "value": {"path": "data/x.parquet", "algo": "sha256", "oid": oid}},
    )
    with _client(hub) as client:
        answer = client.post("/api/datasets/org/name/commit/main", content=body)
        assert answer.status_code == 422 and "does not exist" in answer.json()["error"]
        assert hub.head("org/name") == before

        # Bytes that do not hash to the oid they were sent for are refused, and not kept.
        url = _upload_url(client, data)
        assert (
            httpx.put(url, content=b"something else entirely", trust_env=False).status_code == 400
        )
        assert client.post("/api/datasets/org/name/commit/main", content=body).status_code == 422
        assert hub.head("org/name") == before

        # A URL whose signature was tampered with is refused like a bad S3 presign.
        assert httpx.put(url[:-4] + "0000", content=data, trust_env=False).status_code == 403
        assert httpx.put(url, content=data, trust_env=False).status_code == 200

        # A commit made on top of an old head is refused; on the current head it lands.
        stale = _commit_body(*_ops(readme, oid), parent="0" * 40)
        assert client.post("/api/datasets/org/name/commit/main", content=stale).status_code == 412
        fresh = _commit_body(*_ops(readme, oid), parent=before.oid)
        answer = client.post("/api/datasets/org/name/commit/main", content=fresh)
    assert answer.status_code == 200
    head = hub.head("org/name")
    assert answer.json()["commitOid"] == head.oid and head.parent == before.oid
    assert hub.read("org/name", "data/x.parquet") == data


def _ops(readme: str, oid: str) -> list[dict[str, Any]]:
    return [
        {"key": "file", "value": {"path": "README.md", "content": readme, "encoding": "base64"}},
        {"key": "lfsFile", "value": {"path": "data/x.parquet", "algo": "sha256", "oid": oid}},
    ]


def test_writes_need_the_token_and_private_repos_stay_hidden(hub: HubServer) -> None:
    create = {"name": "name", "organization": "org", "type": "dataset", "visibility": "private"}
    with _client(hub, token=None) as anonymous:
        assert anonymous.post("/api/repos/create", json=create).status_code == 401
    with _client(hub, token="hf_not_it_at_all_000") as wrong:
        refused = wrong.post("/api/repos/create", json=create)
        assert refused.status_code == 401 and "hf_not_it_at_all_000" in refused.text
    with _client(hub) as owner:
        assert owner.post("/api/repos/create", json=create).status_code == 200
        assert owner.post("/api/repos/create", json=create).status_code == 409
        assert owner.get("/api/datasets/org/name").json()["private"] is True
        elsewhere = {**create, "organization": "someone"}
        assert owner.post("/api/repos/create", json=elsewhere).status_code == 403
    with _client(hub, token=None) as anonymous:
        hidden = anonymous.get("/api/datasets/org/name")
        assert hidden.status_code == 404 and hidden.headers["X-Error-Code"] == "RepoNotFound"
        missing = anonymous.head("/datasets/org/name/resolve/main/.gitattributes")
        assert missing.status_code == 404


def test_resolve_serves_the_headers_clients_cache_by_and_byte_ranges(hub: HubServer) -> None:
    hub.create("org/name")
    data = bytes(range(256)) * 4
    oid = hashlib.sha256(data).hexdigest()
    with _client(hub) as client:
        assert httpx.put(_upload_url(client, data), content=data, trust_env=False).is_success
        body = _commit_body(
            {"key": "lfsFile", "value": {"path": "data/a.bin", "algo": "sha256", "oid": oid}}
        )
        assert client.post("/api/datasets/org/name/commit/main", content=body).is_success
        head = hub.head("org/name")

        meta = client.head("/datasets/org/name/resolve/main/data/a.bin")
        assert meta.status_code == 200
        assert meta.headers["X-Repo-Commit"] == head.oid
        assert meta.headers["X-Linked-Etag"] == f'"{oid}"'
        assert meta.headers["X-Linked-Size"] == meta.headers["Content-Length"] == str(len(data))
        url = f"/datasets/org/name/resolve/{head.oid}/data/a.bin"
        ranged = client.get(url, headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == data[10:20]
        assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        card = client.get("/datasets/org/name/resolve/main/.gitattributes")
        assert card.headers["ETag"] == f'"{git_blob_id(card.content)}"'
        assert "X-Linked-Etag" not in card.headers

        tree = client.get("/api/datasets/org/name/tree/main/data").json()
        assert [(e["type"], e["path"], e.get("lfs", {}).get("oid")) for e in tree] == [
            ("file", "data/a.bin", oid)
        ]
        root = client.get("/api/datasets/org/name/tree/main").json()
        assert [(e["type"], e["path"]) for e in root] == [
            ("directory", "data"),
            ("file", ".gitattributes"),
        ]
        found = client.post(
            "/api/datasets/org/name/paths-info/main",
            data={"paths": ["data", "data/a.bin", "nope"], "expand": "False"},
        ).json()
        assert [(e["type"], e["path"]) for e in found] == [
            ("directory", "data"),
            ("file", "data/a.bin"),
        ]
        gone = client.get("/api/datasets/org/name/revision/" + "f" * 40)
        assert gone.status_code == 404 and gone.headers["X-Error-Code"] == "RevisionNotFound"


def _lines(text: str, tag: str) -> list[str]:
    return [
        line.removeprefix(tag + " ") for line in text.splitlines() if line.startswith(tag + " ")
    ]


def _line(text: str, tag: str) -> str:
    (found,) = _lines(text, tag)
    return found
