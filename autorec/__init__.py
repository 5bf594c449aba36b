"""autorec: AutoRec and autoencoder collaborative filtering, with MovieLens benchmarks.

>>> import autorec
>>> R = autorec.load_movielens("ml-100k")
>>> train, test = autorec.split.holdout(R, test_size=0.1, seed=0)
>>> model = autorec.IAutoRec(seed=0).fit(train)
>>> autorec.metrics.rmse(model, test)
"""
__version__ = "0.1.0"

from . import metrics, protocols, split
from .base import BaseRecommender, load
from .baselines import ALS, BPR, EASE, LMF, Popularity
from .models.mf import BiasedMF
from .data import DataError, RatingMatrix
from .export import export_topk
from .metrics import evaluate
from .models.autorec import IAutoRec, UAutoRec
from .models.cdae import CDAE
from .models.mult import MultDAE, MultVAE
from .movielens import load_movielens
from .registry import MODELS, get_model

__all__ = [
    "ALS", "BPR", "CDAE", "EASE", "MODELS", "BaseRecommender", "BiasedMF", "DataError",
    "IAutoRec", "LMF", "MultDAE", "MultVAE", "Popularity", "RatingMatrix", "UAutoRec",
    "evaluate", "export_topk", "get_model", "load", "load_movielens", "metrics", "protocols", "split",
]
