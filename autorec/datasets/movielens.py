"""MovieLens datasets: registry, download, checksums, fast parsing and a parsed cache.

Archives are read straight from their zip files, found in ``data_dir``, then the folders in
``$AUTOREC_DATA``, then the user cache (``$AUTOREC_CACHE``, else ``$XDG_CACHE_HOME/autorec``
or ``~/.cache/autorec``), else downloaded from GroupLens (base URL: ``$AUTOREC_MIRROR``).
Checks verify content, not packaging: an archive passes when its md5 is GroupLens' or when
its ratings file has the known sha256 (so a re-zip of the same files passes). Parsed
ratings are kept in ``<cache>/parsed/`` as ``.npz`` keyed by the archive's md5.

The data come with GroupLens' terms (research use; ml-100k, ml-1m and ml-10m may not be
redistributed); see ``datasets/``. Cite :data:`CITATION` when you use them.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import clean_stale_temps
from ..data import RatingMatrix
from ..exceptions import ChecksumError, DataError, DownloadError
from .cache import read_parsed_cache, write_parsed_cache
from .download import (
    DEFAULT_MIRROR, ZIP_UNREADABLE, cache_dir, fetch, file_digest, member_error, member_info,
    mirror_url, open_archive, read_member, search_dirs,
)
from .parser import read_items, read_ratings

__all__ = [
    "CITATION", "DATASETS", "ChecksumError", "DownloadError", "MovieLensSpec", "dataset_path",
    "download", "info", "load_movielens",
]

CACHE_FORMAT = 2  # bump when the parsed-cache layout or the parser's output changes (2: a digest)
CITATION = ("F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and "
            "Context. ACM TiiS 5, 4, Article 19. https://doi.org/10.1145/2827872")


@dataclass(frozen=True)
class MovieLensSpec:
    """How to find, check and parse one MovieLens release.

    Attributes
    ----------
    name : str
        Registry name; the archive is ``<name>.zip`` (:attr:`archive`, :attr:`url`).
    ratings_file, items_file : str
        Paths of the ratings and of the movies inside the archive.
    sep, header, columns : str, bool, tuple of str
        Ratings layout: field separator, whether a header line ``sep.join(columns)``
        comes first, and the columns (user, item, rating, timestamp) in file order.
    items_format, encoding : str
        Movies layout (``"u.item"``, ``"dat"`` or ``"csv"``) and the encoding of its
        text when it is not valid UTF-8.
    rating_scale : (float, float, float)
        Lowest rating, highest rating, step.
    n_ratings, n_users, n_items : int
        Published counts (items: movies with at least one rating).
    md5, ratings_sha256 : str, str or None
        The archive's md5 as GroupLens publishes it; the ratings file's sha256, which also
        accepts re-zipped copies (None when unknown).
    protocols, description : tuple of str, str
        the benchmarks' protocols on it, by the names ``--protocol`` accepts (keys of
        :data:`autorec.protocols.PROTOCOLS`; ``datasets/README.md``); one line.
    """

    name: str
    ratings_file: str
    sep: str
    header: bool
    columns: tuple[str, str, str, str]
    items_file: str
    items_format: str
    encoding: str
    rating_scale: tuple[float, float, float]
    n_ratings: int
    n_users: int
    n_items: int
    md5: str
    ratings_sha256: str | None
    protocols: tuple[str, ...]
    description: str

    @property
    def archive(self) -> str:
        """File name of the archive."""
        return f"{self.name}.zip"

    @property
    def url(self) -> str:
        """GroupLens download URL of the archive."""
        return DEFAULT_MIRROR + self.archive


_DAT = ("UserID", "MovieID", "Rating", "Timestamp")  # ml-1m / ml-10m README
_CSV = ("userId", "movieId", "rating", "timestamp")
_STARS, _HALF_STARS = (1.0, 5.0, 1.0), (0.5, 5.0, 0.5)

DATASETS: dict[str, MovieLensSpec] = {spec.name: spec for spec in (
    MovieLensSpec(
        name="ml-100k", ratings_file="ml-100k/u.data", sep="\t", header=False,
        columns=("user id", "item id", "rating", "timestamp"), items_file="ml-100k/u.item",
        items_format="u.item", encoding="latin-1", rating_scale=_STARS,
        n_ratings=100_000, n_users=943, n_items=1_682, md5="0e33842e24a9c977be4e0107933c0723",
        ratings_sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        protocols=("autorec", "per-user"),
        description="MovieLens 100K (1998): 943 users, 1,682 movies, whole stars 1-5."),
    MovieLensSpec(
        name="ml-1m", ratings_file="ml-1m/ratings.dat", sep="::", header=False, columns=_DAT,
        items_file="ml-1m/movies.dat", items_format="dat", encoding="latin-1",
        rating_scale=_STARS, n_ratings=1_000_209, n_users=6_040, n_items=3_706,
        md5="c4d9eecfca2ab87c1945afe126590906",
        ratings_sha256="506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
        protocols=("autorec", "per-user", "strong"),
        description="MovieLens 1M (2003): 6,040 users, 3,706 movies, whole stars 1-5."),
    MovieLensSpec(
        name="ml-10m", ratings_file="ml-10M100K/ratings.dat", sep="::", header=False,
        columns=_DAT, items_file="ml-10M100K/movies.dat", items_format="dat",
        encoding="latin-1", rating_scale=_HALF_STARS, n_ratings=10_000_054, n_users=69_878,
        n_items=10_677, md5="ce571fd55effeba0271552578f2648bd", ratings_sha256=None,
        protocols=("autorec",),
        description="MovieLens 10M (2009): 69,878 users, 10,677 movies, half stars 0.5-5."),
    MovieLensSpec(
        name="ml-20m", ratings_file="ml-20m/ratings.csv", sep=",", header=True, columns=_CSV,
        items_file="ml-20m/movies.csv", items_format="csv", encoding="utf-8",
        rating_scale=_HALF_STARS, n_ratings=20_000_263, n_users=138_493, n_items=26_744,
        md5="cd245b17a1ae2cc31bb14903e1204af3", ratings_sha256=None,
        protocols=("strong",),
        description="MovieLens 20M (2015): 138,493 users, 26,744 movies, half stars 0.5-5."),
    MovieLensSpec(
        name="ml-25m", ratings_file="ml-25m/ratings.csv", sep=",", header=True, columns=_CSV,
        items_file="ml-25m/movies.csv", items_format="csv", encoding="utf-8",
        rating_scale=_HALF_STARS, n_ratings=25_000_095, n_users=162_541, n_items=59_047,
        md5="6b51fb2759a8657d3bfcbfc42b592ada", ratings_sha256=None, protocols=(),
        description="MovieLens 25M (2019): 162,541 users, 59,047 movies, half stars 0.5-5."),
    MovieLensSpec(
        name="ml-latest-small", ratings_file="ml-latest-small/ratings.csv", sep=",",
        header=True, columns=_CSV, items_file="ml-latest-small/movies.csv",
        items_format="csv", encoding="utf-8", rating_scale=_HALF_STARS, n_ratings=100_836,
        n_users=610, n_items=9_724, md5="31a303aabbc519bd33d025e44d6c2570",
        ratings_sha256="aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
        protocols=(),  # a development set: smoke tests only
        description="MovieLens Latest Small (2018-09): a development set, not for results."),
)}


# ------------------------------------------------------------------- public API
def dataset_path(name: str, data_dir=None) -> Path:
    """Where the archive of ``name`` is, or would be once downloaded.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_dir : str or Path, optional
        Folder searched first.

    Returns
    -------
    pathlib.Path
        The first ``<folder>/<name>.zip`` found in ``data_dir``, ``$AUTOREC_DATA``, the
        user cache; else the path in the cache that :func:`download` uses.
    """
    spec = _spec(name)
    for folder in search_dirs(data_dir):
        if (folder / spec.archive).is_file():
            return folder / spec.archive
    return cache_dir() / spec.archive


def download(name: str, dest_dir=None, url: str | None = None, progress: bool = True,
             *, verify: bool = True) -> Path:
    """Download the archive of ``name``, check it, and store it atomically.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    dest_dir : str or Path, optional
        Folder to store it in; the user cache by default.
    url : str, optional
        URL of the archive; by default ``$AUTOREC_MIRROR`` (else GroupLens) + ``<name>.zip``.
    progress : bool
        Show a progress bar.
    verify : bool
        Refuse an archive whose digests do not match (:class:`ChecksumError`).

    Returns
    -------
    pathlib.Path
        The stored archive. A failed, truncated or refused download leaves nothing behind.

    Raises
    ------
    DownloadError, ChecksumError
        A failed or truncated transfer or not a zip; digests that do not match.
    """
    spec = _spec(name)
    url = url or mirror_url() + spec.archive

    def check(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(tmp) as zf:
                archive_md5 = file_digest(tmp)
                if verify and archive_md5 != spec.md5:
                    _check_contents(zf, spec, url, archive_md5)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"downloading {url} gave a file that is not a zip archive "
                                f"({exc}); nothing was saved. Check the URL or the mirror "
                                "($AUTOREC_MIRROR) and try again") from exc

    folder = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    return fetch(url, folder / spec.archive, check=check, progress=progress)


def info(name: str) -> dict:
    """Registry facts about ``name`` and where its archive is.

    Returns
    -------
    dict
        :class:`MovieLensSpec` fields plus ``archive``, ``url`` (with ``$AUTOREC_MIRROR``),
        ``path``, ``available`` and ``citation``.
    """
    spec = _spec(name)
    path = dataset_path(name)
    return {**asdict(spec), "archive": spec.archive, "url": mirror_url() + spec.archive,
            "path": str(path), "available": path.is_file(), "citation": CITATION}


def load_movielens(name: str, data_dir=None, *, download: bool = True, verify: bool = True,
                   cache: bool = True, progress: bool = True) -> RatingMatrix:
    """Load a MovieLens release as a :class:`~autorec.data.RatingMatrix`.

    Parameters
    ----------
    name : str
        ``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-20m``, ``ml-25m`` or ``ml-latest-small``.
    data_dir : str or Path, optional
        Folder searched first for ``<name>.zip`` (then ``$AUTOREC_DATA``, then the cache).
    download : bool
        Download the archive into the user cache when it is not found.
    verify : bool
        Check the archive's md5 or its ratings file's sha256, and the published counts.
        ``False`` skips both (for modified or generated archives).
    cache : bool
        Read and write the parsed-ratings cache (``<cache>/parsed/*.npz``).
    progress : bool
        Show a progress bar while downloading.

    Returns
    -------
    RatingMatrix
        Raw MovieLens user and item ids, ``timestamps`` (seconds since 1970, UTC) and
        ``item_info``: a DataFrame indexed by item id, aligned with ``items``, with
        ``title``, ``genres`` (``|``-separated) and ``year`` (nullable Int64).

    Raises
    ------
    DataError
        Unknown name, archive not found with ``download=False``, unreadable zip, missing
        member, malformed line; subclasses :class:`ChecksumError`, :class:`DownloadError`.
    """
    spec = _spec(name)
    clean_stale_temps(cache_dir() / spec.archive)  # left by a killed download
    path = dataset_path(name, data_dir)
    if not path.is_file():
        if not download:
            places = ", ".join(str(folder) for folder in search_dirs(data_dir))
            raise DataError(f"{spec.archive} not found in {places}; put the archive from "
                            f"{spec.url} in one of those folders (or in a folder named by "
                            "$AUTOREC_DATA), or pass download=True")
        path = _download(name, progress=progress, verify=verify)
    archive_md5 = file_digest(path)
    check_contents = verify and archive_md5 != spec.md5
    if check_contents and spec.ratings_sha256 is None:
        raise _archive_mismatch(spec, path, archive_md5)
    cache_file = cache_dir() / "parsed" / f"{spec.name}-{archive_md5}-v{CACHE_FORMAT}.npz"
    if cache:
        clean_stale_temps(cache_file, ".npz")  # left by a killed cache write
    with open_archive(path) as zf:
        arrays = read_parsed_cache(cache_file) if cache else None
        if arrays is not None and check_contents and (
                arrays["ratings_sha256"] != spec.ratings_sha256):
            arrays = None  # parse again, which raises the ChecksumError with both digests
        if arrays is None:
            arrays = _parse_ratings(zf, spec, path, archive_md5, check_contents)
            if cache:
                write_parsed_cache(cache_file, arrays)
        items = pd.Index(arrays["items"], name="item")
        item_info = read_items(read_member(zf, spec.items_file, path), spec,
                               f"{spec.items_file} in {path}").reindex(items)
    X = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]),
                      shape=(len(arrays["users"]), len(items)))
    R = RatingMatrix(X, pd.Index(arrays["users"], name="user"), items, arrays["timestamps"],
                     item_info)
    if verify and (R.nnz, R.n_users, R.n_items) != (spec.n_ratings, spec.n_users, spec.n_items):
        raise DataError(f"{path}: parsed {R.nnz:,} ratings, {R.n_users:,} users, {R.n_items:,} "
                        f"items, not {spec.n_ratings:,}, {spec.n_users:,}, {spec.n_items:,}; "
                        f"delete {cache_file}, retry, and report a bug if it persists")
    return R


_download = download  # load_movielens' ``download`` argument hides the function


# ------------------------------------------------------------------- internals
def _spec(name: str) -> MovieLensSpec:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown MovieLens dataset {name!r}; choose one of: "
                        f"{', '.join(DATASETS)}") from None


_ADVICE = ("Delete it and download it again (autorec.datasets.download({name!r})), or pass "
           "verify=False to load a file you changed on purpose")


def _check_contents(zf, spec: MovieLensSpec, where, archive_md5: str,
                    raw: bytes | None = None) -> str:
    """sha256 of the ratings file; ChecksumError unless it is the known one."""
    if spec.ratings_sha256 is None:
        raise _archive_mismatch(spec, where, archive_md5)
    raw = read_member(zf, spec.ratings_file, where) if raw is None else raw
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.ratings_sha256:
        raise ChecksumError(
            f"{spec.ratings_file} in {where} has sha256 {digest}, expected "
            f"{spec.ratings_sha256} (and the archive's md5 is {archive_md5}, not GroupLens' "
            f"{spec.md5}): these are not the published {spec.name} ratings. "
            + _ADVICE.format(name=spec.name))
    return digest


def _archive_mismatch(spec: MovieLensSpec, where, archive_md5: str) -> ChecksumError:
    return ChecksumError(
        f"{where} has md5 {archive_md5}, expected {spec.md5} (GroupLens' {spec.archive}); no "
        f"digest of the contents is known for {spec.name}, so the archive must match. "
        + _ADVICE.format(name=spec.name))


def _parse_ratings(zf, spec: MovieLensSpec, path, archive_md5: str,
                   check_contents: bool) -> dict:
    """Parse (and when asked, verify) the ratings file: the arrays of the parsed cache."""
    where = f"{spec.ratings_file} in {path}"
    if spec.ratings_sha256 is not None:  # small releases: hash the bytes, then parse them
        raw = read_member(zf, spec.ratings_file, path)
        sha256 = (_check_contents(zf, spec, path, archive_md5, raw) if check_contents
                  else hashlib.sha256(raw).hexdigest())

        def open_source():
            return io.BytesIO(raw)
    else:  # large ones: stream from the zip
        sha256, info = "", member_info(zf, spec.ratings_file, path)

        def open_source():
            return zf.open(info)
    try:
        user_id, item_id, rating, timestamp = read_ratings(open_source, spec, where)
    except ZIP_UNREADABLE as exc:
        raise member_error(exc, member_info(zf, spec.ratings_file, path), path) from exc
    (user_idx, users), (item_idx, items) = _factorize(user_id), _factorize(item_id)
    R = RatingMatrix.from_arrays(user_idx, item_idx, rating, users=users, items=items, timestamps=timestamp)
    return {"indptr": R.X.indptr, "indices": R.X.indices, "data": R.X.data,
            "timestamps": R.timestamps, "users": R.users.to_numpy(),
            "items": R.items.to_numpy(), "ratings_sha256": sha256}


def _factorize(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of non-negative int ids among their sorted unique values, and those."""
    top = int(ids.max())
    if top > 4 * len(ids) + 1_000_000:  # sparse ids: hashing beats a lookup table
        codes, uniques = pd.factorize(ids, sort=True)
        return codes, np.asarray(uniques)
    present = np.zeros(top + 1, bool)
    present[ids] = True
    return (np.cumsum(present) - 1)[ids], np.flatnonzero(present)
