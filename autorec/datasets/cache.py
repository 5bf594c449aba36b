"""The parsed-ratings cache: one uncompressed ``.npz`` per archive, never a pickle."""
from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._io import atomic_path

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
