"""Dataset archives on disk and on the wire, for the registry in :mod:`autorec.datasets.movielens`.

Where archives are looked for and cached, digests, streaming a download to a checked file
that appears atomically, and reading zip members with errors that name the archive.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from .._io import atomic_path
from ..exceptions import DataError, DownloadError

DEFAULT_MIRROR = "https://files.grouplens.org/datasets/movielens/"
CHUNK_BYTES = 1 << 20  # download and hashing
TIMEOUT_S = 60
ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError)
#: what reading a zip member can raise besides damage: an encrypted member (RuntimeError)
#: or a compression method Python's zipfile cannot read (NotImplementedError)
ZIP_UNREADABLE = ZIP_DAMAGE + (RuntimeError, NotImplementedError)


# ------------------------------------------------------------------ locations
def cache_dir() -> Path:
    """``$AUTOREC_CACHE``, else ``$XDG_CACHE_HOME/autorec``, else ``~/.cache/autorec``."""
    if os.environ.get("AUTOREC_CACHE"):
        return Path(os.environ["AUTOREC_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "autorec"


def search_dirs(data_dir=None) -> list[Path]:
    """Folders searched for archives: ``data_dir``, ``$AUTOREC_DATA`` (``os.pathsep``
    separated), then :func:`cache_dir`."""
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else []
    env = os.environ.get("AUTOREC_DATA", "")
    return dirs + [Path(p).expanduser() for p in env.split(os.pathsep) if p] + [cache_dir()]


def mirror_url(mirror: str | None = None) -> str:
    """Base URL of the archives: ``mirror``, else ``$AUTOREC_MIRROR``, else GroupLens."""
    base = mirror or os.environ.get("AUTOREC_MIRROR") or DEFAULT_MIRROR
    return base if base.endswith("/") else base + "/"


def file_digest(path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------- download
def fetch(url: str, dest, *, check: Callable[[Path], None] | None = None,
          progress: bool = True) -> Path:
    """Stream ``url`` into a temp file next to ``dest``, call ``check(tmp)``, rename.

    ``dest`` appears only complete and checked: an HTTP or connection error, a transfer
    shorter than its Content-Length (:class:`DownloadError`) or an exception from
    ``check`` leaves nothing behind, not even the temp file.
    """
    dest = Path(dest)
    advice = ("check the network or the mirror ($AUTOREC_MIRROR), or download the file by "
              f"hand and put it at {dest} or in a folder named by $AUTOREC_DATA")
    try:
        with atomic_path(dest) as tmp:
            _stream(url, tmp, dest.name, progress, advice)
            if check is not None:
                check(tmp)
    except OSError as exc:  # the folder cannot be written (errors of the transfer are caught)
        raise DownloadError(f"could not save {url} as {dest} ({exc}); choose a writable "
                            "folder ($AUTOREC_CACHE or dest_dir)") from exc
    return dest


def _stream(url: str, tmp: Path, label: str, progress: bool, advice: str) -> None:
    from tqdm.auto import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}; "
                            f"nothing was saved. {advice}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"downloading {url} failed: {reason}; {advice}") from exc
    with response:
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        received = 0
        try:
            with open(tmp, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True,
                                              unit_divisor=1024, desc=label, leave=False,
                                              disable=None if progress else True) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, short read
            raise DownloadError(f"downloading {url} failed after {received:,} bytes "
                                f"({exc!r}); nothing was saved. {advice}") from exc
    if expected is not None and received != expected:
        raise DownloadError(f"downloading {url} failed: the transfer was truncated "
                            f"({received:,} of {expected:,} bytes); nothing was saved. "
                            f"Try again, or {advice}")


# ------------------------------------------------------------------- archives
def open_archive(path) -> zipfile.ZipFile:
    """Open a zip archive; a DataError saying what to do when it is not one."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path} is not a readable zip archive ({exc}); it is damaged or was "
                        "copied incompletely: delete it and load again to download a fresh "
                        "copy, or put a good copy in a folder named by $AUTOREC_DATA") from exc


def member_info(zf: zipfile.ZipFile, member: str, path) -> zipfile.ZipInfo:
    """The entry ``member``; a DataError listing what the archive holds when it is missing."""
    try:
        return zf.getinfo(member)
    except KeyError:
        names = zf.namelist()
        raise DataError(f"{path} has no {member}; it holds {names[:8]}"
                        f"{' ...' if len(names) > 8 else ''}. Is it the right archive? "
                        "Delete it and download it again") from None


def read_member(zf: zipfile.ZipFile, member: str, path) -> bytes:
    """The bytes of ``member``; a DataError when it is missing, damaged, encrypted or
    compressed with a method zipfile cannot read."""
    info = member_info(zf, member, path)
    try:
        return zf.read(info)
    except ZIP_UNREADABLE as exc:
        raise member_error(exc, info, path) from exc


def member_error(exc: Exception, info: zipfile.ZipInfo, path) -> DataError:
    """The DataError for an exception raised while reading ``info`` from the archive ``path``."""
    member = info.filename
    if info.flag_bits & 0x1 or (isinstance(exc, RuntimeError) and "encrypted" in str(exc)):
        return DataError(f"{member} in {path} is encrypted (password-protected); autorec reads "
                         "unencrypted archives only: use the published archive, or extract it "
                         "and read the ratings file with RatingMatrix.from_csv")
    if isinstance(exc, NotImplementedError) or info.compress_type not in (zipfile.ZIP_STORED,
                                                                             zipfile.ZIP_DEFLATED,
                                                                             zipfile.ZIP_BZIP2,
                                                                             zipfile.ZIP_LZMA):
        return DataError(f"{member} in {path} uses zip compression method {info.compress_type}, "
                         f"which Python's zipfile cannot read ({exc}); re-create the archive with "
                         "plain deflate compression, or download the published one")
    return DataError(f"{member} in {path} is damaged ({exc}); delete {path} and download it again")
