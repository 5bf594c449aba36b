"""The parsed-ratings cache: one uncompressed ``.npz`` per archive, never a pickle.

A cache file holds the ratings as canonical CSR arrays plus the raw ids, the sha256 of the
ratings file they were parsed from, and a digest of all of it (:mod:`autorec._digest`).
Reading checks the digest and every array (dtypes, shapes, index bounds, monotone
``indptr``, sorted unique columns per row, unique ids) before scipy sees them: a cache
whose ``indptr`` or ``indices`` were damaged would otherwise corrupt memory in
``toarray()``. A file that fails is ignored with a warning naming it and the problem, and
the archive is parsed again (which rewrites it).
"""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._digest import digest
from .._io import atomic_path
from .._validate import Invalid, array, csr_arrays

PARSED_KEYS = ("indptr", "indices", "data", "timestamps", "users", "items", "ratings_sha256")
_DIGEST = "digest"


def read_parsed_cache(path) -> dict | None:
    """The checked arrays of a parsed-ratings cache file, or None when absent or unusable.

    Loaded with ``allow_pickle=False``; an unreadable, damaged or inconsistent file is
    ignored with a warning (the next parse rewrites it).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in (*PARSED_KEYS, _DIGEST) if key not in npz.files]
            if missing:
                raise Invalid(f"it misses {', '.join(missing)}")
            arrays = {key: npz[key] for key in PARSED_KEYS}
            stored = str(npz[_DIGEST])
        if digest(arrays) != stored:
            raise Invalid("its contents do not match its digest (damaged or changed)")
        _check(arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring the unreadable parsed cache {path} ({exc}); parsing the "
                      "archive again", stacklevel=3)
        return None
    arrays["ratings_sha256"] = str(arrays["ratings_sha256"])
    return arrays


def write_parsed_cache(path, arrays: dict) -> None:
    """Write the arrays and their digest atomically as an uncompressed ``.npz``; warn if
    it cannot."""
    arrays = {key: np.asarray(arrays[key]) for key in PARSED_KEYS}
    try:
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays, **{_DIGEST: np.asarray(digest(arrays))})
    except OSError as exc:
        warnings.warn(f"could not write the parsed cache {path} ({exc}); loading works but "
                      "parses the archive again next time", stacklevel=3)


def _check(arrays: dict) -> None:
    """Every array is what ``load_movielens`` builds the RatingMatrix from (Invalid if not)."""
    users = array(arrays["users"], "users", kinds="iu", shape=(None,))
    items = array(arrays["items"], "items", kinds="iu", shape=(None,))
    for name, ids in (("users", users), ("items", items)):
        if len(np.unique(ids)) != len(ids):
            raise Invalid(f"its {name} hold repeated ids")
    array(arrays["data"], "data", dtype=np.float32)
    csr_arrays(arrays["indptr"], arrays["indices"], arrays["data"], (len(users), len(items)),
               "the ratings")
    array(arrays["timestamps"], "timestamps", dtype=np.int64, shape=(len(arrays["data"]),))
    array(arrays["ratings_sha256"], "ratings_sha256", kinds="U", shape=())
