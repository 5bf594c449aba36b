"""The one explicit registry of models: name -> class (no naming-convention magic)."""
from __future__ import annotations

from .baselines import ALS, BPR, EASE, LMF, Popularity
from .models.mf import BiasedMF
from .models.autorec import IAutoRec, UAutoRec
from .models.cdae import CDAE
from .models.mult import MultDAE, MultVAE

__all__ = ["MODELS", "get_model"]

MODELS = {
    "i-autorec": IAutoRec,
    "u-autorec": UAutoRec,
    "cdae": CDAE,
    "mult-dae": MultDAE,
    "mult-vae": MultVAE,
    "biased-mf": BiasedMF,
    "ease": EASE,
    "als": ALS,
    "bpr": BPR,
    "lmf": LMF,
    "pop": Popularity,
}


def get_model(name: str, **params):
    """Instantiate a registered model by name; unknown names list the valid ones."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None
    return cls(**params)
