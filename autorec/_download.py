"""Dataset archives on disk and on the wire, for the registry in :mod:`autorec.movielens`.

Where archives are looked for and cached, digests, streaming a download to a checked file
that appears atomically, reading zip members, the fast ratings parser with its line-exact
diagnostics, the movies parser, and the parsed-ratings cache (``.npz``, never a pickle).
Layouts and checksums come from :class:`autorec.movielens.MovieLensSpec`.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ._io import atomic_path
from .data import DataError

DEFAULT_MIRROR = "https://files.grouplens.org/datasets/movielens/"
CHUNK_BYTES = 1 << 20  # download and hashing
BLOCK_BYTES = 16 << 20  # diagnostic scan of a malformed ratings file
TIMEOUT_S = 60
ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError)


class DownloadError(DataError):
    """A download failed (HTTP error, connection problem, truncated transfer)."""


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
                                              disable=not progress) as bar:
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
    """The bytes of ``member``; a DataError when it is missing or damaged."""
    info = member_info(zf, member, path)
    try:
        return zf.read(info)
    except ZIP_DAMAGE as exc:
        raise DataError(f"{member} in {path} is damaged ({exc}); delete {path} and download "
                        "it again") from exc


# -------------------------------------------------------------------- ratings
_DTYPES = (np.int64, np.int64, np.float32, np.int64)  # user, item, rating, timestamp


class _SeparatorCounter(io.RawIOBase):
    """Binary stream wrapper that counts one separator byte as the parser reads through."""

    def __init__(self, stream, byte: bytes):
        self._stream, self._byte, self.count = stream, byte, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += data.count(self._byte)
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def _positions(layout) -> list[int]:
    """Positions of user, item, rating, timestamp among the fields split on ``sep[0]``."""
    return [0, 2, 4, 6] if layout.sep == "::" else [0, 1, 2, 3]


def _on_scale(rating: np.ndarray, scale) -> np.ndarray:
    lo, hi, step = scale
    steps = (rating - lo) / step
    return (rating >= lo) & (rating <= hi) & (steps == np.round(steps))


def read_ratings(open_source: Callable, layout, where: str):
    """Parse a ratings file into user, item, rating and timestamp arrays.

    ``open_source()`` returns a fresh binary stream of the file; ``layout`` (a
    MovieLensSpec) gives ``sep``, ``header``, ``columns`` and ``rating_scale``; ``where``
    names the file in errors. pandas' C parser reads the file with a one-character
    separator (``"::"`` as ``":"``, keeping the even fields: rating lines hold no other
    colon) while a wrapper counts the separators. A parse error, a wrong separator count or
    a value off the scale triggers a second pass that names the first bad line.
    """
    names, fields = list(layout.columns), _positions(layout)
    keys = names if layout.header else fields
    counter = _SeparatorCounter(open_source(), layout.sep[:1].encode())
    try:
        with counter:
            frame = pd.read_csv(counter, sep=layout.sep[0], header=0 if layout.header else None,
                                usecols=keys, dtype=dict(zip(keys, _DTYPES)), engine="c",
                                na_filter=False)
    except ValueError as exc:  # ParserError, EmptyDataError, bad literal, header mismatch
        raise _malformed(open_source, layout, where, exc) from exc
    user, item, rating, timestamp = (frame[key].to_numpy() for key in keys)
    ok = (len(frame) > 0
          and counter.count == 3 * len(layout.sep) * (len(frame) + layout.header)
          and (user >= 0).all() and (item >= 0).all() and (timestamp >= 0).all()
          and _on_scale(rating, layout.rating_scale).all())
    if not ok:
        raise _malformed(open_source, layout, where, None)
    return user, item, rating, timestamp


def _malformed(open_source, layout, where: str, exc) -> DataError:
    problem = _first_bad_line(open_source, layout) or (
        f"could not parse it ({exc})" if exc else "its separators or values are unexpected")
    header = f" after the header {layout.sep.join(layout.columns)!r}" if layout.header else ""
    return DataError(f"{where}: {problem}. Expected lines of {', '.join(layout.columns)} "
                     f"separated by {layout.sep!r}{header}. The file is damaged or not in "
                     "the expected layout: delete the archive and download it again")


def _first_bad_line(open_source, layout) -> str | None:
    """Scan the file block by block (vectorised within a block) for its first bad line."""
    done, rest = 0, b""  # lines before the current block; incomplete last line
    with open_source() as stream:
        while True:
            chunk = stream.read(BLOCK_BYTES)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            block, rest = data[:cut], data[cut:]
            if block:
                problem = _check_block(block, layout, done)
                if problem:
                    return problem
                done += block.count(b"\n") + (not block.endswith(b"\n"))
            if not chunk:
                return None if done > layout.header else "the file holds no ratings"


def _check_block(block: bytes, layout, done: int) -> str | None:
    """First bad line among the whole lines of ``block`` (``done`` lines precede it)."""
    buf = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    if not block.endswith(b"\n"):
        ends = np.append(ends, len(buf))
    starts = np.concatenate(([0], ends[:-1] + 1))

    def text(i: int) -> str:
        return block[starts[i]:ends[i]].decode("latin-1").rstrip("\r")

    seps = np.concatenate(([0], np.cumsum(buf == ord(layout.sep[0]), dtype=np.int32)))
    length = ends - starts
    blank = (length == 0) | ((length == 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13))
    bad = (seps[ends] - seps[starts] != 3 * len(layout.sep)) & ~blank
    has_header = bool(layout.header and done == 0)
    if has_header:
        if text(0) != layout.sep.join(layout.columns):
            return f"line 1: the header is {text(0)!r}"
        bad[0] = False
    first = int(np.argmax(bad)) if bad.any() else len(ends)
    problem = _check_values(block[: starts[first]] if first < len(ends) else block, layout,
                            skip_first=has_header)
    if problem is not None:
        return f"line {done + problem[0] + 1}: {problem[1]} in {text(problem[0])!r}"
    if first < len(ends):
        return (f"line {done + first + 1}: not 4 fields separated by {layout.sep!r}: "
                f"{text(first)!r}")
    return None


def _check_values(data: bytes, layout, skip_first: bool) -> tuple[int, str] | None:
    """(line index, what is wrong) of the first bad value in ``data``, or None."""
    if not data:
        return None
    positions = _positions(layout)
    frame = pd.read_csv(io.BytesIO(data), sep=layout.sep[0], header=None, engine="c",
                        names=range(positions[-1] + 1), dtype=str, na_filter=False,
                        skip_blank_lines=False, index_col=False, quoting=3)  # QUOTE_NONE
    cells = frame.to_numpy(dtype=object)
    ignore = (cells == "").all(axis=1)
    ignore[0] |= skip_first
    checks = [(positions[k], f"{layout.columns[k]} {{!r}} is not a whole number",
               ~frame[positions[k]].str.fullmatch(r"\d+").to_numpy(bool)) for k in (0, 1, 3)]
    rating = pd.to_numeric(frame[positions[2]], errors="coerce").to_numpy()
    lo, hi, step = layout.rating_scale
    checks.append((positions[2], f"rating {{!r}} is not on the {lo:g}-{hi:g} scale in steps "
                   f"of {step:g}", ~_on_scale(rating, layout.rating_scale)))
    for j in sorted(set(range(cells.shape[1])) - set(positions)):  # between the ':' of '::'
        checks.append((j, "{!r} between two fields", cells[:, j] != ""))
    found = [(int(np.flatnonzero(wrong & ~ignore)[0]), column, message)
             for column, message, wrong in checks if (wrong & ~ignore).any()]
    if not found:
        return None
    row, column, message = min(found, key=lambda f: f[0])
    return row, message.format(cells[row, column])


# --------------------------------------------------------------------- movies
_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
                  "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
                  "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")  # u.genre
_TITLE_YEAR = r"\((\d{4})(?:[-\u2013]\d{4})?\)\s*$"  # "Heat (1995)", "Show (1975-1979)"


def read_items(raw: bytes, spec, where: str) -> pd.DataFrame:
    """``title``, ``genres`` (``|``-joined) and ``year`` of the movies, by item id.

    Text is UTF-8 when it decodes as such, else ``spec.encoding``. ``year`` is the
    title's trailing ``(YYYY)`` (ml-100k: else the release date's), missing otherwise.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode(spec.encoding)
    try:
        if spec.items_format == "u.item":  # id|title|release date|video date|url|19 flags
            table = pd.read_csv(io.StringIO(text), sep="|", header=None, dtype=str,
                                keep_default_na=False, quoting=3)
            ids, titles, released = table[0], table[1], table[2]
            flags = table.iloc[:, 5:5 + len(_ML100K_GENRES)].to_numpy() == "1"
            genres = pd.Series("", index=table.index)
            for j, genre in enumerate(_ML100K_GENRES):  # loops over 19 genres, not items
                genres = genres.where(~flags[:, j], genres + "|" + genre)
            genres = genres.str.lstrip("|")
        elif spec.items_format == "dat":  # MovieID::Title::Genres
            lines = pd.Series(text.splitlines())
            table = lines[lines != ""].str.split("::", n=2, expand=True, regex=False)
            ids, titles, genres = table[0], table[1], table[2]
        else:  # csv: movieId,title,genres
            table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            ids, titles, genres = table["movieId"], table["title"], table["genres"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"{where}: could not parse the movies ({exc}); delete the archive "
                        "and download it again") from exc
    item_id = pd.to_numeric(ids, errors="coerce")
    if item_id.isna().any():
        bad = ids[item_id.isna()].iloc[0]
        raise DataError(f"{where}: movie id {bad!r} is not a number; delete the archive and "
                        "download it again")
    year = pd.to_numeric(titles.str.extract(_TITLE_YEAR, expand=False), errors="coerce")
    if spec.items_format == "u.item":
        year = year.fillna(pd.to_numeric(released.str[-4:], errors="coerce"))
    frame = pd.DataFrame({"title": titles.to_numpy(), "genres": genres.fillna("").to_numpy(),
                          "year": year.astype("Int64").array},
                         index=pd.Index(item_id.to_numpy(np.int64), name="item"))
    return frame[~frame.index.duplicated()]


# --------------------------------------------------------------- parsed cache
PARSED_KEYS = ("indptr", "indices", "data", "timestamps", "users", "items", "ratings_sha256")


def read_parsed_cache(path) -> dict | None:
    """The arrays of a parsed-ratings cache file, or None when absent or unreadable.

    Loaded with ``allow_pickle=False``; an unreadable or inconsistent file is ignored with
    a warning (the next parse rewrites it).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in PARSED_KEYS}
        nnz = len(arrays["data"])
        if not (arrays["indptr"].shape == (len(arrays["users"]) + 1,)
                and int(arrays["indptr"][-1]) == nnz
                and arrays["indices"].shape == arrays["timestamps"].shape == (nnz,)):
            raise ValueError("its arrays do not agree")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring the unreadable parsed cache {path} ({exc}); parsing the "
                      "archive again", stacklevel=3)
        return None
    arrays["ratings_sha256"] = str(arrays["ratings_sha256"])
    return arrays


def write_parsed_cache(path, arrays: dict) -> None:
    """Write the arrays atomically as an uncompressed ``.npz``; warn if it cannot."""
    try:
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{key: np.asarray(arrays[key]) for key in PARSED_KEYS})
    except OSError as exc:
        warnings.warn(f"could not write the parsed cache {path} ({exc}); loading works but "
                      "parses the archive again next time", stacklevel=3)
