"""Fetch official dataset archives, verify their checksums, extract them safely into the layout.

The sources in :mod:`cotforge.data` read the layout the authors' archives extract to, so this
module must produce exactly that layout from the authors' own files. It trusts nothing it
downloads: every archive is checked against a published checksum before it is opened, and every
member name is checked before it is written, because a tar or zip can otherwise write anywhere
the process can (absolute paths, ``..``, links that leave the folder, device files).

Files under ``root``:

- ``.downloads/``: the archives as downloaded (kept, so ``force=True`` re-extracts without
  downloading again); ``*.part`` files are unfinished downloads that the next call resumes.
  An archive the user downloaded by hand can be put here under its official file name.
- ``.cotforge-download.json``: written last, so its presence means the layout is complete and a
  second call is a no-op. It records the sha256 of every archive, and which published checksum
  (if any) verified it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Literal, NoReturn, cast

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cotforge.errors import DownloadError, UnknownDatasetError

DOWNLOADS_DIR = ".downloads"
MANIFEST_NAME = ".cotforge-download.json"
_TMP_PREFIX = ".cotforge-extract-"
_CHUNK = 1 << 20
# Read timeout is per chunk, not per file: a 2.7 GB archive may take an hour, a stalled one not.
_TIMEOUT = httpx.Timeout(30.0, connect=15.0)
_HEX = {"md5": re.compile(r"[0-9a-fA-F]{32}"), "sha256": re.compile(r"[0-9a-fA-F]{64}")}
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")


def _unsafe_reason(name: str) -> str | None:
    """Why a stored path could escape the destination, or None when it cannot.

    Backslashes count as separators so that a Windows-made ``..\\evil`` is caught too.
    """
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component"
    return None


@dataclass(frozen=True)
class Archive:
    """One file a dataset's authors publish, and where its content goes under the dataset root.

    ``md5`` / ``sha256`` are the published digests (``None`` where none is published; the file is
    then used unverified and its computed sha256 is recorded in the manifest). ``extract=False``
    is for plain files such as ``.mat`` label files, which are copied to ``root/subdir/filename``.
    ``strip_components`` drops that many leading path parts of every member, like
    ``tar --strip-components``, for archives that wrap the layout in a top-level folder.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    extract: bool = True
    subdir: str = ""
    strip_components: int = 0

    def __post_init__(self) -> None:
        if not self.filename or _unsafe_reason(self.filename) or "/" in self.filename:
            msg = f"Archive filename must be a plain file name, got {self.filename!r}"
            raise ValueError(msg)
        if _unsafe_reason(self.subdir):
            msg = f"Archive subdir must be a relative path inside root, got {self.subdir!r}"
            raise ValueError(msg)
        for algo, pattern in _HEX.items():
            value = getattr(self, algo)
            if value is not None and not pattern.fullmatch(value):
                msg = f"Archive {algo} must be a hex digest or None, got {value!r}"
                raise ValueError(msg)
        if self.strip_components < 0 or (not self.extract and self.strip_components):
            msg = (
                f"Archive strip_components must be >= 0, and 0 for a plain file (extract=False); "
                f"got {self.strip_components} with extract={self.extract}"
            )
            raise ValueError(msg)

    @property
    def has_checksum(self) -> bool:
        """Whether a published digest can prove a copy of this file is the authors' file."""
        return self.md5 is not None or self.sha256 is not None


# Checksums and where they were checked (no dataset host publishes sha256; none is invented):
# - aircraft md5: the "MD5 Sum" link on the FGVC-Aircraft page, also pinned by Meta-Dataset,
#   google-research/task_adaptation and the R torchvision port.
# - cub md5: pinned by torchvision-style Cub2011 loaders for the Caltech archive (its sha256
#   0c685df5... is pinned by torchvision's prototype datasets, same file).
# - dogs sha256: tensorflow/datasets url_checksums/stanford_dogs.txt (no md5 is published).
# - flowers, pets md5: torchvision.datasets.Flowers102 / OxfordIIITPet.
_VGG = "https://www.robots.ox.ac.uk/~vgg/data"
_DOGS = "http://vision.stanford.edu/aditya86/ImageNetDogs"
DATASET_ARCHIVES: dict[str, list[Archive]] = {
    "aircraft": [
        Archive(
            f"{_VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            "fgvc-aircraft-2013b.tar.gz",
            md5="d4acdd33327262359767eeaa97a4f732",
            strip_components=1,  # fgvc-aircraft-2013b/data/... -> data/...
        ),
    ],
    "cub": [
        Archive(
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            "CUB_200_2011.tgz",
            md5="97eceeb196236b17998738112f37df78",
            # CUB_200_2011/images/... -> images/...; the stray top-level attributes.txt (the
            # attribute names, outside the dataset folder) is dropped, as tar would drop it.
            strip_components=1,
        ),
    ],
    "dogs": [
        Archive(
            f"{_DOGS}/images.tar",
            "images.tar",
            sha256="a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58",
        ),
        Archive(
            f"{_DOGS}/lists.tar",
            "lists.tar",
            sha256="34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c",
            subdir="lists",  # the .mat files sit at the archive's top level
        ),
    ],
    "flowers": [
        Archive(
            f"{_VGG}/flowers/102/102flowers.tgz",
            "102flowers.tgz",
            md5="52808999861908f626f3c1f4e79d11fa",
        ),
        Archive(
            f"{_VGG}/flowers/102/imagelabels.mat",
            "imagelabels.mat",
            md5="e0620be6f572b9609742df49c70aed4d",
            extract=False,
        ),
        Archive(
            f"{_VGG}/flowers/102/setid.mat",
            "setid.mat",
            md5="a5357ecc9cb78c4bef273ce3793fc85c",
            extract=False,
        ),
    ],
    "pets": [
        Archive(
            f"{_VGG}/pets/data/images.tar.gz",
            "images.tar.gz",
            md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
        ),
        Archive(
            f"{_VGG}/pets/data/annotations.tar.gz",
            "annotations.tar.gz",
            md5="95a8c909bbe2e81eed6a22bccdf3f68f",
        ),
    ],
}
"""The authors' files for every dataset that can still be fetched from its official host."""

_MANUAL_ONLY: dict[str, str] = {
    "cars": (
        "Stanford Cars cannot be downloaded automatically: its official host "
        "(ai.stanford.edu/~jkrause/car196) is gone. Get the original files (cars_train.tgz, "
        "cars_test.tgz, car_devkit.tgz, cars_test_annos_withlabels.mat) from a mirror and arrange "
        "them under {root} as: cars_train/, cars_test/, devkit/cars_meta.mat, "
        "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat"
    ),
}
"""Datasets whose official host is gone, with what the user has to do instead."""


def download_dataset(
    name: str, *, root: Path | str, force: bool = False, console: Console | None = None
) -> Path:
    """Download, verify and extract dataset ``name`` into ``root``; return ``root``.

    A second call is a no-op once the manifest says the layout is complete. ``force=True``
    extracts again; archives already in ``root/.downloads`` are reused when a published checksum
    proves them, and downloaded again when nothing can.

    Raises :class:`DownloadError` for network failures, checksum mismatches, unsafe archives and
    datasets that cannot be downloaded (Stanford Cars), and :class:`UnknownDatasetError` for a
    name this module does not know.
    """
    root = Path(root).expanduser()
    archives = _archives_for(name, root)
    console = console or Console(stderr=True)
    try:
        if _already_complete(root, name, archives) and not force:
            console.print(f"{name}: already downloaded to {root} ({MANIFEST_NAME}); nothing to do")
            return root
        return _download_all(name, archives, root=root, force=force, console=console)
    except OSError as err:
        where = err.filename or root
        msg = (
            f"{name}: cannot write {where} ({err.strerror or err}); free disk space or pass a "
            f"writable --root, then re-run (finished archives are kept)"
        )
        raise DownloadError(msg) from err


def _download_all(
    name: str, archives: list[Archive], *, root: Path, force: bool, console: Console
) -> Path:
    """Fetch, verify and install every archive, then write the manifest that marks completion."""
    downloads = root / DOWNLOADS_DIR
    downloads.mkdir(parents=True, exist_ok=True)
    records = []
    with httpx.Client(
        follow_redirects=True, timeout=_TIMEOUT, headers={"Accept-Encoding": "identity"}
    ) as client:
        for archive in archives:
            path = _obtain(archive, downloads, client=client, console=console, force=force)
            digests = verify_checksum(path, archive)
            _install(archive, path, root, console=console)
            records.append(_record(archive, digests, root, console=console))
    _write_json(root / MANIFEST_NAME, {"dataset": name, "archives": records})
    return root


def _archives_for(name: str, root: Path) -> list[Archive]:
    """The dataset's archive list, or the error that says why there is none."""
    if name in _MANUAL_ONLY:
        raise DownloadError(_MANUAL_ONLY[name].format(root=root))
    if name not in DATASET_ARCHIVES:
        known = ", ".join(sorted([*DATASET_ARCHIVES, *_MANUAL_ONLY]))
        msg = f"unknown dataset {name!r}; choose one of: {known}"
        raise UnknownDatasetError(msg)
    return DATASET_ARCHIVES[name]


def _already_complete(root: Path, name: str, archives: list[Archive]) -> bool:
    """Whether the manifest says this exact archive list was fully installed into ``root``.

    A manifest of another dataset is an error: two official layouts in one folder would mix
    (dogs' ``Images/`` next to pets' ``images/``) and each would overwrite the other's manifest.
    """
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if manifest.get("dataset") != name:
        msg = (
            f"{root} already holds the {manifest.get('dataset')!r} dataset ({MANIFEST_NAME}); "
            f"give {name!r} a root of its own"
        )
        raise DownloadError(msg)
    done = [record.get("filename") for record in manifest.get("archives", [])]
    return done == [archive.filename for archive in archives]


def _obtain(
    archive: Archive, downloads: Path, *, client: httpx.Client, console: Console, force: bool
) -> Path:
    """Return the archive's path in ``downloads``, downloading it unless a usable copy is there.

    A copy already there (an earlier run, or the user's own download) is used as is; the
    checksum that follows decides whether it is good. Under ``force`` a copy that no checksum
    can prove is fetched again.
    """
    path = downloads / archive.filename
    if path.is_file() and not (force and not archive.has_checksum):
        console.print(f"{archive.filename}: using the copy in {downloads}")
        return path
    _download(archive.url, path, client=client, console=console)
    return path


def _download(url: str, path: Path, *, client: httpx.Client, console: Console) -> None:
    """Download ``url`` to ``path`` through ``path.part``, turning transport failures into advice.

    The ``.part`` file is left in place on failure so that the next run resumes it.
    """
    part = path.with_name(path.name + ".part")
    try:
        _stream_to_part(url, part, client=client, console=console, target=path)
    except httpx.HTTPError as err:
        msg = (
            f"could not download {url} ({type(err).__name__}: {err}); check your network or "
            f"download it by hand to {path}"
        )
        raise DownloadError(msg) from err
    os.replace(part, path)


def _stream_to_part(
    url: str, part: Path, *, client: httpx.Client, console: Console, target: Path
) -> None:
    """Stream ``url`` into ``part``, continuing an existing ``part`` with a Range request.

    A server that ignores Range answers 200 with the whole file, which is written from the
    start; one that refuses the range (416) or answers a different one is asked again without
    it. Raw bytes are written (``iter_raw``): a server that labels a ``.tgz`` as gzip-encoded
    must not have it decompressed, or the checksum would fail.
    """
    while True:  # at most twice: a refused range drops the partial file and asks for all of it
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with client.stream("GET", url, headers=headers) as response:
            if offset and (response.status_code == 416 or _bad_range(response, offset)):
                part.unlink()
                continue
            if response.is_error:
                msg = (
                    f"could not download {url}: HTTP {response.status_code} "
                    f"{response.reason_phrase}; check your network or download it by hand to "
                    f"{target}"
                )
                raise DownloadError(msg)
            resumed = response.status_code == 206
            if offset and not resumed:
                console.print(f"{target.name}: the server cannot resume; downloading it again")
            _write_body(response, part, start=offset if resumed else 0, console=console)
            return


def _write_body(response: httpx.Response, part: Path, *, start: int, console: Console) -> None:
    """Append the body to ``part`` from byte ``start`` (0 truncates), with a progress bar."""
    length = response.headers.get("Content-Length", "")
    total = start + int(length) if length.isdigit() else None
    name = part.name.removesuffix(".part")
    with part.open("ab" if start else "wb") as out, _progress(console) as progress:
        task = progress.add_task(name, total=total, completed=start)
        for chunk in response.iter_raw():  # as it arrives: an interruption loses nothing
            out.write(chunk)
            progress.advance(task, len(chunk))


def _bad_range(response: httpx.Response, offset: int) -> bool:
    """Whether a 206 answer does not start where the partial file ends (appending would corrupt)."""
    if response.status_code != 206:
        return False
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return match is None or int(match.group(1)) != offset


def _progress(console: Console) -> Progress:
    """A byte-counting progress bar on ``console``."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def verify_checksum(path: Path, archive: Archive) -> dict[str, str]:
    """Check ``path`` against the archive's published digests; return its md5 and sha256.

    On a mismatch the file is deleted (it is useless and would be found again by the next run)
    and :class:`DownloadError` names the file, both digests and what to do.
    """
    digests = _file_digests(path)
    for algo in ("sha256", "md5"):
        expected = getattr(archive, algo)
        if expected is not None and digests[algo] != expected.lower():
            path.unlink(missing_ok=True)
            msg = (
                f"checksum mismatch for {path}: expected {algo} {expected.lower()}, got "
                f"{digests[algo]}; the file was deleted, re-run to download again"
            )
            raise DownloadError(msg)
    return digests


def _file_digests(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file in one pass (archives are gigabytes; read them once)."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def _install(archive: Archive, path: Path, root: Path, *, console: Console) -> None:
    """Put a verified archive's content where the official layout wants it."""
    dest = root / archive.subdir if archive.subdir else root
    if archive.extract:
        console.print(f"{archive.filename}: extracting into {dest}")
        safe_extract(path, dest, strip_components=archive.strip_components)
        return
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{archive.filename}.tmp"  # copy, then rename: never a half-written file
    shutil.copyfile(path, tmp)
    os.replace(tmp, dest / archive.filename)


def _record(archive: Archive, digests: dict[str, str], root: Path, *, console: Console) -> dict:
    """The manifest entry for one archive; warns when nothing could verify it."""
    verified_by = "sha256" if archive.sha256 else "md5" if archive.md5 else None
    if verified_by is None:
        console.print(
            f"[yellow]{archive.filename}: no published checksum, so it was NOT verified; its "
            f"sha256 {digests['sha256']} is recorded in {root / MANIFEST_NAME}[/yellow]"
        )
    return {
        "filename": archive.filename,
        "url": archive.url,
        "sha256": digests["sha256"],
        "md5": digests["md5"],
        "verified_by": verified_by,
    }


def _write_json(path: Path, data: dict) -> None:
    """Write JSON atomically, so a crash never leaves a manifest that claims completion."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- safe extraction -------------------------------------------------------------------------

EntryKind = Literal["dir", "file", "symlink", "hardlink"]


@dataclass(frozen=True)
class _Entry:
    """One archive member, already checked, in a form shared by tar and zip."""

    name: str
    """The member's name as stored, for messages."""
    path: PurePosixPath
    """Where it goes, relative to the destination (after ``strip_components``)."""
    kind: EntryKind
    link: str = ""
    """Symlink target as stored, or a hard link's source relative to the destination."""
    open: Callable[[], IO[bytes]] | None = None


def safe_extract(archive_path: Path | str, dest: Path | str, *, strip_components: int = 0) -> Path:
    """Extract a tar (plain, gz, bz2, xz) or zip archive into ``dest``; return ``dest``.

    Refuses, with :class:`DownloadError` naming the member, any member with an absolute path or a
    ``..`` part, a symlink or hard link whose target leaves ``dest``, and device files, fifos or
    other special files; nothing is ever written outside ``dest``. Members with no more than
    ``strip_components`` path parts are skipped, as ``tar --strip-components`` does.

    The archive is extracted into a hidden temporary folder inside ``dest`` (same file system,
    and never outside ``dest``), and only a complete extraction is moved into place, so a
    half-extracted archive is never mistaken for a complete one. Existing files with the same
    names are replaced; folders are merged.
    """
    if strip_components < 0:
        msg = f"strip_components must be >= 0, got {strip_components}"
        raise ValueError(msg)
    archive_path, dest = Path(archive_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(f"{_TMP_PREFIX}*"):  # left by a run that was killed mid-extraction
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=dest))
    try:
        _extract_into(archive_path, tmp, strip_components)
        _merge_into(tmp, dest)
    except OSError as err:
        msg = f"could not extract {archive_path} into {dest}: {err}"
        raise DownloadError(msg) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _extract_into(archive_path: Path, tmp: Path, strip: int) -> None:
    """Write every checked member of the archive into the empty folder ``tmp``."""
    try:
        if tarfile.is_tarfile(archive_path):
            with tarfile.open(archive_path, "r:*") as tar:
                _write_entries(_tar_entries(tar, strip), tmp)
        elif zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as archive:
                _write_entries(_zip_entries(archive, strip), tmp)
        else:
            msg = f"{archive_path} is neither a tar nor a zip archive; delete it and re-run"
            raise DownloadError(msg)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        msg = f"{archive_path} is corrupt or truncated ({err}); delete it and re-run"
        raise DownloadError(msg) from err


def _tar_entries(tar: tarfile.TarFile, strip: int) -> Iterator[_Entry]:
    """Check tar members one by one, in archive order (a .tar.gz is read in a single pass)."""
    for member in tar:
        path = _member_path(member.name, strip)
        if path is None:
            continue
        if member.isdir():
            yield _Entry(member.name, path, "dir")
        elif member.isreg():
            yield _Entry(member.name, path, "file", open=partial(_tar_open, tar, member))
        elif member.issym():
            _check_symlink(member.name, path, member.linkname)
            yield _Entry(member.name, path, "symlink", link=member.linkname)
        elif member.islnk():
            source = _hardlink_source(member.name, member.linkname, strip)
            yield _Entry(member.name, path, "hardlink", link=source)
        else:
            _refuse(member.name, "it is a device file, fifo or other special file")


def _tar_open(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """The content of a regular tar member (``extractfile`` returns None only for other kinds)."""
    return cast(IO[bytes], tar.extractfile(member))


def _zip_entries(archive: zipfile.ZipFile, strip: int) -> Iterator[_Entry]:
    """Check zip members; the Unix mode in ``external_attr`` marks symlinks and special files."""
    for info in archive.infolist():
        path = _member_path(info.filename, strip)
        if path is None:
            continue
        mode = info.external_attr >> 16
        if info.is_dir():
            yield _Entry(info.filename, path, "dir")
        elif stat.S_ISLNK(mode):
            target = archive.read(info).decode("utf-8")
            _check_symlink(info.filename, path, target)
            yield _Entry(info.filename, path, "symlink", link=target)
        elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
            yield _Entry(info.filename, path, "file", open=partial(archive.open, info))
        else:
            _refuse(info.filename, "it is a device file, fifo or other special file")


def _member_path(name: str, strip: int) -> PurePosixPath | None:
    """A member's path under the destination, None when stripping leaves nothing of it."""
    reason = _unsafe_reason(name)
    if reason:
        _refuse(name, f"its path {reason}")
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".")]
    return PurePosixPath(*parts[strip:]) if len(parts) > strip else None


def _check_symlink(name: str, path: PurePosixPath, target: str) -> None:
    """Refuse a symlink whose target, read relative to the link's folder, leaves the destination.

    This is the check by name, which refuses before anything is written; ``_write_entries``
    resolves every link on disk as well, which catches chains of links that each look harmless.
    """
    if not target or target.startswith(("/", "\\")) or _DRIVE.match(target):
        _refuse(name, f"it is a symlink to the absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(str(path.parent), target.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../"):
        _refuse(name, f"it is a symlink to {target!r}, outside the destination")


def _hardlink_source(name: str, linkname: str, strip: int) -> str:
    """A hard link's source under the destination (tar stores it relative to the archive root)."""
    reason = _unsafe_reason(linkname)
    if reason:
        _refuse(name, f"it is a hard link to {linkname!r}, which {reason}")
    source = _member_path(linkname, strip)
    if source is None:
        _refuse(name, f"it is a hard link to {linkname!r}, outside the destination")
    return str(source)


def _refuse(name: str, reason: str) -> NoReturn:
    """Raise the one error every unsafe member gets."""
    msg = f"refusing archive member {name!r}: {reason}; the archive was not extracted"
    raise DownloadError(msg)


def _write_entries(entries: Iterator[_Entry], tmp: Path) -> None:
    """Write checked entries into ``tmp``, re-checking on disk that nothing lands outside it.

    Names alone cannot show where links lead once they chain (``a/m -> .`` makes ``a/m/..`` one
    level higher than it reads), so every write resolves its folder on disk first, and every
    symlink is resolved again once all members exist.
    """
    base = os.path.realpath(tmp)
    links: list[tuple[_Entry, Path]] = []
    for entry in entries:
        target = tmp.joinpath(*entry.path.parts)
        if not _inside(target if entry.kind == "dir" else target.parent, base):
            _refuse(entry.name, "it would be written through a link that leaves the destination")
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_file():  # a later member replaces it, as in tar
            target.unlink()
        _write_entry(entry, target, tmp, base)
        if entry.kind == "symlink":
            links.append((entry, target))
    for entry, link in links:
        if not _inside(link, base):
            _refuse(entry.name, f"it is a symlink to {entry.link!r}, which leads outside it")


def _write_entry(entry: _Entry, target: Path, tmp: Path, base: str) -> None:
    """Create one file, symlink or hard-linked copy at ``target``."""
    if entry.kind == "symlink":
        os.symlink(entry.link, target)
    elif entry.kind == "hardlink":
        source = tmp / entry.link
        if not _inside(source, base):
            _refuse(entry.name, f"it is a hard link to {entry.link!r}, which leads outside it")
        if not source.is_file():
            _refuse(entry.name, f"it is a hard link to {entry.link!r}, not an earlier file")
        shutil.copyfile(source, target)  # a copy: same bytes, no link to reason about later
    elif entry.open is not None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with entry.open() as src, os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)


def _inside(path: Path, base: str) -> bool:
    """Whether ``path``, with every symlink on disk resolved, is ``base`` or below it."""
    resolved = os.path.realpath(path)
    return resolved == base or resolved.startswith(base + os.sep)


def _merge_into(src: Path, dst: Path) -> None:
    """Move ``src``'s children into ``dst``: folders merge, anything else replaces.

    Renames only, so it is quick; an existing symlink in ``dst`` is replaced, never followed.
    """
    for child in src.iterdir():
        target = dst / child.name
        both_dirs = child.is_dir() and not child.is_symlink()
        if both_dirs and target.is_dir() and not target.is_symlink():
            _merge_into(child, target)
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        os.replace(child, target)
