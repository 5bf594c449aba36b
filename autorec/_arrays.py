"""Small array helpers. ``np.unique`` is ~50x slower than a sort on large int arrays in
numpy 2.4 (hash-based), so duplicate checks go through a sort."""
from __future__ import annotations

import numpy as np


def has_duplicates(values) -> bool:
    """True when some value occurs more than once (sort-based)."""
    ordered = np.sort(np.asarray(values).ravel())
    return bool((ordered[1:] == ordered[:-1]).any())
