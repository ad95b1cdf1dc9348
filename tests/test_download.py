"""Download, verify and extract: real archives built here, a real HTTP server on 127.0.0.1.

Nothing touches the network. Malicious archives are built member by member with tarfile and
zipfile (the way an attacker would), and every refusal also checks that nothing was written
outside the destination.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from cotforge.data.download import (
    DATASET_ARCHIVES,
    DOWNLOADS_DIR,
    MANIFEST_NAME,
    Archive,
    download_dataset,
    safe_extract,
    verify_checksum,
)
from cotforge.errors import DownloadError, UnknownDatasetError

# --- archive builders --------------------------------------------------------------------------


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def make_tar(path: Path, members: list[tuple], mode: str = "w:gz") -> Path:
    """Build a tar member by member (as an attacker would, bypassing ``tar.add``'s cleanup).

    Members: ("file", name, bytes), ("dir", name), ("sym" | "hard", name, target),
    ("fifo" | "chr", name).
    """
    kinds = {
        "dir": tarfile.DIRTYPE,
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chr": tarfile.CHRTYPE,
    }
    with tarfile.open(path, mode) as tar:
        for kind, name, *rest in members:
            if kind == "file":
                info = _info(name)
                info.size = len(rest[0])
                tar.addfile(info, io.BytesIO(rest[0]))
            else:
                tar.addfile(_info(name, kinds[kind], rest[0] if rest else ""))
    return path


def make_zip(path: Path, members: list[tuple]) -> Path:
    """Members: ("file", name, bytes) | ("dir", name) | ("sym", name, target) | ("fifo", name)."""
    with zipfile.ZipFile(path, "w") as archive:
        for kind, name, *rest in members:
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix, so external_attr carries a file type
            modes = {"file": stat.S_IFREG | 0o644, "dir": stat.S_IFDIR | 0o755}
            modes |= {"sym": stat.S_IFLNK | 0o777, "fifo": stat.S_IFIFO | 0o644}
            info.external_attr = modes[kind] << 16
            archive.writestr(info, rest[0] if rest else b"")
    return path


def tree(path: Path) -> set[str]:
    """Every path under ``path`` (links not followed), relative, for before/after comparisons."""
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A destination two levels down, with a sibling that a '../' member would hit."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("keep me")
    return tmp_path / "root" / "dest"


# --- safe_extract: good archives -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_extracts_every_tar_compression(tmp_path: Path, dest: Path, mode: str) -> None:
    archive = make_tar(
        tmp_path / "a.tar",
        [
            ("dir", "images"),
            ("file", "images/001.Albatross/a.jpg", b"jpeg-bytes"),
            ("file", "classes.txt", b"1 Albatross\n"),
            ("sym", "images/latest.jpg", "001.Albatross/a.jpg"),
            ("hard", "images/copy.jpg", "images/001.Albatross/a.jpg"),
        ],
        mode,
    )
    assert safe_extract(archive, dest) == dest
    assert (dest / "images/001.Albatross/a.jpg").read_bytes() == b"jpeg-bytes"
    assert (dest / "classes.txt").read_text() == "1 Albatross\n"
    assert (dest / "images/latest.jpg").is_symlink()
    assert (dest / "images/latest.jpg").read_bytes() == b"jpeg-bytes"
    assert (dest / "images/copy.jpg").read_bytes() == b"jpeg-bytes"
    assert not [p for p in dest.iterdir() if p.name.startswith(".")], "temporary folder left"


def test_strip_components_drops_the_top_folder_and_shallower_members(
    tmp_path: Path, dest: Path
) -> None:
    archive = make_tar(
        tmp_path / "CUB_200_2011.tgz",
        [
            ("file", "attributes.txt", b"1 has_bill_shape::curved\n"),
            ("dir", "CUB_200_2011"),
            ("file", "CUB_200_2011/images.txt", b"1 001.A/a.jpg\n"),
            ("file", "CUB_200_2011/images/001.A/a.jpg", b"jpg"),
            ("hard", "CUB_200_2011/images/001.A/b.jpg", "CUB_200_2011/images/001.A/a.jpg"),
        ],
    )
    safe_extract(archive, dest, strip_components=1)
    expected = {"images.txt", "images", "images/001.A", "images/001.A/a.jpg", "images/001.A/b.jpg"}
    assert tree(dest) == expected


def test_without_strip_components_the_top_folder_is_kept(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [("file", "top/data/x.txt", b"x")])
    safe_extract(archive, dest)
    assert (dest / "top/data/x.txt").read_bytes() == b"x"


def test_extracts_zip_with_strip_components(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(
        tmp_path / "a.zip",
        [
            ("dir", "top/"),
            ("file", "top/jpg/image_00001.jpg", b"jpg"),
            ("sym", "top/jpg/first.jpg", "image_00001.jpg"),
        ],
    )
    safe_extract(archive, dest, strip_components=1)
    assert (dest / "jpg/image_00001.jpg").read_bytes() == b"jpg"
    assert (dest / "jpg/first.jpg").is_symlink()
    assert (dest / "jpg/first.jpg").read_bytes() == b"jpg"


def test_merges_into_existing_content_and_replaces_links_without_following_them(
    tmp_path: Path, dest: Path
) -> None:
    (dest / "images").mkdir(parents=True)
    (dest / "images/old.jpg").write_bytes(b"old")
    (dest / "keep.txt").write_text("mine")
    (dest / "classes.txt").mkdir()  # in the way of a file of the same name
    (dest / "annotations").symlink_to(tmp_path / "outside")  # a link the archive must not follow
    archive = make_tar(
        tmp_path / "a.tgz",
        [
            ("file", "images/new.jpg", b"new"),
            ("file", "annotations/test.txt", b"t"),
            ("file", "classes.txt", b"1 A"),
        ],
    )
    safe_extract(archive, dest)
    assert (dest / "images/old.jpg").read_bytes() == b"old"
    assert (dest / "images/new.jpg").read_bytes() == b"new"
    assert (dest / "keep.txt").read_text() == "mine"
    assert (dest / "classes.txt").read_bytes() == b"1 A"
    assert not (dest / "annotations").is_symlink()
    assert (dest / "annotations/test.txt").read_bytes() == b"t"
    assert tree(tmp_path / "outside") == {"secret.txt"}


def test_stale_temporary_folder_from_a_killed_run_is_removed(tmp_path: Path, dest: Path) -> None:
    stale = dest / ".cotforge-extract-old"
    stale.mkdir(parents=True)
    (stale / "half.jpg").write_bytes(b"half")
    safe_extract(make_tar(tmp_path / "a.tgz", [("file", "x.txt", b"x")]), dest)
    assert tree(dest) == {"x.txt"}


# --- safe_extract: malicious archives ------------------------------------------------------------

# Links that each look harmless by name: a/mN -> "." keeps a/m1/m2/m3 at depth 1 on disk although
# it reads as depth 4, so l climbs three levels above the temporary folder, to tmp_path.
ESCAPE = [
    ("sym", "a/m1", "."),
    ("sym", "a/m2", "."),
    ("sym", "a/m3", "."),
    ("sym", "l", "a/m1/m2/m3/../../../.."),
]
TAR_ATTACKS = {
    "absolute path": (
        [("file", "/tmp/cotforge-evil.txt", b"evil")],
        "/tmp/cotforge-evil.txt",
        "absolute path",
    ),
    "dotdot": ([("file", "../evil.txt", b"evil")], "../evil.txt", "'..' component"),
    "dotdot inside": ([("file", "a/../../evil.txt", b"e")], "a/../../evil.txt", "'..' component"),
    "backslash dotdot": ([("file", "..\\evil.txt", b"evil")], "..\\evil.txt", "'..' component"),
    "symlink to /etc/passwd": (
        [("sym", "passwd", "/etc/passwd")],
        "passwd",
        "symlink to the absolute path '/etc/passwd'",
    ),
    "symlink to ../outside": (
        [("sym", "sub/out", "../../outside")],
        "sub/out",
        "symlink to '../../outside', outside the destination",
    ),
    "hardlink to outside": (
        [("hard", "hl", "../outside/secret.txt")],
        "hl",
        "hard link to '../outside/secret.txt', which has a '..' component",
    ),
    "hardlink to absolute": ([("hard", "hl", "/etc/passwd")], "hl", "which is an absolute path"),
    "hardlink to a stripped member": (
        [("hard", "top/hl", "shallow")],
        "top/hl",
        "hard link to 'shallow', outside the destination",
    ),
    "hardlink to nothing": ([("hard", "hl", "missing.txt")], "hl", "not an earlier file"),
    "fifo": ([("fifo", "pipe")], "pipe", "device file, fifo"),
    "device": ([("chr", "dev/null")], "dev/null", "device file, fifo"),
    "symlink chain": (ESCAPE, "l", "which leads outside it"),
    "write through a symlink chain": (
        [*ESCAPE, ("file", "l/outside/evil.txt", b"evil")],
        "l/outside/evil.txt",
        "written through a link",
    ),
    "hardlink through a symlink chain": (
        [*ESCAPE, ("hard", "h", "l/outside/secret.txt")],
        "h",
        "hard link to 'l/outside/secret.txt', which leads outside it",
    ),
}


@pytest.mark.parametrize("attack", TAR_ATTACKS, ids=list(TAR_ATTACKS))
def test_refuses_malicious_tar_and_writes_nothing(tmp_path: Path, dest: Path, attack: str) -> None:
    members, culprit, reason = TAR_ATTACKS[attack]
    strip = 1 if attack == "hardlink to a stripped member" else 0
    archive = make_tar(tmp_path / "evil.tgz", [("file", "top/good.txt", b"ok"), *members])
    before = tree(tmp_path)
    with pytest.raises(DownloadError, match="refusing archive member") as err:
        safe_extract(archive, dest, strip_components=strip)
    assert f"{culprit!r}: " in str(err.value)
    assert reason in str(err.value)
    assert tree(dest) == set(), "a refused archive must leave the destination empty"
    assert tree(tmp_path) - before <= {"root", "root/dest"}
    assert not Path("/tmp/cotforge-evil.txt").exists()


ZIP_ATTACKS = {
    "dotdot": ([("file", "../evil.txt", b"evil")], "../evil.txt"),
    "absolute path": ([("file", "/evil.txt", b"evil")], "/evil.txt"),
    "windows drive": ([("file", "C:\\evil.txt", b"evil")], "C:\\evil.txt"),
    "symlink outside": ([("sym", "out", "../../outside")], "out"),
    "fifo": ([("fifo", "pipe")], "pipe"),
}


@pytest.mark.parametrize("attack", ZIP_ATTACKS, ids=list(ZIP_ATTACKS))
def test_refuses_malicious_zip_and_writes_nothing(tmp_path: Path, dest: Path, attack: str) -> None:
    members, culprit = ZIP_ATTACKS[attack]
    archive = make_zip(tmp_path / "evil.zip", [("file", "good.txt", b"ok"), *members])
    before = tree(tmp_path)
    with pytest.raises(DownloadError, match="refusing archive member") as err:
        safe_extract(archive, dest)
    assert f"{culprit!r}: " in str(err.value)
    assert tree(dest) == set()
    assert tree(tmp_path) - before <= {"root", "root/dest"}


def test_refuses_a_file_that_is_not_an_archive(tmp_path: Path, dest: Path) -> None:
    bogus = tmp_path / "page.html"
    bogus.write_text("<html>moved</html>")
    with pytest.raises(DownloadError, match="neither a tar nor a zip"):
        safe_extract(bogus, dest)


def test_truncated_archive_is_reported_and_leaves_nothing(tmp_path: Path, dest: Path) -> None:
    data = bytes(range(256)) * 400
    full = make_tar(tmp_path / "full.tgz", [("file", "a.bin", data), ("file", "b.bin", data)])
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        safe_extract(cut, dest)
    assert tree(dest) == set()


def test_a_member_below_a_file_is_reported_as_an_extraction_failure(
    tmp_path: Path, dest: Path
) -> None:
    archive = make_tar(tmp_path / "a.tgz", [("file", "a", b"1"), ("file", "a/b", b"2")])
    with pytest.raises(DownloadError, match="could not extract"):
        safe_extract(archive, dest)
    assert tree(dest) == set()


def test_negative_strip_components_is_rejected(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(ValueError, match="strip_components must be >= 0, got -1"):
        safe_extract(make_tar(tmp_path / "a.tgz", []), dest, strip_components=-1)


# --- checksums and the Archive record ------------------------------------------------------------


def test_checksum_mismatch_deletes_the_file_and_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "setid.mat"
    path.write_bytes(b"not the real file")
    actual = hashlib.md5(b"not the real file").hexdigest()
    archive = Archive("https://example.org/setid.mat", "setid.mat", md5="0" * 32, extract=False)
    with pytest.raises(DownloadError) as err:
        verify_checksum(path, archive)
    message = str(err.value)
    assert str(path) in message and "0" * 32 in message and actual in message
    assert "re-run to download again" in message
    assert not path.exists()


def test_matching_checksums_return_both_digests(tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    path.write_bytes(b"abc")
    md5, sha = hashlib.md5(b"abc").hexdigest(), hashlib.sha256(b"abc").hexdigest()
    archive = Archive("https://e.org/x.mat", "x.mat", md5=md5.upper(), sha256=sha, extract=False)
    assert verify_checksum(path, archive) == {"md5": md5, "sha256": sha}
    assert path.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"filename": "a/b.tgz"}, "plain file name"),
        ({"filename": "../b.tgz"}, "plain file name"),
        ({"filename": ""}, "plain file name"),
        ({"subdir": "../lists"}, "relative path inside root"),
        ({"subdir": "/abs"}, "relative path inside root"),
        ({"md5": "xyz"}, "md5 must be a hex digest"),
        ({"sha256": "a" * 32}, "sha256 must be a hex digest"),
        ({"strip_components": -1}, "strip_components must be >= 0"),
        ({"extract": False, "strip_components": 1}, "0 for a plain file"),
    ],
)
def test_archive_rejects_bad_fields(options: dict, message: str) -> None:
    fields = {"url": "https://e.org/a.tgz", "filename": "a.tgz"} | options
    with pytest.raises(ValueError, match=message):
        Archive(**fields)


def test_every_downloadable_dataset_has_published_checksums() -> None:
    assert set(DATASET_ARCHIVES) == {"aircraft", "cub", "dogs", "flowers", "pets"}
    for archives in DATASET_ARCHIVES.values():
        for archive in archives:
            assert archive.has_checksum, archive.filename
            assert archive.url.startswith(("https://", "http://"))
            assert archive.url.rsplit("/", 1)[1] == archive.filename


# --- the HTTP path -------------------------------------------------------------------------------


@dataclass
class Server:
    """A tiny file server with switchable Range support, recording what it was asked."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    honor_range: bool = True
    wrong_range: bool = False
    """Answer a Range request with 206 but from byte 0 (a broken proxy)."""
    extra_headers: dict[str, str] = field(default_factory=dict)
    truncate_next: int | None = None
    """When set, the next response promises the whole body but sends only this many bytes."""
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)
    """(path, Range header, status) of every request."""

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            if name not in server.files:
                self._reply(404, b"not found", {})
                return
            data = server.files[name]
            wanted = self.headers.get("Range")
            if wanted and server.honor_range:
                start = 0 if server.wrong_range else int(wanted.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
                span = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self._reply(206, data[start:], {"Content-Range": span})
                return
            self._reply(200, data, {"Accept-Ranges": "bytes" if server.honor_range else "none"})

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            server.requests.append((self.path, self.headers.get("Range"), status))
            self.send_response(status)
            for key, value in (headers | server.extra_headers).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if server.truncate_next is not None:
                body, server.truncate_next = body[: server.truncate_next], None
                self.close_connection = True
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Keep pytest output clean."""

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def console() -> Console:
    return Console(file=io.StringIO(), width=200)


def output(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def serve_archive(
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    checksum: str | None = "sha256",
) -> tuple[bytes, Archive]:
    """Serve a small pets-style archive under the name 'pets' and return its bytes."""
    payload = bytes(range(256)) * 2000  # incompressible enough to make a multi-chunk body
    built = make_tar(
        tmp_path / "images.tar.gz",
        [("file", "images/Abyssinian_1.jpg", payload), ("file", "images/pug_1.jpg", b"pug")],
    )
    data = built.read_bytes()
    server.files["images.tar.gz"] = data
    digest = {checksum: hashlib.new(checksum, data).hexdigest()} if checksum else {}
    archive = Archive(server.url("images.tar.gz"), "images.tar.gz", **digest)
    monkeypatch.setitem(DATASET_ARCHIVES, "pets", [archive])
    return data, archive


@pytest.mark.slow
@pytest.mark.parametrize("checksum", ["sha256", "md5"])
def test_downloads_verifies_extracts_and_records(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console, checksum: str
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path, checksum=checksum)
    root = tmp_path / "pets"
    assert download_dataset("pets", root=root, console=console) == root
    assert (root / "images/pug_1.jpg").read_bytes() == b"pug"
    assert (root / DOWNLOADS_DIR / "images.tar.gz").read_bytes() == data
    assert not list((root / DOWNLOADS_DIR).glob("*.part"))
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["dataset"] == "pets"
    [record] = manifest["archives"]
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["verified_by"] == checksum
    assert [status for *_, status in server.requests] == [200]


@pytest.mark.slow
def test_second_call_is_a_no_op_and_force_reextracts_from_the_verified_copy(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    serve_archive(server, monkeypatch, tmp_path)
    root = tmp_path / "pets"
    download_dataset("pets", root=root, console=console)
    (root / "images/pug_1.jpg").unlink()
    server.requests.clear()
    download_dataset("pets", root=root, console=console)
    assert server.requests == []
    assert not (root / "images/pug_1.jpg").exists(), "a no-op must not touch the layout"
    assert "nothing to do" in output(console)
    download_dataset("pets", root=root, force=True, console=console)
    assert server.requests == [], "a checksum-verified archive is not downloaded again"
    assert (root / "images/pug_1.jpg").read_bytes() == b"pug"


@pytest.mark.slow
def test_resumes_a_partial_file_with_a_range_request(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path)
    root = tmp_path / "pets"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    half = len(data) // 2
    (root / DOWNLOADS_DIR / "images.tar.gz.part").write_bytes(data[:half])
    download_dataset("pets", root=root, console=console)
    assert server.requests == [("/images.tar.gz", f"bytes={half}-", 206)]
    assert (root / "images/pug_1.jpg").read_bytes() == b"pug"


@pytest.mark.slow
def test_restarts_when_the_server_ignores_range(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path)
    server.honor_range = False
    root = tmp_path / "pets"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "images.tar.gz.part").write_bytes(b"garbage that must not survive")
    download_dataset("pets", root=root, console=console)
    assert [status for *_, status in server.requests] == [200]
    assert (root / DOWNLOADS_DIR / "images.tar.gz").read_bytes() == data
    assert "cannot resume" in output(console)


@pytest.mark.slow
def test_restarts_when_the_range_is_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path)
    root = tmp_path / "pets"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "images.tar.gz.part").write_bytes(data + b"extra")
    download_dataset("pets", root=root, console=console)
    assert [(rng is not None, status) for _, rng, status in server.requests] == [
        (True, 416),
        (False, 200),
    ]
    assert (root / DOWNLOADS_DIR / "images.tar.gz").read_bytes() == data


@pytest.mark.slow
def test_an_interrupted_download_keeps_its_part_and_the_next_run_resumes(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, archive = serve_archive(server, monkeypatch, tmp_path)
    server.truncate_next = 1000
    root = tmp_path / "pets"
    with pytest.raises(DownloadError) as err:
        download_dataset("pets", root=root, console=console)
    assert archive.url in str(err.value) and "check your network" in str(err.value)
    assert (root / DOWNLOADS_DIR / "images.tar.gz.part").stat().st_size == 1000
    assert not (root / MANIFEST_NAME).exists()
    download_dataset("pets", root=root, console=console)
    assert server.requests[-1] == ("/images.tar.gz", "bytes=1000-", 206)
    assert (root / DOWNLOADS_DIR / "images.tar.gz").read_bytes() == data


@pytest.mark.slow
def test_a_wrong_partial_answer_is_not_appended(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path)
    server.wrong_range = True
    root = tmp_path / "pets"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "images.tar.gz.part").write_bytes(data[:500])
    download_dataset("pets", root=root, console=console)
    assert [status for *_, status in server.requests] == [206, 200]
    assert (root / DOWNLOADS_DIR / "images.tar.gz").read_bytes() == data


@pytest.mark.slow
def test_bytes_are_kept_as_sent_when_a_server_labels_a_tgz_as_gzip_encoded(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path)
    server.extra_headers = {"Content-Encoding": "gzip"}  # a common web-server misconfiguration
    root = tmp_path / "pets"
    download_dataset("pets", root=root, console=console)
    assert (root / DOWNLOADS_DIR / "images.tar.gz").read_bytes() == data


@pytest.mark.slow
def test_a_changed_archive_list_or_unreadable_manifest_is_not_taken_as_done(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    _, archive = serve_archive(server, monkeypatch, tmp_path)
    root = tmp_path / "pets"
    download_dataset("pets", root=root, console=console)
    server.files["annotations.tar.gz"] = make_tar(
        tmp_path / "annotations.tar.gz", [("file", "annotations/test.txt", b"t")]
    ).read_bytes()
    extra = Archive(server.url("annotations.tar.gz"), "annotations.tar.gz")
    monkeypatch.setitem(DATASET_ARCHIVES, "pets", [archive, extra])
    download_dataset("pets", root=root, console=console)
    assert (root / "annotations/test.txt").read_bytes() == b"t"
    (root / MANIFEST_NAME).write_text("{half a manif")
    (root / "annotations/test.txt").unlink()
    download_dataset("pets", root=root, console=console)
    assert (root / "annotations/test.txt").exists()
    assert json.loads((root / MANIFEST_NAME).read_text())["dataset"] == "pets"


@pytest.mark.slow
def test_http_404_names_the_url_and_where_to_put_a_manual_download(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    missing = Archive(server.url("gone.tgz"), "gone.tgz", md5="0" * 32)
    monkeypatch.setitem(DATASET_ARCHIVES, "pets", [missing])
    root = tmp_path / "pets"
    with pytest.raises(DownloadError) as err:
        download_dataset("pets", root=root, console=console)
    message = str(err.value)
    assert missing.url in message and "HTTP 404" in message
    assert f"download it by hand to {root / DOWNLOADS_DIR / 'gone.tgz'}" in message


def test_connection_failure_names_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    archive = Archive(f"http://127.0.0.1:{port}/a.tgz", "a.tgz", md5="0" * 32)
    monkeypatch.setitem(DATASET_ARCHIVES, "pets", [archive])
    with pytest.raises(DownloadError, match="check your network") as err:
        download_dataset("pets", root=tmp_path / "pets", console=console)
    assert archive.url in str(err.value)


@pytest.mark.slow
def test_a_downloaded_file_with_the_wrong_checksum_is_deleted(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    server.files["setid.mat"] = b"an html error page"
    archive = Archive(server.url("setid.mat"), "setid.mat", md5="1" * 32, extract=False)
    monkeypatch.setitem(DATASET_ARCHIVES, "flowers", [archive])
    root = tmp_path / "flowers"
    with pytest.raises(DownloadError, match=r"checksum mismatch.*re-run to download again"):
        download_dataset("flowers", root=root, console=console)
    assert tree(root / DOWNLOADS_DIR) == set()
    assert not (root / MANIFEST_NAME).exists()
    assert not (root / "setid.mat").exists()


@pytest.mark.slow
def test_a_hand_downloaded_archive_is_used_without_the_network(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path)
    server.files.clear()  # the host is "down"
    root = tmp_path / "pets"
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "images.tar.gz").write_bytes(data)
    download_dataset("pets", root=root, console=console)
    assert server.requests == []
    assert (root / "images/pug_1.jpg").read_bytes() == b"pug"


def test_a_wrong_hand_downloaded_archive_is_deleted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    archive = Archive("http://127.0.0.1:9/images.tar.gz", "images.tar.gz", md5="2" * 32)
    monkeypatch.setitem(DATASET_ARCHIVES, "pets", [archive])
    placed = tmp_path / "pets" / DOWNLOADS_DIR / "images.tar.gz"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"truncated browser download")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset("pets", root=tmp_path / "pets", console=console)
    assert not placed.exists()


@pytest.mark.slow
def test_unpublished_checksum_is_recorded_and_said_to_be_unverified(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    data, _ = serve_archive(server, monkeypatch, tmp_path, checksum=None)
    root = tmp_path / "pets"
    download_dataset("pets", root=root, console=console)
    [record] = json.loads((root / MANIFEST_NAME).read_text())["archives"]
    assert record["verified_by"] is None
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert "NOT verified" in output(console)
    download_dataset("pets", root=root, force=True, console=console)
    assert len(server.requests) == 2, "under force an unverifiable copy is fetched again"


def test_a_root_holding_another_dataset_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console: Console
) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    (root / MANIFEST_NAME).write_text(json.dumps({"dataset": "dogs", "archives": []}))
    with pytest.raises(DownloadError, match="already holds the 'dogs' dataset"):
        download_dataset("pets", root=root, console=console)


def test_stanford_cars_points_to_a_mirror_and_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="mirror") as err:
        download_dataset("cars", root=tmp_path / "cars")
    message = str(err.value)
    for needed in ("cars_train/", "cars_test/", "devkit/cars_meta.mat", "devkit/cars_train_annos"):
        assert needed in message
    assert "cars_test_annos_withlabels.mat" in message and str(tmp_path / "cars") in message
    assert not (tmp_path / "cars").exists()


def test_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'birds'.*aircraft, cars, cub"):
        download_dataset("birds", root=tmp_path)


# --- the official layouts ------------------------------------------------------------------------

# What each official file contains (top-level structure only), and what the README's "Official
# on-disk layouts" says root must then hold.
FAKE_CONTENT: dict[str, list[tuple]] = {
    "fgvc-aircraft-2013b.tar.gz": [
        ("file", "fgvc-aircraft-2013b/data/images/0034309.jpg", b"jpg"),
        ("file", "fgvc-aircraft-2013b/data/variants.txt", b"707-320\n"),
        ("file", "fgvc-aircraft-2013b/README.md", b"readme"),
    ],
    "CUB_200_2011.tgz": [
        ("file", "attributes.txt", b"1 has_bill_shape::curved\n"),
        ("file", "CUB_200_2011/images/001.Black_footed_Albatross/a.jpg", b"jpg"),
        ("file", "CUB_200_2011/images.txt", b"1 001.Black_footed_Albatross/a.jpg\n"),
    ],
    "images.tar": [("file", "Images/n02085620-Chihuahua/n02085620_10074.jpg", b"jpg")],
    "lists.tar": [
        ("file", "file_list.mat", b"m"),
        ("file", "train_list.mat", b"m"),
        ("file", "test_list.mat", b"m"),
    ],
    "102flowers.tgz": [("file", "jpg/image_00001.jpg", b"jpg")],
    "images.tar.gz": [("file", "images/Abyssinian_1.jpg", b"jpg")],
    "annotations.tar.gz": [
        ("file", "annotations/trainval.txt", b"Abyssinian_1 1 1 1\n"),
        ("file", "annotations/test.txt", b""),
    ],
}
OFFICIAL_LAYOUT = {
    "aircraft": ["data/images/0034309.jpg", "data/variants.txt"],
    "cub": ["images/001.Black_footed_Albatross/a.jpg", "images.txt"],
    "dogs": ["Images/n02085620-Chihuahua/n02085620_10074.jpg", "lists/train_list.mat"],
    "flowers": ["jpg/image_00001.jpg", "imagelabels.mat", "setid.mat"],
    "pets": ["images/Abyssinian_1.jpg", "annotations/trainval.txt", "annotations/test.txt"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OFFICIAL_LAYOUT))
def test_each_dataset_lands_in_its_official_layout(
    name: str,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    console: Console,
) -> None:
    """The real archive list (names, subdir, strip) on archives shaped like the real ones."""
    served = []
    for archive in DATASET_ARCHIVES[name]:
        if archive.extract:
            built = make_tar(tmp_path / archive.filename, FAKE_CONTENT[archive.filename])
            data = built.read_bytes()
        else:
            data = f"fake {archive.filename}".encode()
        server.files[archive.filename] = data
        sha = hashlib.sha256(data).hexdigest()
        served.append(
            dataclasses.replace(archive, url=server.url(archive.filename), md5=None, sha256=sha)
        )
    monkeypatch.setitem(DATASET_ARCHIVES, name, served)
    root = tmp_path / "root"
    download_dataset(name, root=root, console=console)
    for rel in OFFICIAL_LAYOUT[name]:
        assert (root / rel).is_file(), rel
    assert not (root / "attributes.txt").exists()
    assert not (root / "fgvc-aircraft-2013b").exists() and not (root / "CUB_200_2011").exists()
    hidden = {p.name for p in root.iterdir() if p.name.startswith(".")}
    assert hidden == {DOWNLOADS_DIR, MANIFEST_NAME}


def test_unwritable_root_is_a_download_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(DownloadError, match="writable --root"):
        download_dataset("flowers", root=blocker / "flowers")
