"""Where ratings come from: the MovieLens registry, download and cache, synthetic data.

>>> from autorec import datasets
>>> R = datasets.load_movielens("ml-100k")            # doctest: +SKIP
>>> S = datasets.synthetic_ratings(seed=0)            # no file, no network
"""
from __future__ import annotations

from .movielens import CITATION, DATASETS, MovieLensSpec, dataset_path, download, info, load_movielens
from .synthetic import synthetic_ratings

__all__ = [
    "CITATION", "DATASETS", "MovieLensSpec", "dataset_path", "download", "info",
    "load_movielens", "synthetic_ratings",
]
