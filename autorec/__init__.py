"""autorec: AutoRec and autoencoder collaborative filtering, with MovieLens benchmarks.

>>> import autorec
>>> R = autorec.load_movielens("ml-100k")                          # doctest: +SKIP
>>> train, test = autorec.split.holdout(R, test_size=0.1, seed=0)  # doctest: +SKIP
>>> model = autorec.IAutoRec(seed=0).fit(train)                    # doctest: +SKIP
>>> autorec.metrics.rmse(model, test)                              # doctest: +SKIP

Names load on first use (PEP 562): ``import autorec`` does not import torch; the first
model class, ``MODELS`` or ``load`` does.
"""
from __future__ import annotations

import importlib

from ._version import __version__

#: public name -> module that defines it (relative to this package)
_NAMES = {
    "RatingMatrix": "data", "DataError": "exceptions",
    "evaluate": "metrics", "export_topk": "export", "load_movielens": "datasets",
    "MODELS": "models", "get_model": "models", "load": "models",
    "BaseRecommender": "models.base",
    "IAutoRec": "models", "UAutoRec": "models", "CDAE": "models", "MultDAE": "models",
    "MultVAE": "models", "BiasedMF": "models", "EASE": "models", "ALS": "models", "BPR": "models",
    "LMF": "models", "Popularity": "models",
    "tune": "tuning",
}
_MODULES = ("datasets", "exceptions", "metrics", "models", "protocols", "split", "tuning")

__all__ = sorted([*_NAMES, *_MODULES]) + ["__version__"]


def __getattr__(name: str):
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return __all__
